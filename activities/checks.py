"""Verification of edits and the pre-completion test command."""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Sequence
from pathlib import Path

from agentparallels.activities import sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._proc import (
    ARGUMENT_BYTES,
    BatchUnclear,
    Finished,
    chunked,
    ruff_bin,
    run_command,
    run_commands,
)
from agentparallels.activities._workspace import JOB_TREE, scratch_worktree
from agentparallels.core import steps
from agentparallels.core.models import CheckInput, CheckRun


def uses_ruff(wt: Path) -> bool:
    """Whether the repository configures ruff (and so wants ruff's formatting)."""
    if (wt / "ruff.toml").exists() or (wt / ".ruff.toml").exists():
        return True
    pyproject = wt / "pyproject.toml"
    return pyproject.exists() and "[tool.ruff" in pyproject.read_text(errors="replace")


def _python(wt: Path, paths: Sequence[str]) -> list[str]:
    return [p for p in paths if p.endswith(".py") and (wt / p).exists()]


def file_lists(paths: Sequence[str]) -> list[str]:
    """``paths`` quoted for a shell, in as few lists as keep each within ``ARGUMENT_BYTES``
    (a rename's whole change set can be thousands of files)."""
    quoted = [shlex.quote(p) for p in paths]
    return [" ".join(run) for run in chunked(quoted, lambda name: len(name) + 1)]


def format_files(
    wt: Path,
    paths: Sequence[str],
    timeout_s: float,
    policy: sandbox.Policy = sandbox.DEFAULT,
    *,
    then_check: str | None = None,
) -> dict[str, str] | None:
    """Re-sort imports and format ``paths`` with the repository's own ruff settings, in one
    sandbox. Each runs on every file whatever the other said (a file that does not parse fails
    both, and is left for the verify rules to report).

    With ``then_check`` (ruff rules, as :func:`verify` takes them), the same sandbox then
    checks the formatted files against those rules: returns path -> ruff's findings for the
    paths that have any, or None when the check could not run there (the batch stopped before
    it): call :func:`verify` then."""
    items: list[dict] | None = []
    for files in file_lists(_python(wt, paths)):
        got = _sort_format_check(wt, files, timeout_s, policy, then_check)
        items = None if items is None or got is None else items + got
    return None if then_check is None or items is None else _findings(wt, items)


def _sort_format_check(
    wt: Path, files: str, timeout_s: float, policy: sandbox.Policy, rules: str | None
) -> list[dict] | None:
    """Sort imports in ``files`` (shell-quoted), format them, then with ``rules`` check them,
    in one sandbox. Returns the check's report items (none without ``rules``), or None when
    the batch did not get through the check (the formatting still ran)."""
    ruff = ruff_bin()
    sort = f"{ruff} check --no-cache --quiet --fix --select I -- {files}"
    form = f"{ruff} format --no-cache --quiet -- {files}"
    # The check's report goes to a file of its own in the worktree (the batch's output is the
    # three commands'), read and removed before anything looks at the worktree.
    report = wt / f".agentparallels-ruff-{secrets.token_hex(8)}.json"
    batch = [sort, form, *([_check_command(rules, files, report.name)] if rules else [])]
    try:
        try:
            failed = run_commands(batch, wt, timeout_s, policy)
        except BatchUnclear:  # its output does not say how far it got: each alone
            run_command(sort, wt, timeout_s, policy)
            run_command(form, wt, timeout_s, policy)
            return None
        if failed is not None:
            if failed.index == 0:  # stopped before formatting
                run_command(form, wt, timeout_s, policy)
            return None
        if not rules:
            return []
        try:
            items: list[dict] = json.loads(report.read_text() or "[]")
        except (OSError, ValueError):  # no report, or not one ruff wrote whole
            return None
        return items
    finally:
        report.unlink(missing_ok=True)


def _check_command(rules: str, files: str, report: str | None = None) -> str:
    """ruff's check of ``files`` against ``rules``, its JSON report on stdout (in ``report``,
    a file in the working directory, when given)."""
    to = f"--output-file {shlex.quote(report)} " if report else ""
    return (
        f"{ruff_bin()} check --isolated --no-cache --output-format json --exit-zero {to}"
        f"--select {rules} -- {files}"
    )


def _ruff_findings(
    wt: Path, py: Sequence[str], rules: str, timeout_s: float, policy: sandbox.Policy
) -> dict[str, str]:
    """Path -> ruff's findings for it (one line each), for the paths that have any."""
    items = []
    for files in file_lists(py):
        # All of it: the JSON's last 4000 characters alone would not parse (many findings).
        done = run_command(_check_command(rules, files), wt, timeout_s, policy, whole_output=True)
        if not done.ok:
            raise RuntimeError(f"ruff failed: {done.output[-4000:]}")  # a tool fault: retried
        items += json.loads(done.output or "[]")
    return _findings(wt, items)


def _findings(wt: Path, items: list[dict]) -> dict[str, str]:
    """Path -> the findings of ruff's JSON report ``items`` for it, one line each."""
    findings: dict[str, list[str]] = {}
    root = wt.resolve()
    for item in items:
        path = Path(item["filename"]).resolve().relative_to(root).as_posix()
        where = item.get("location") or {}
        findings.setdefault(path, []).append(
            f"{path}:{where.get('row')}:{where.get('column')}: "
            f"{item.get('code') or 'syntax-error'} {item.get('message')}"
        )
    return {path: "\n".join(lines) for path, lines in findings.items()}


def verify(
    wt: Path,
    paths: Sequence[str],
    rules: str,
    check_cmd: str | None,
    timeout_s: float,
    policy: sandbox.Policy = sandbox.DEFAULT,
) -> tuple[str, str, Finished] | None:
    """Check edited files, in order: ruff's ``rules`` (one run for all), then ``check_cmd`` on
    each. Returns the first failing file, the command that failed and its result, or None."""
    findings = _ruff_findings(wt, _python(wt, paths), rules, timeout_s, policy)
    for path in paths:
        if path in findings:
            command = f"ruff check --isolated --select {rules} -- {shlex.quote(path)}"
            return path, command, Finished(1, findings[path])
        if check_cmd:
            command = check_cmd.replace("{file}", shlex.quote(path))
            done = run_command(command, wt, timeout_s, policy)
            if not done.ok:
                return path, command, done
    return None


@implements(steps.RUN_CHECK)
def run_check(inp: CheckInput) -> CheckRun:
    """Run the pre-completion test command on ``inp.commit`` in a clean worktree of the whole
    tree, removed afterwards: the plan's, if it ran on this worker (as it left it when the
    plan left it clean at ``inp.commit``, else reset)."""
    sandbox.require(inp.sandbox.mode)
    with scratch_worktree(inp.job.repository, inp.job.job_id, JOB_TREE, inp.commit) as wt:
        done = run_command(inp.command, wt, inp.timeout_s, sandbox.Policy.of(inp.sandbox))
    return CheckRun(
        command=inp.command, exit_code=done.exit_code, passed=done.ok, output=done.output
    )


__all__ = ["ARGUMENT_BYTES", "file_lists", "format_files", "run_check", "uses_ruff", "verify"]
