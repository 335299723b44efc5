"""Git steps of a job: shard branches and worktrees, merging, publishing and cleaning up.

Each step is idempotent: it looks at the job's refs first and does nothing that is already done.
"""

from __future__ import annotations

from datetime import timedelta

import git
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.activities._workspace import remove_worktree as _remove_worktree
from agentparallels.core import steps
from agentparallels.core.errors import GIT_CONFLICT
from agentparallels.core.models import (
    SCRATCH_NAMESPACE,
    JobRef,
    MergeInput,
    Published,
    PublishInput,
    RefUpdate,
    ShardRef,
)

SHORT = timedelta(minutes=2)


@implements(steps.REMOVE_WORKTREE)
def remove_worktree(inp: ShardRef) -> None:
    _remove_worktree(inp.job.repository, inp.job.job_id, inp.name)


@implements(steps.SET_REF)
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


@implements(steps.MERGE)
def merge(inp: MergeInput) -> str:
    """Merge every shard's branch into one commit on the base, kept at the job's ``merged`` ref.

    Shards change disjoint files, so the merge cannot conflict. It is computed without a
    checkout (``git merge-tree``), one shard at a time, and recorded as a single merge commit
    whose parents are the base and every shard; with one shard its head is the result.
    """
    job = inp.job
    ref = f"{job.scratch}/merged"
    done = _git.remote_ref(job.repository, ref)
    if done is not None:
        return done
    cache = _git.cached_repo(job.repository)
    heads = [h for h in inp.shard_heads if h != job.base_commit]
    for head in heads:
        _git.ensure_commit(cache, job.repository, head)
    if not heads:
        return job.base_commit
    if len(heads) == 1:
        merged = heads[0]
    else:
        env = _git.commit_env(job.timestamp)
        so_far = heads[0]
        for head in heads[1:]:
            tree = _git.run(cache, "merge-tree", "--write-tree", so_far, head)
            so_far = _git.run(
                cache, "commit-tree", tree, "-p", so_far, "-p", head, "-m", "partial merge", env=env
            )
        message = f"Merge {len(heads)} shards of {job.job_id}\n\n{_git.JOB_TRAILER}: {job.job_id}"
        parents = [arg for head in [job.base_commit, *heads] for arg in ("-p", head)]
        merged = _git.run(
            cache, "commit-tree", f"{so_far}^{{tree}}", *parents, "-m", message, env=env
        )
    _git.push(cache, job.repository, [(ref, merged, None)])
    return merged


@implements(steps.PUBLISH)
def publish(inp: PublishInput) -> Published:
    """Create the job's branch at the result; with ``apply``, fast-forward the checked-out branch
    of a local repository whose working tree is clean (otherwise say why it was not applied);
    with ``clean_up``, then do what ``git.cleanup`` does (the job's last step, folded in)."""
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
    # The job is done: a resumed run will not need its finished shards' commits any more.
    _git.drop_kept(_git.cached_repo(job.repository), job.job_id)
    published = Published(branch=job.branch, applied=False)
    if inp.apply:
        applied, note = _fast_forward(job, inp.commit)
        published = Published(branch=job.branch, applied=applied, apply_note=note)
    if inp.clean_up:
        try:
            _clean_up(job)
        except Exception as e:  # the branch is out: the job's own cleanup step retries this
            activity.logger.warning("cleanup after publishing %s failed: %s", job.branch, e)
            return published
        return published.model_copy(update={"cleaned": True})
    return published


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


@implements(steps.CLEANUP)
def cleanup(inp: JobRef) -> None:
    """Delete the job's scratch refs and this worker's worktrees of the job."""
    _clean_up(inp)


def _clean_up(job: JobRef) -> None:
    refs = _git.remote_refs(job.repository, f"{SCRATCH_NAMESPACE}/{job.job_id}/*")
    if refs:
        cache = _git.cached_repo(job.repository)
        _git.push(cache, job.repository, [(ref, None, sha) for ref, sha in sorted(refs.items())])
    _remove_worktree(job.repository, job.job_id)


__all__ = ["SHORT", "cleanup", "merge", "publish", "remove_worktree", "set_ref"]
