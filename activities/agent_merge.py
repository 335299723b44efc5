"""The agent's fan-in: the units' heads merged in dependency order, conflicts named.

Units write disjoint files unless one depends on the other (and then starts from its head),
so their heads merge cleanly; the step still checks each merge and, on a conflict, reports
the unit and the files instead of failing, so the job can run that unit again on top of what
merged before it. Computed without a checkout (``git merge-tree``); the result is kept at a
scratch ref of the job, so a retry returns it without merging again.
"""

from __future__ import annotations

from pathlib import Path

import git

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core.agentjob import UnitMerge, UnitMergeInput
from agentparallels.core.models import JobRef


@implements(steps.UNIT_MERGE)
def merge_units(inp: UnitMergeInput) -> UnitMerge:
    """Merge ``inp.heads`` in order onto ``inp.base``; the result (or, on a conflict, what
    merged before it) is pushed to the job's scratch ref ``inp.ref`` before the step returns.
    Merges are deterministic (the job's date on every commit), so a retry computes the same
    commits and finds the ref already there."""
    job = inp.job
    cache = _git.cached_repo(job.repository)
    for head in (inp.base, *inp.heads):
        _git.ensure_commit(cache, job.repository, head)
    so_far, conflict = inp.base, None
    files: tuple[str, ...] = ()
    for name, head in zip(inp.names, inp.heads, strict=True):
        merged = _merge_one(cache, job, so_far, head, name)
        if isinstance(merged, tuple):
            conflict, files = name, merged
            break
        so_far = merged
    ref = f"{job.scratch}/{inp.ref}"
    current = _git.remote_ref(job.repository, ref)
    if current != so_far:
        _git.push(cache, job.repository, [(ref, so_far, current)])
    changed = _git.run(cache, "diff", "--name-only", "--no-renames", "-z", inp.base, so_far)
    return UnitMerge(
        commit=so_far,
        conflict=conflict,
        files=files,
        changed=tuple(sorted(p for p in changed.split("\0") if p)),
    )


def _merge_one(
    cache: Path, job: JobRef, so_far: str, head: str, name: str
) -> str | tuple[str, ...]:
    """``head`` merged on ``so_far``: the new commit, or the files in conflict."""
    if _is_ancestor(cache, head, so_far):
        return so_far
    if _is_ancestor(cache, so_far, head):
        return head
    status, out, err = _git.execute(
        cache,
        "merge-tree",
        "--write-tree",
        "--name-only",
        so_far,
        head,
        with_extended_output=True,
        with_exceptions=False,
    )
    if status == 1:
        return _conflicted(out)
    if status != 0:
        raise git.GitCommandError(["git", "merge-tree"], status, err)
    message = f"Merge unit {name} of {job.job_id}\n\n{_git.JOB_TRAILER}: {job.job_id}"
    env = _git.commit_env(job.timestamp)
    return _git.run(
        cache, "commit-tree", out.splitlines()[0], "-p", so_far, "-p", head, "-m", message, env=env
    )


def _is_ancestor(cache: Path, a: str, b: str) -> bool:
    try:
        _git.run(cache, "merge-base", "--is-ancestor", a, b)
    except git.GitCommandError:
        return False
    return True


def _conflicted(output: str) -> tuple[str, ...]:
    """The files ``merge-tree --name-only`` lists as conflicted: the lines after the tree id,
    up to the blank line before its messages."""
    lines = output.strip().splitlines()[1:]
    files = []
    for line in lines:
        if not line.strip():
            break
        files.append(line.strip())
    return tuple(sorted(set(files)))


__all__ = ["merge_units"]
