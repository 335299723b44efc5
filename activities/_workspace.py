"""Where a job's worktrees live in this worker's cache."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
