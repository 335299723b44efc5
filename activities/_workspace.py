"""Where a job's worktrees live in this worker's cache."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from activities import _git


def worktrees_dir(job_id: str) -> Path:
    return _git.cache_root() / "worktrees" / re.sub(r"[^A-Za-z0-9_.-]+", "_", job_id)


def worktree(repository: str, job_id: str, name: str, sha: str) -> Path:
    """The job's worktree ``name`` on this worker, clean and at ``sha``; made if missing.

    A worktree is known clean, and reused as it is, when it is at ``sha`` and no step was
    interrupted while editing it (see :func:`editing`); otherwise it is reset.
    """
    path = worktrees_dir(job_id) / name
    if _git.head_of(path) == sha and not _dirty_mark(path).exists():
        return path
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, sha)
    _git.worktree(cache, path, sha)
    _dirty_mark(path).unlink(missing_ok=True)
    return path


def _dirty_mark(path: Path) -> Path:
    return path.with_name(f".{path.name}.editing")


@contextmanager
def editing(repository: str, job_id: str, name: str, sha: str) -> Iterator[Path]:
    """The worktree, marked as being edited until the block ends without an exception (the
    block must leave it clean); a worktree left marked is reset before its next use."""
    path = worktree(repository, job_id, name, sha)
    mark = _dirty_mark(path)
    mark.touch()
    yield path
    mark.unlink()


@contextmanager
def scratch_worktree(repository: str, job_id: str, name: str, sha: str) -> Iterator[Path]:
    """A worktree at ``sha`` for the duration of one step, removed afterwards."""
    try:
        yield worktree(repository, job_id, name, sha)
    finally:
        remove_worktree(repository, job_id, name)


def remove_worktree(repository: str, job_id: str, name: str | None = None) -> None:
    """Remove the job's worktree ``name`` (all of the job's worktrees when None)."""
    folder = worktrees_dir(job_id)
    _git.remove_worktrees(_git.cached_repo(repository), folder / name if name else folder)


def job_folders() -> list[Path]:
    """This worker's folders of jobs' worktrees, one per job (named by :func:`worktrees_dir`)."""
    root = _git.cache_root() / "worktrees"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def collect_garbage(max_age_s: float = 24 * 3600, ended: Iterable[Path] = ()) -> list[Path]:
    """Remove this worker's worktrees of jobs untouched for ``max_age_s`` (a worker that died
    mid-job leaves its worktrees behind; the job itself finished elsewhere) and of the ``ended``
    job folders, and the commits it kept for resuming jobs older than ``_git.KEEP_FOR_S``.
    Returns the worktrees removed."""
    import shutil
    import time

    root = _git.cache_root() / "worktrees"
    cutoff = time.time() - max_age_s
    jobs = root.iterdir() if root.is_dir() else iter(())
    stale = [job for job in jobs if job.is_dir() and job.stat().st_mtime < cutoff]
    stale += [job for job in ended if job not in stale]
    for job in stale:
        shutil.rmtree(job, ignore_errors=True)
    repos = _git.cache_root() / "repos"
    for cache in repos.glob("*.git") if repos.is_dir() else []:
        if not (cache / "HEAD").exists():
            continue
        if stale:
            with _git.locked(cache.with_suffix(".lock")):
                _git.run(cache, "worktree", "prune")
        _git.drop_kept(cache, older_than=int(time.time() - _git.KEEP_FOR_S))
    return stale
