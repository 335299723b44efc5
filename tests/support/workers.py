"""Workers in processes of their own, as a user starts them: started, waited for, killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli import CLI

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A worker process logging to ``log``; by default ``worker.py`` on ``task_queue``."""

    def __init__(
        self,
        task_queue: str,
        log: Path,
        env: dict[str, str],
        command: list[str] | None = None,
    ) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    *(command or [sys.executable, str(ROOT / "worker.py")]),
                    "--task-queue",
                    task_queue,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @classmethod
    def at(cls, address: str, task_queue: str, log: Path) -> WorkerProcess:
        """``worker.py`` with this process's environment, on the server at ``address``."""
        return cls(task_queue, log, {**os.environ, "TEMPORAL_ADDRESS": address})

    @classmethod
    def own_machine(cls, root: Path, task_queue: str, env: dict[str, str]) -> WorkerProcess:
        """``agentparallels worker`` as on a machine of its own: its own HOME, caches and
        state under ``root``, the rest (blob store, model key) from ``env``."""
        for name in ("home", "cache", "state", "xdg-cache"):
            (root / name).mkdir(parents=True)
        own = {
            "HOME": str(root / "home"),
            "XDG_CACHE_HOME": str(root / "xdg-cache"),
            "XDG_STATE_HOME": str(root / "state"),
            "AGENTPARALLELS_CACHE_DIR": str(root / "cache"),
            "AGENTPARALLELS_STATE_DIR": str(root / "state"),
        }
        return cls(task_queue, root / "worker.log", {**env, **own}, [CLI, "worker"])

    async def polling(self, timeout_s: float = 300) -> WorkerProcess:
        """Once the worker says it polls; fails at once if it died first."""
        async with asyncio.timeout(timeout_s):
            while "worker polling task queue" not in self.log.read_text():  # noqa: ASYNC110
                assert self.proc.poll() is None, self.log.read_text()
                await asyncio.sleep(0.05)
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be paused), SIGKILL if it has not ended in 30 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
