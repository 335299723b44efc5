"""What a failed or cancelled job left behind, found by looking, and the commands that remove it.

A job's rollback (its saga, then its cleanup step) should leave the user's repository as it
found it. The client does not take that on trust: after a job fails or is cancelled it looks for
the job's traces (:func:`find`) and names each one with the command that removes it;
``agentparallels cleanup JOB --repo PATH`` removes them all (:func:`remove`).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from agentparallels.activities import _git
from agentparallels.activities._workspace import remove_worktree, worktrees_dir
from agentparallels.core.models import BRANCH_PREFIX, SCRATCH_NAMESPACE


@dataclass(frozen=True, slots=True)
class Leftover:
    """One trace of a job: what it is, and the shell command that removes it."""

    what: str
    command: str


def _git_command(repository: str, *args: str) -> str:
    return shlex.join(["git", "-C", repository, *args])


def _ref(repository: str, ref: str, kind: str) -> Leftover:
    if _git.is_local(repository):
        return Leftover(f"{kind} {ref}", _git_command(repository, "update-ref", "-d", ref))
    return Leftover(f"{kind} {ref}", shlex.join(["git", "push", repository, "--delete", ref]))


def find(repository: str, job_id: str, *, branch: bool = True) -> list[Leftover]:
    """The job's scratch refs in ``repository``, its branch (unless ``branch`` is False: the
    job published it, or it was someone else's), worktrees registered in the repository on
    the job's branch, and this machine's worker worktrees of the job. Raises
    ``git.GitCommandError`` when the repository cannot be read."""
    found = [
        _ref(repository, ref, "scratch ref")
        for ref in sorted(_git.remote_refs(repository, f"{SCRATCH_NAMESPACE}/{job_id}/*"))
    ]
    job_branch = f"refs/heads/{BRANCH_PREFIX}/{job_id}"
    if _git.is_local(repository):
        for path in _registered_worktrees(repository, job_branch):
            command = _git_command(repository, "worktree", "remove", "--force", path)
            found.append(Leftover(f"worktree {path}", command))
    if branch and _git.remote_ref(repository, job_branch) is not None:
        found.append(_ref(repository, job_branch, "branch"))
    local = worktrees_dir(job_id)
    if local.is_dir() and any(local.iterdir()):
        command = shlex.join(["agentparallels", "cleanup", job_id, "--repo", repository])
        found.append(Leftover(f"this machine's worker worktrees {local}", command))
    return found


def _registered_worktrees(repository: str, branch_ref: str) -> list[str]:
    """Worktrees of ``repository`` checked out on ``branch_ref``."""
    out = _git.run(repository, "worktree", "list", "--porcelain")
    paths, path = [], ""
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = line.removeprefix("worktree ")
        elif line == f"branch {branch_ref}":
            paths.append(path)
    return paths


def remove(repository: str, job_id: str, *, branch: bool = True) -> list[Leftover]:
    """Remove everything :func:`find` finds; returns what is still there afterwards."""
    for leftover in find(repository, job_id, branch=branch):
        if leftover.what.startswith("this machine's worker worktrees"):
            remove_worktree(repository, job_id)
        else:
            subprocess.run(shlex.split(leftover.command), check=False, capture_output=True)
    return find(repository, job_id, branch=branch)


def report(repository: str, job_id: str, leftovers: list[Leftover]) -> str:
    """The lines that name each leftover and how to remove it."""
    lines = [f"the rollback left {len(leftovers)} thing(s) of job {job_id} in {repository}:"]
    lines += [f"  {leftover.what}\n    remove: {leftover.command}" for leftover in leftovers]
    everything = shlex.join(["agentparallels", "cleanup", job_id, "--repo", repository])
    lines.append(f"or remove them all: {everything}")
    return "\n".join(lines)


__all__ = ["Leftover", "find", "remove", "report"]
