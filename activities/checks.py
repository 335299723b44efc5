"""Verification of edits and the pre-completion test command."""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

from activities._defn import defn
from activities._proc import Finished, ruff_bin, run_command
from activities._workspace import scratch_worktree
from agentparallels.models import CheckInput, CheckRun


def uses_ruff(wt: Path) -> bool:
    """Whether the repository configures ruff (and so wants ruff's formatting)."""
    if (wt / "ruff.toml").exists() or (wt / ".ruff.toml").exists():
        return True
    pyproject = wt / "pyproject.toml"
    return pyproject.exists() and "[tool.ruff" in pyproject.read_text(errors="replace")


def format_file(wt: Path, path: str, timeout_s: float) -> None:
    """Re-sort imports and format ``path`` with the repository's own ruff settings."""
    if not path.endswith(".py") or not (wt / path).exists():
        return
    ruff = ruff_bin()
    run_command(
        f"{ruff} check --no-cache --quiet --fix --select I -- {shlex.quote(path)}", wt, timeout_s
    )
    run_command(f"{ruff} format --no-cache --quiet -- {shlex.quote(path)}", wt, timeout_s)


def verify(
    wt: Path, path: str, rules: str, check_cmd: str | None, timeout_s: float
) -> tuple[str, Finished] | None:
    """Check one edited file: ruff's ``rules`` on it, then ``check_cmd``. Returns the first
    failing command and its result, or None when every check passed."""
    commands = []
    if path.endswith(".py") and (wt / path).exists():
        ruff = ruff_bin()
        commands.append(
            f"{ruff} check --isolated --no-cache --output-format concise --select {rules}"
            f" -- {shlex.quote(path)}"
        )
    if check_cmd:
        commands.append(check_cmd.replace("{file}", shlex.quote(path)))
    for command in commands:
        done = run_command(command, wt, timeout_s)
        if not done.ok:
            return command, done
    return None


@defn("check.run", start_to_close=timedelta(minutes=30))
def run_check(inp: CheckInput) -> CheckRun:
    """Run the pre-completion test command on ``inp.commit`` in a fresh worktree."""
    with scratch_worktree(inp.job.repository, inp.job.job_id, "check", inp.commit) as wt:
        done = run_command(inp.command, wt, inp.timeout_s)
    return CheckRun(
        command=inp.command, exit_code=done.exit_code, passed=done.ok, output=done.output
    )
