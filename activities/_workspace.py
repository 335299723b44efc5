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
    """The job's worktree ``name`` on this worker, clean and at ``sha``; made if missing."""
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, sha)
    return _git.worktree(cache, worktrees_dir(job_id) / name, sha)


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
