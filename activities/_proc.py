"""Running user commands (codemods, checks, tests) with a time limit, in the sandbox.

Every tool command goes through :func:`run_command`. It runs in a shell in its own process
group, with the worktree as its working directory, confined by a sandbox policy
(:mod:`activities.sandbox`, bubblewrap by default); on timeout the whole group is killed, so
no child process outlives the step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentparallels.activities import sandbox
from agentparallels.activities._spans import traced_command

OUTPUT_TAIL = 4000
"""Characters of a command's output kept for reports (its end, where the error usually is)."""


@dataclass(frozen=True, slots=True)
class Finished:
    exit_code: int
    output: str
    timed_out: bool = False
    limited: bool = False
    """The sandbox's process limit refused it a fork: a result it cannot be trusted with."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.limited


def tool_env() -> dict[str, str]:
    """The worker's environment, with this virtual environment's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


@traced_command
def run_command(
    command: str,
    cwd: Path,
    timeout_s: float,
    policy: sandbox.Policy = sandbox.DEFAULT,
    *,
    extra_env: Mapping[str, str] | None = None,
    denial_is_output: bool = False,
) -> Finished:
    """Run ``command`` in a shell in ``cwd`` under ``policy``, with ``extra_env`` added to the
    tools' environment; stdout and stderr are merged.

    Under the bwrap policy a worker that cannot build the sandbox raises a non-retryable
    ``SandboxUnavailable`` error instead of running the command unconfined, and a command that
    fails on a path the sandbox hides raises ``SandboxDenied`` naming it and the flag that
    exposes it (a failed test or check is never blamed for it). With ``denial_is_output`` only
    a command that could not start (exit 126 or 127) raises it; otherwise the explanation is
    added to its output (an agent unit's checks and tests, where the model's code may name
    anything)."""
    with sandbox.jail(policy, command, cwd, tool_env(), extra_env) as jail:
        done = _run(jail.argv, jail.env, cwd, timeout_s)
        refused = jail.refused_forks()
    if done.ok and not refused:
        return done
    notes = jail.notes(refused)
    if not done.timed_out and not refused:
        denied = jail.denied(command, cwd, done.exit_code, done.output)
        if denied is not None and (not denial_is_output or done.exit_code in (126, 127)):
            raise denied
        notes = f"[{denied.message.splitlines()[0]}]" if denied is not None else notes
    output = f"{done.output.rstrip()}\n{notes}" if notes else done.output
    return Finished(done.exit_code, output, done.timed_out, limited=refused > 0)


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> Finished:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            # Short waits, so that an activity's cancellation (raised in this thread by the
            # Temporal SDK) interrupts the command promptly; the finally clause kills it.
            try:
                out, _ = proc.communicate(timeout=min(0.5, max(deadline - time.monotonic(), 0)))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, _ = proc.communicate()
                    text = out.decode(errors="replace")[-OUTPUT_TAIL:]
                    return Finished(-9, text + f"\n[killed after {timeout_s:g}s]", timed_out=True)
    finally:
        try:  # also reap anything the command left running in the background
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return Finished(proc.returncode, out.decode(errors="replace")[-OUTPUT_TAIL:])


def ruff_bin() -> str:
    from ruff.__main__ import find_ruff_bin

    return find_ruff_bin()
