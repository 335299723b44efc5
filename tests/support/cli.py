"""The installed ``agentparallels`` command, run in a process of its own as a user runs it.

Every test that drives the CLI goes through here, so the environment a command gets (the test
server's address, the test's clone cache and state folder) and how it is bounded in time are
decided once. By default a command inherits the test's environment, which the autouse
``cache_dir`` fixture has already pointed at the test's own cache and state folders.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

__all__ = [
    "CLI",
    "Finished",
    "address_of",
    "cli_env",
    "cli_process",
    "run_cli",
    "run_cli_async",
]

CLI = str(Path(sys.executable).parent / "agentparallels")
"""The console script of this virtual environment (not whichever one is first on PATH)."""
TIMEOUT = 120.0
"""Seconds a command may take unless the test says otherwise; a hung command fails the test."""

Server = Client | WorkflowEnvironment | str


def address_of(server: Server) -> str:
    """The host:port a command should connect to, from the test's client, environment or
    address."""
    if isinstance(server, WorkflowEnvironment):
        server = server.client
    if isinstance(server, Client):
        return server.service_client.config.target_host
    return server


def cli_env(
    address: Server | None = None,
    *,
    cache: Path | None = None,
    state: Path | None = None,
    drop: Iterable[str] = (),
    **extra: str,
) -> dict[str, str]:
    """This process's environment without ``drop``, with the server's address, the cache and
    state folders when given, and ``extra`` variables on top."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if address is not None:
        env["TEMPORAL_ADDRESS"] = address_of(address)
    if cache is not None:
        env["AGENTPARALLELS_CACHE_DIR"] = str(cache)
    if state is not None:
        env["AGENTPARALLELS_STATE_DIR"] = str(state)
    return env | extra


def _env(
    env: dict[str, str] | None, address: Server | None, cache: Path | None, state: Path | None
) -> dict[str, str]:
    if env is None:
        return cli_env(address, cache=cache, state=state)
    assert (address, cache, state) == (None, None, None), "give env, or the parts of one"
    return env


def run_cli(
    *args: str,
    address: Server | None = None,
    cache: Path | None = None,
    state: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``agentparallels ARGS`` to its end; its exit code and output as text. ``env`` is
    the whole environment (see ``cli_env``); without it, the parts given change this one."""
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        env=_env(env, address, cache, state),
        timeout=timeout,
        cwd=cwd,
    )


class Finished(subprocess.CompletedProcess[str]):
    """A command that ran to its end, with the process id it ran as and how long it took
    (for tests that find the command's own worker in a history, or bound a command's time)."""

    def __init__(self, args: list[str], code: int, out: str, err: str, pid: int, took: float):
        super().__init__(args, code, out, err)
        self.pid = pid
        self.took = took
        """Seconds from start to exit."""


async def run_cli_async(
    *args: str,
    address: Server | None = None,
    cache: Path | None = None,
    state: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 - the same bound run_cli takes
) -> Finished:
    """``run_cli`` without blocking the event loop (the test's in-process worker keeps
    running); the process is killed if it outlives ``timeout``."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        env=_env(env, address, cache, state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    took = time.monotonic() - start
    return Finished([CLI, *args], proc.returncode, out.decode(), err.decode(), proc.pid, took)


@contextmanager
def cli_process(
    *args: str,
    env: dict[str, str] | None = None,
    stderr: int = subprocess.PIPE,
) -> Iterator[subprocess.Popen[str]]:
    """``agentparallels ARGS`` left running while the test talks to it (stdout piped, text;
    ``stderr=subprocess.STDOUT`` merges the two); killed at the end if still running, so a
    failing test leaves no process behind."""
    proc = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
