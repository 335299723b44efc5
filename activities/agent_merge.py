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


@implements(steps.UNIT_MERGE)
def merge_units(inp: UnitMergeInput) -> UnitMerge:
    job = inp.job
    ref = f"{job.scratch}/{inp.ref}"
    done = _git.remote_ref(job.repository, ref)
    if done is not None:
        return UnitMerge(commit=done)
    cache = _git.cached_repo(job.repository)
    for head in (inp.base, *inp.heads):
        _git.ensure_commit(cache, job.repository, head)
    so_far = inp.base
    env = _git.commit_env(job.timestamp)
    for name, head in zip(inp.names, inp.heads, strict=True):
        if _is_ancestor(cache, head, so_far):
            continue
        if _is_ancestor(cache, so_far, head):
            so_far = head
            continue
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
            return UnitMerge(commit=so_far, conflict=name, files=_conflicted(out))
        if status != 0:
            raise git.GitCommandError(["git", "merge-tree"], status, err)
        message = f"Merge unit {name} of {job.job_id}\n\n{_git.JOB_TRAILER}: {job.job_id}"
        so_far = _git.run(
            cache,
            "commit-tree",
            out.splitlines()[0],
            "-p",
            so_far,
            "-p",
            head,
            "-m",
            message,
            env=env,
        )
    _git.push(cache, job.repository, [(ref, so_far, None)])
    return UnitMerge(commit=so_far)


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
