"""Running user commands (codemods, checks, tests) with a time limit, in the sandbox.

Every tool command goes through :func:`run_command`. It runs in a shell in its own process
group, with the worktree as its working directory, confined by a sandbox policy
(:mod:`activities.sandbox`, bubblewrap by default); on timeout the whole group is killed, so
no child process outlives the step.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    whole_output: bool = False,
) -> Finished:
    """Run ``command`` in a shell in ``cwd`` under ``policy``, with ``extra_env`` added to the
    tools' environment; stdout and stderr are merged. The output kept is its last
    ``OUTPUT_TAIL`` characters, or all of it with ``whole_output`` (a tool's report the step
    reads, such as ruff's JSON).

    Under the bwrap policy a worker that cannot build the sandbox raises a non-retryable
    ``SandboxUnavailable`` error instead of running the command unconfined, and a command that
    fails on a path the sandbox hides raises ``SandboxDenied`` naming it and the flag that
    exposes it (a failed test or check is never blamed for it). With ``denial_is_output`` only
    a command that could not start (exit 126 or 127) raises it; otherwise the explanation is
    added to its output (an agent unit's checks and tests, where the model's code may name
    anything)."""
    with sandbox.jail(policy, command, cwd, tool_env(), extra_env) as jail:
        done = _run(jail.argv, jail.env, cwd, timeout_s, tail=None if whole_output else OUTPUT_TAIL)
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


ARGUMENT_BYTES = 64 * 1024
"""Most bytes of one command line or batch script: the shell gets it as one argument, which
Linux caps at 128 KiB; longer work runs as several (see :func:`chunked`)."""


def chunked(items: Sequence[str], cost: Callable[[str], int]) -> list[list[str]]:
    """``items`` in order, in as few runs as keep each one's summed ``cost`` within
    ``ARGUMENT_BYTES`` (an item over it alone is a run of its own)."""
    runs: list[list[str]] = [[]]
    size = 0
    for item in items:
        if runs[-1] and size + cost(item) > ARGUMENT_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += cost(item)
    return [run for run in runs if run]


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """The command of a batch that failed, and how."""

    index: int
    command: str
    done: Finished


class BatchUnclear(Exception):
    """The batch's shell ended without saying plainly which command stopped it (it was killed,
    the sandbox refused forks, or its output does not end as the shell ends it): the caller
    runs the commands one by one to find out."""


def run_commands(
    commands: Sequence[str], cwd: Path, timeout_s: float, policy: sandbox.Policy = sandbox.DEFAULT
) -> BatchFailure | None:
    """Run ``commands`` one after another in ``cwd`` under ``policy``, each in a shell of its
    own with ``timeout_s``, in one sandbox (one bubblewrap start for the batch, not one per
    command; a batch whose script would pass ``ARGUMENT_BYTES`` runs in several), stopping at
    the first that fails: None when all succeeded, else that command's failure, reported as
    :func:`run_command` reports one (a command that ran into a hidden path raises
    ``SandboxDenied``). The sandbox is the one the first command needs; the commands are meant
    to be one tool on different files. Raises :class:`BatchUnclear` when the output does not
    say plainly where the batch stopped."""
    if len(commands) <= 1 or shutil.which("timeout") is None:
        for i, command in enumerate(commands):
            done = run_command(command, cwd, timeout_s, policy)
            if not done.ok:
                return BatchFailure(i, command, done)
        return None
    start = 0
    # Each command costs its bytes and the lines around it in the script.
    for part in chunked(commands, lambda command: len(command.encode()) + 200):
        failure = _run_part(part, cwd, timeout_s, policy)
        if failure is not None:
            return BatchFailure(start + failure.index, failure.command, failure.done)
        start += len(part)
    return None


def _run_part(
    commands: list[str], cwd: Path, timeout_s: float, policy: sandbox.Policy
) -> BatchFailure | None:
    # Markers with a secret of this run between the commands' outputs: a command cannot print
    # them by chance, and the shell's last line, which ends the output, says how it ended.
    tag = f"\x1eagentparallels-{secrets.token_hex(8)}"
    lines = ["exec </dev/null"]
    for i, command in enumerate(commands):
        lines += [
            f"printf '\\n{tag} start %d\\n' {i}",
            # --foreground: the command stays in the batch's process group, so whatever it
            # leaves running is killed with the batch (and, sandboxed, with its namespace).
            f"timeout --foreground -k 2 {timeout_s:g} /bin/sh -c {shlex.quote(command)} 2>&1",
            f"rc=$?; [ $rc -eq 0 ] || {{ printf '\\n{tag} failed %d %d\\n' {i} $rc; exit 0; }}",
        ]
    lines.append(f"printf '\\n{tag} done\\n'")
    label = f"{commands[0]} (and {len(commands) - 1} more)"
    with sandbox.jail(policy, "\n".join(lines), cwd, tool_env(), needs=commands[0]) as jail:
        whole = _batch(
            label, cwd, timeout_s * len(commands) + 10, policy, argv=jail.argv, env=jail.env
        )
        refused = jail.refused_forks()
    if refused or whole.timed_out or whole.exit_code != 0:
        raise BatchUnclear(jail.notes(refused) or f"exit {whole.exit_code}")
    out = whole.output
    last = out.rstrip("\n").rsplit("\n", 1)[-1]
    if last == f"{tag} done":
        return None
    words = last.removeprefix(f"{tag} failed ").split()
    if (
        not last.startswith(f"{tag} failed ")
        or len(words) != 2
        or not all(w.isdigit() for w in words)
    ):
        raise BatchUnclear("the batch's output does not end as its shell ends it")
    index, rc = int(words[0]), int(words[1])
    if index >= len(commands):
        raise BatchUnclear(f"the batch says command {index} of {len(commands)} failed")
    command = commands[index]
    began = out.rfind(f"{tag} start {index}\n")
    ended = out.rfind(f"\n{tag} failed ")
    output = out[began + len(f"{tag} start {index}\n") if began >= 0 else 0 : ended]
    output = output[-OUTPUT_TAIL:]
    if rc == 124:
        done = Finished(-9, f"{output}\n[killed after {timeout_s:g}s]", timed_out=True)
        return BatchFailure(index, command, done)
    denied = jail.denied(command, cwd, rc, output)
    if denied is not None:
        raise denied
    return BatchFailure(index, command, Finished(rc, output))


@traced_command
def _batch(
    command: str,
    cwd: Path,
    timeout_s: float,
    policy: sandbox.Policy,
    *,
    argv: list[str],
    env: dict[str, str],
) -> Finished:
    """The batch's shell, traced as one tool command: ``command`` names it (redacted and
    shortened by the span, like any command), ``policy`` is what confines it."""
    return _run(argv, env, cwd, timeout_s, tail=None)


def _run(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    tail: int | None = OUTPUT_TAIL,
) -> Finished:
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
    text = out.decode(errors="replace")
    return Finished(proc.returncode, text if tail is None else text[-tail:])


def ruff_bin() -> str:
    from ruff.__main__ import find_ruff_bin

    return find_ruff_bin()
