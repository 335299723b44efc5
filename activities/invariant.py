"""The publish invariant: before a job publishes, a step checks its result against its shards,
blob by blob (and, for a rename whose checks voted on its change set, that the result has that
tree).

A job reports the files its shards changed; the merged result is what gets published. The two
must agree exactly, or the job would report one thing and publish another:

- every file a shard says it changed has, on the result tree, the blob it has at that shard's
  verified head, and that blob differs from the base (a file reported changed but left as it was
  is a lost edit);
- every other path of the result tree is the base's (nothing added, nothing removed).

Any difference fails the job with a non-retryable ``ResultMismatch`` naming each file and both
blob ids, and the job rolls back. The objects are read from the job's repository (fetched into
this worker's cache when missing): workers do not share a disk.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core.errors import CHECKED_TREE_DIFFERS, RESULT_MISMATCH
from agentparallels.core.messages import ResultCheckInput, ShardClaim

ABSENT = "(absent)"
"""How a path missing from a tree is named in a mismatch."""
SHOWN = 20
"""Mismatches named in the error; the count of the rest follows."""


def tree(cache: Path, commit: str) -> dict[str, str]:
    """Every path of ``commit``'s tree (submodules and symlinks included) -> "mode blob-id"."""
    out = _git.run(cache, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries = {}
    for entry in out.split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            mode, _kind, sha = meta.split(" ")
            entries[path] = f"{mode} {sha}"
    return entries


def _blob(entry: str | None) -> str:
    return entry.split(" ", 1)[1] if entry else ABSENT


def mismatches(
    base: dict[str, str],
    result: dict[str, str],
    heads: dict[str, dict[str, str]],
    claims: tuple[ShardClaim, ...],
) -> list[str]:
    """What breaks the invariant, one line per file; empty when the result is right.

    ``base`` and ``result`` are trees as :func:`tree` gives them; ``heads`` maps each shard's
    name to its head's tree."""
    problems: list[str] = []
    owner: dict[str, str] = {}
    for claim in claims:
        for path in claim.files_changed:
            if path in owner and owner[path] != claim.name:
                problems.append(f"{path}: claimed changed by shards {owner[path]} and {claim.name}")
                continue
            owner[path] = claim.name
            got, want, was = result.get(path), heads[claim.name].get(path), base.get(path)
            if got != want:
                problems.append(
                    f"{path}: the result has blob {_blob(got)}, shard {claim.name}'s verified "
                    f"head {claim.head[:12]} has blob {_blob(want)}"
                )
            elif got == was:
                problems.append(
                    f"{path}: reported changed by shard {claim.name}, but the result has blob "
                    f"{_blob(got)}, the base's blob {_blob(was)}: the edit is missing"
                )
    for path in sorted((base.keys() | result.keys()) - owner.keys()):
        got, was = result.get(path), base.get(path)
        if got != was:
            problems.append(
                f"{path}: changed by no shard, but the result has blob {_blob(got)} and the "
                f"base blob {_blob(was)}"
            )
    return problems


@implements(steps.CHECK_RESULT)
def check_result(inp: ResultCheckInput) -> None:
    """Check the publish invariant on ``inp.commit``; raise ``ResultMismatch`` if it fails.
    With ``inp.checked``, also check that the checks voted on the result's tree."""
    job = inp.job
    cache = _git.cached_repo(job.repository)
    commits = {job.base_commit, inp.commit, *(c.head for c in inp.shards)}
    for sha in sorted(commits):
        _git.ensure_commit(cache, job.repository, sha)
    heads = {c.name: tree(cache, c.head) for c in inp.shards}
    problems = mismatches(tree(cache, job.base_commit), tree(cache, inp.commit), heads, inp.shards)
    if not problems:
        if inp.checked is not None:
            _same_tree(cache, inp.commit, inp.checked, job.repository)
        return
    more = f"\n... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    raise ApplicationError(
        f"the result {inp.commit[:12]} is not what the shards made ({len(problems)} "
        f"difference{'s' if len(problems) > 1 else ''}); nothing was published:\n"
        + "\n".join(problems[:SHOWN])
        + more,
        type=RESULT_MISMATCH,
        non_retryable=True,
    )


def _same_tree(cache: Path, commit: str, checked: str, repository: str) -> None:
    """Raise ``CheckedTreeDiffers`` (the job lets its checks vote again on ``commit``) unless
    ``checked``, the commit the checks voted on, has ``commit``'s tree."""
    _git.ensure_commit(cache, repository, checked)
    want, got = _git.run(cache, "rev-parse", f"{commit}^{{tree}}", f"{checked}^{{tree}}").split()
    if got == want:
        return
    paths = _git.run(cache, "diff", "--name-only", "-z", checked, commit).split("\0")
    named = ", ".join(p for p in paths[:SHOWN] if p)
    raise ApplicationError(
        f"the checks voted on {checked[:12]}, whose tree differs from the result "
        f"{commit[:12]} in {named}: they vote again on the result",
        type=CHECKED_TREE_DIFFERS,
        non_retryable=True,
    )


__all__ = ["ABSENT", "SHOWN", "check_result", "mismatches", "tree"]
