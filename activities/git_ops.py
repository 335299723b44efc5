"""Git steps of a job: shard branches and worktrees, merging, publishing and cleaning up.

Each step is idempotent: it looks at the job's refs first and does nothing that is already done.
"""

from __future__ import annotations

from datetime import timedelta

import git
from temporalio.exceptions import ApplicationError

from activities import _git
from activities._defn import defn
from activities._workspace import remove_worktree as _remove_worktree
from activities._workspace import scratch_worktree, worktree
from agentparallels.errors import GIT_CONFLICT
from agentparallels.models import (
    SCRATCH_NAMESPACE,
    JobRef,
    MergeInput,
    Published,
    PublishInput,
    RefUpdate,
    ShardRef,
)

SHORT = timedelta(minutes=2)


@defn("git.create_branch", start_to_close=SHORT)
def create_branch(inp: ShardRef) -> str:
    """Create the shard's branch at the base commit; returns where it is (it may exist)."""
    job = inp.job
    tip = _git.remote_ref(job.repository, inp.ref)
    if tip is not None:
        return tip
    cache = _git.cached_repo(job.repository)
    _git.ensure_commit(cache, job.repository, job.base_commit)
    _git.push(cache, job.repository, [(inp.ref, job.base_commit, None)])
    return job.base_commit


@defn("git.add_worktree", start_to_close=SHORT)
def add_worktree(inp: ShardRef) -> None:
    """Give the shard a worktree on this worker, at its branch's tip."""
    tip = _git.remote_ref(inp.job.repository, inp.ref) or inp.job.base_commit
    worktree(inp.job.repository, inp.job.job_id, inp.name, tip)


@defn("git.remove_worktree", start_to_close=SHORT)
def remove_worktree(inp: ShardRef) -> None:
    _remove_worktree(inp.job.repository, inp.job.job_id, inp.name)


@defn("git.set_ref", start_to_close=SHORT)
def set_ref(inp: RefUpdate) -> None:
    """Move (or delete, when ``target`` is None) one of the job's scratch refs."""
    if not inp.ref.startswith(f"{inp.job.scratch}/"):
        raise ApplicationError(
            f"refusing to move {inp.ref}: not a scratch ref of this job", non_retryable=True
        )
    current = _git.remote_ref(inp.job.repository, inp.ref)
    if current == inp.target:
        return
    cache = _git.cached_repo(inp.job.repository)
    if inp.target:
        _git.ensure_commit(cache, inp.job.repository, inp.target)
    _git.push(cache, inp.job.repository, [(inp.ref, inp.target, current)])


@defn("git.merge", start_to_close=timedelta(minutes=10))
def merge(inp: MergeInput) -> str:
    """Merge every shard's branch into one commit on the base, kept at the job's ``merged`` ref.

    Shards change disjoint files, so the merge cannot conflict; with one shard its head is used.
    """
    job = inp.job
    ref = f"{job.scratch}/merged"
    done = _git.remote_ref(job.repository, ref)
    if done is not None:
        return done
    cache = _git.cached_repo(job.repository)
    for head in inp.shard_heads:
        _git.ensure_commit(cache, job.repository, head)
    heads = [h for h in inp.shard_heads if h != job.base_commit]
    if not heads:
        return job.base_commit
    if len(heads) == 1:
        merged = heads[0]
    else:
        with scratch_worktree(job.repository, job.job_id, "merge", job.base_commit) as wt:
            message = (
                f"Merge {len(heads)} shards of {job.job_id}\n\n{_git.JOB_TRAILER}: {job.job_id}"
            )
            _git.run(
                wt,
                "merge",
                "--quiet",
                "--no-ff",
                "--no-edit",
                "-m",
                message,
                *heads,
                env=_git.commit_env(job.timestamp),
            )
            merged = _git.run(wt, "rev-parse", "HEAD")
    _git.push(cache, job.repository, [(ref, merged, None)])
    return merged


@defn("git.publish", start_to_close=SHORT)
def publish(inp: PublishInput) -> Published:
    """Create the job's branch at the result; with ``apply``, fast-forward the checked-out branch
    of a local repository whose working tree is clean (otherwise say why it was not applied)."""
    job = inp.job
    branch_ref = f"refs/heads/{job.branch}"
    existing = _git.remote_ref(job.repository, branch_ref)
    if existing is None:
        cache = _git.cached_repo(job.repository)
        _git.push(cache, job.repository, [(branch_ref, inp.commit, None)])
    elif existing != inp.commit:
        raise ApplicationError(
            f"branch {job.branch} already exists at another commit; "
            "delete it or use another job id",
            type=GIT_CONFLICT,
            non_retryable=True,
        )
    if not inp.apply:
        return Published(branch=job.branch, applied=False)
    applied, note = _fast_forward(job, inp.commit)
    return Published(branch=job.branch, applied=applied, apply_note=note)


def _fast_forward(job: JobRef, commit: str) -> tuple[bool, str]:
    repo = job.repository
    if not _git.is_local(repo):
        return False, "not applied: --apply needs a local repository"
    try:
        current = _git.run(repo, "symbolic-ref", "--short", "HEAD")
    except git.GitCommandError:
        return False, "not applied: HEAD is detached"
    head = _git.run(repo, "rev-parse", "HEAD")
    if head == commit:
        return True, f"{current} is at the result"
    try:
        _git.run(repo, "merge-base", "--is-ancestor", head, commit)
    except git.GitCommandError:
        return False, f"not applied: {current} moved since the job started; merge {job.branch}"
    if _git.run(repo, "status", "--porcelain", "--untracked-files=no"):
        return False, f"not applied: the working tree has changes; merge {job.branch} yourself"
    _git.run(repo, "merge", "--ff-only", "--quiet", commit)
    return True, f"fast-forwarded {current}"


@defn("git.cleanup", start_to_close=SHORT)
def cleanup(inp: JobRef) -> None:
    """Delete the job's scratch refs and this worker's worktrees of the job."""
    refs = _git.remote_refs(inp.repository, f"{SCRATCH_NAMESPACE}/{inp.job_id}/*")
    if refs:
        cache = _git.cached_repo(inp.repository)
        _git.push(cache, inp.repository, [(ref, None, sha) for ref, sha in sorted(refs.items())])
    _remove_worktree(inp.repository, inp.job_id)
