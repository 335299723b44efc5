"""The pre-completion checklist's voters: lint, diff size and merge conflicts (the test
command votes through ``check.run``). Each reads the job's merged result and changes nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

import git

from agentparallels.activities import _git, sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._workspace import scratch_worktree
from agentparallels.activities.checks import _ruff_findings
from agentparallels.activities.refactor import VERIFIED_TRAILER, change_ref, resolve_base
from agentparallels.core import steps
from agentparallels.core.checklist import CheckVote, VoteInput
from agentparallels.core.models import Limits


def _lint(inp: VoteInput) -> CheckVote:
    cache = _git.cached_repo(inp.repository)  # holding both commits (see ``vote``)
    raw = _git.run(
        cache, "diff", "--raw", "--no-renames", "--diff-filter=d", "-z", inp.base_commit,
        inp.commit, "--", "*.py",
    ).split("\0")  # fmt: skip
    # ":<old mode> <new mode> <old id> <new id> <status>", then the path, for each file
    modes = {path: meta.split()[1] for meta, path in zip(raw[::2], raw[1::2], strict=False)}
    py = sorted(p for p in modes if p)
    command = f"ruff check --isolated --select {inp.rules}"
    if py and _verified_by_plan(cache, inp):
        reason = f"{len(py)} changed Python files pass (checked as the plan made them)"
        return CheckVote(check="lint", yes=True, reason=reason, command=command)
    # The default rules (syntax, undefined names) read each file alone: the worktree need
    # hold only the changed files, unless one is a link (to a file it would not hold).
    # Other rules (import sorting) may look at the folders around a file.
    alone = inp.rules == Limits().verify_rules and _git.SYMLINK_MODE not in modes.values()
    sparse = py if alone else None
    findings: dict[str, str] = {}
    if py:
        with scratch_worktree(inp.repository, inp.job_id, "lint", inp.commit, sparse) as wt:
            policy = sandbox.Policy.of(inp.sandbox)
            findings = _ruff_findings(wt, py, inp.rules, inp.timeout_s, policy)
    if not findings:
        return CheckVote(
            check="lint", yes=True, reason=f"{len(py)} changed Python files pass", command=command
        )
    lines = "\n".join(findings[p] for p in sorted(findings))
    return CheckVote(check="lint", yes=False, reason=f"ruff found:\n{lines}", command=command)


def _verified_by_plan(cache: Path, inp: VoteInput) -> bool:
    """Whether ``inp.commit`` is this job's change set (its plan's ref names it), on the base,
    which the plan checked, every changed file, against these very rules
    (``VERIFIED_TRAILER``): the vote of a rename that votes on its change set early, which
    need not run ruff again."""
    parents, _, message = _git.run(cache, "log", "-1", "--format=%P%n%B", inp.commit).partition(
        "\n"
    )
    if parents != inp.base_commit or _git.trailer(message, VERIFIED_TRAILER) != inp.rules:
        return False
    return _git.remote_ref(inp.repository, change_ref(inp.job_id)) == inp.commit


def _diff_size(inp: VoteInput) -> CheckVote:
    cache = str(_git.cached_repo(inp.repository))
    numstat = _git.run(cache, "diff", "--numstat", "--no-renames", inp.base_commit, inp.commit)
    lines = 0
    for row in numstat.splitlines():
        added, removed, _ = row.split("\t", 2)
        lines += (int(added) if added != "-" else 1) + (int(removed) if removed != "-" else 0)
    limit = inp.max_diff_lines
    command = f"git diff --numstat {inp.base_commit[:12]} {inp.commit[:12]}"
    if limit is None:
        return CheckVote(
            check="diff-size", yes=True, reason=f"{lines} lines changed, no limit", command=command
        )
    if lines <= limit:
        return CheckVote(
            check="diff-size",
            yes=True,
            reason=f"{lines} lines changed, within the limit of {limit}",
            command=command,
        )
    return CheckVote(
        check="diff-size",
        yes=False,
        reason=f"{lines} lines changed, over the limit of {limit} (raise --max-diff-lines or "
        "split the change)",
        command=command,
    )


def _conflicts(inp: VoteInput) -> CheckVote:
    current = resolve_base(inp.repository, inp.base_ref)
    command = f"git merge-tree --write-tree {inp.base_ref} <result>"
    if current == inp.base_commit:
        return CheckVote(
            check="conflicts", yes=True, reason=f"{inp.base_ref} has not moved", command=command
        )
    cache = _git.cached_repo(inp.repository)
    _git.ensure_commit(cache, inp.repository, current)
    status, out, err = _git.execute(
        cache,
        *("merge-tree", "--write-tree", "--name-only", "--no-messages", current, inp.commit),
        with_exceptions=False,
        with_extended_output=True,
    )
    if status == 0:
        return CheckVote(
            check="conflicts",
            yes=True,
            reason=f"{inp.base_ref} moved to {current[:12]}; the result still merges cleanly",
            command=command,
        )
    if status != 1:
        raise RuntimeError(f"git merge-tree failed ({status}): {err}")  # a tool fault: retried
    files = [shlex.quote(f) for f in out.splitlines()[1:] if f]
    return CheckVote(
        check="conflicts",
        yes=False,
        reason=f"{inp.base_ref} moved to {current[:12]} and the result conflicts with it in "
        f"{', '.join(files) or 'some files'}: run the job again on the new {inp.base_ref}",
        command=command,
    )


_VOTERS = {"lint": _lint, "diff-size": _diff_size, "conflicts": _conflicts}


@implements(steps.VOTE)
def vote(inp: VoteInput) -> CheckVote:
    """One check's yes or no on the job's merged result."""
    try:
        cache = _git.cached_repo(inp.repository)
        for sha in (inp.base_commit, inp.commit):  # another worker may have made them
            _git.ensure_commit(cache, inp.repository, sha)
        return _VOTERS[inp.check](inp)
    except git.GitCommandError as e:
        raise RuntimeError(f"git failed: {e.stderr or e}") from None  # retried, finitely


__all__ = ["vote"]
