"""The job's write-ahead progress log in git, and taking over shards an earlier run finished.

The log (:class:`agentparallels.core.progress_log.JobLog`) lives on a chain of commits of its own at
``refs/agentparallels/<job>/progress``: commits with no parent in the project's history, so the
log can never reach a published branch, under the job's scratch namespace, so the cleanup of a
job that succeeded, failed or was cancelled removes it with the job's other refs. What it
outlives is a run that stopped without cleaning up: a terminated job, a lost cluster, a history
past its retention. The file-level log is each shard's own branch, one checkpoint commit per
edited file.

Finished shards' result commits are also kept under ``refs/agentparallels-keep/<job>/`` in the
worker's clone cache (never in the user's repository), so that after a rollback, which deletes
the job's refs, a resumed run still finds them; they are dropped when the job publishes, or by
a worker's garbage collection after :data:`activities._git.KEEP_FOR_S`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import git

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core.models import (
    SCRATCH_NAMESPACE,
    JobRef,
    Shard,
    ShardRef,
    ShardResult,
    files_digest,
)
from agentparallels.core.progress_log import (
    LOG_FILE,
    JobLog,
    LoggedJob,
    LoggedShard,
    OpenLogInput,
    ShardDoneInput,
    ShardEntry,
    log_ref,
)

WRITE_ATTEMPTS = 20
"""Concurrent writers (shards finishing at once) retry this often on a moved log."""


def _read(repo: Path, sha: str) -> JobLog:
    return JobLog.model_validate_json(_git.run(repo, "show", f"{sha}:{LOG_FILE}"))


def _commit(cache: Path, job: JobRef, log: JobLog, parent: str | None) -> str:
    """A commit holding ``log`` as its only file, on top of ``parent``. Same input, same id."""
    blob = _git.run_with_input(
        cache, log.model_dump_json(indent=1).encode(), "hash-object", "-w", "--stdin"
    )
    tree = _git.run_with_input(cache, f"100644 blob {blob}\t{LOG_FILE}\n".encode(), "mktree")
    message = f"progress of {job.job_id}\n\n{_git.JOB_TRAILER}: {job.job_id}"
    parents = ["-p", parent] if parent else []
    return _git.run(
        cache, "commit-tree", tree, *parents, "-m", message, env=_git.commit_env(job.timestamp)
    )


def _update(job: JobRef, change: Callable[[JobLog | None], JobLog]) -> None:
    """Read the log, apply ``change``, write it back if it changed; again if another writer
    moved the log in between."""
    cache = _git.cached_repo(job.repository)
    ref = log_ref(job.job_id)
    for attempt in range(WRITE_ATTEMPTS):
        current = _git.remote_ref(job.repository, ref)
        old = None
        if current is not None:
            _git.ensure_commit(cache, job.repository, current)
            old = _read(cache, current)
        new = change(old)
        if new == old:
            return
        commit = _commit(cache, job, new, current)
        try:
            _git.push(cache, job.repository, [(ref, commit, current)])
            return
        except git.GitCommandError:
            if attempt == WRITE_ATTEMPTS - 1 or _git.remote_ref(job.repository, ref) == current:
                raise  # not a concurrent writer: a real failure


def _adopt(cache: Path, job: JobRef, shard: Shard, result: ShardResult) -> bool:
    """Take ``result`` as this run's result of ``shard`` if it still holds: it was made for
    exactly the shard's files (a later run can pack the files into other shards under the
    same names: a result of a smaller shard would leave the rest unedited), its head is in
    reach (this cache, or by id in the repository), descends from the base, and changes
    exactly the files it reports. Its branch is then set to that head. A result that does not
    say which files it was made for (from before that was recorded) is not taken over."""
    files = set(result.files_changed)
    if result.name != shard.name or result.files_digest != files_digest(shard.files):
        return False
    if not files <= set(shard.files):
        return False
    if not files:
        return result.head == job.base_commit
    try:
        _git.ensure_commit(cache, job.repository, result.head)
        _git.run(cache, "merge-base", "--is-ancestor", job.base_commit, result.head)
        changed = _git.run(
            cache, "diff", "--name-only", "--no-renames", "-z", job.base_commit, result.head
        )
    except git.GitCommandError:
        return False
    if {p for p in changed.split("\0") if p} != files:
        return False
    ref = ShardRef(job=job, name=shard.name).ref
    current = _git.remote_ref(job.repository, ref)
    if current != result.head:
        _git.push(cache, job.repository, [(ref, result.head, current)])
    return True


@implements(steps.OPEN_LOG)
def open_log(inp: OpenLogInput) -> dict[str, ShardResult]:
    """Start the run's progress log: take over every shard that an earlier run of the job
    finished (recorded in this job's log, or offered from a failed run's history) and that
    still holds, and record the plan with those shards done. Returns the shards taken over."""
    job = inp.job
    cache = _git.cached_repo(job.repository)
    adopted: dict[str, ShardResult] = {}

    def start(old: JobLog | None) -> JobLog:
        recorded = old.done() if old is not None and old.base_commit == job.base_commit else {}
        offers = {**inp.offered, **recorded}
        adopted.clear()
        for shard in inp.shards:
            offer = offers.get(shard.name)
            if offer is not None and _adopt(cache, job, shard, offer):
                adopted[shard.name] = offer
        entries = tuple(
            ShardEntry(
                name=s.name, label=s.label, files_total=len(s.files), result=adopted.get(s.name)
            )
            for s in inp.shards
        )
        return JobLog(
            job_id=job.job_id,
            repository=job.repository,
            base_commit=job.base_commit,
            files_total=inp.files_total,
            shards=entries,
        )

    _update(job, start)
    for name, result in adopted.items():
        if result.files_changed:
            _git.keep(cache, f"{job.job_id}/{name}", result.head)
    return dict(adopted)


@implements(steps.RECORD_SHARD)
def record_shard(inp: ShardDoneInput) -> None:
    """Record a finished shard in the log, and keep its result commit in this worker's cache."""
    job, result = inp.job, inp.result
    if result.files_changed:
        cache = _git.cached_repo(job.repository)
        _git.ensure_commit(cache, job.repository, result.head)
        _git.keep(cache, f"{job.job_id}/{result.name}", result.head)

    def add(old: JobLog | None) -> JobLog:
        base = old or JobLog(
            job_id=job.job_id, repository=job.repository, base_commit=job.base_commit
        )
        return base.with_result(result)

    _update(job, add)


def read(repository: str, job_id: str) -> LoggedJob | None:
    """What ``repository`` holds of the job: its progress log, how far each shard's branch
    got, and its published branch. None when there is no log."""
    refs = _git.remote_refs(repository, f"{SCRATCH_NAMESPACE}/{job_id}/*")
    sha = refs.get(log_ref(job_id))
    if sha is None:
        return None
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, sha)
    log = _read(cache, sha)
    shards = []
    for entry in log.shards:
        branch = refs.get(ShardRef(job=_job(log), name=entry.name).ref)
        if entry.result is not None:
            committed = len(entry.result.files_changed)
        elif branch is not None:
            _git.ensure_commit(cache, repository, branch)
            messages = _git.run(cache, "log", "--format=%B%x00", f"{log.base_commit}..{branch}")
            committed = sum(
                1 for m in messages.split("\0") if _git.trailer(m.strip(), _git.EDIT_TRAILER)
            )
        else:
            committed = 0
        shards.append(LoggedShard(entry=entry, committed=committed, branch=branch))
    published = _git.remote_ref(repository, f"refs/heads/{_job(log).branch}")
    return LoggedJob(log=log, shards=tuple(shards), published=published)


def _job(log: JobLog) -> JobRef:
    return JobRef(
        job_id=log.job_id, repository=log.repository, base_commit=log.base_commit, timestamp=0
    )


__all__ = ["WRITE_ATTEMPTS", "open_log", "read", "record_shard"]
