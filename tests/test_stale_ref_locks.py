"""A push killed mid-update leaves a ref lock in the job's repository (the worker's process
group takes the receiving git with it). Every later push of that ref failed, the job failed and
its rollback could not remove its scratch refs (seen in `make chaos`). A push clears such a lock
when it is stale and the ref is one of the project's own; never a fresh lock, never another ref.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import git
import pytest

from agentparallels.activities import _git
from tests.support.repos import make_repo

REF = "refs/agentparallels/job-1/progress"


def _setup(tmp_path: Path) -> tuple[Path, Path, str]:
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    clone = tmp_path / "clone.git"
    _git.run(tmp_path, "clone", "--quiet", "--bare", str(repo), str(clone))
    head = _git.run(clone, "rev-parse", "HEAD")
    return repo, clone, head


def _lock(repo: Path, ref: str, age_s: float) -> Path:
    lock = repo / ".git" / f"{ref}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def test_a_stale_lock_of_a_scratch_ref_is_cleared_and_the_push_lands(tmp_path: Path) -> None:
    repo, clone, head = _setup(tmp_path)
    lock = _lock(repo, REF, age_s=_git.STALE_LOCK_S + 50)
    _git.push(clone, str(repo), [(REF, head, None)])
    assert not lock.exists()
    assert _git.run(repo, "rev-parse", REF) == head


def test_a_fresh_lock_is_left_to_the_push_in_flight(tmp_path: Path) -> None:
    repo, clone, head = _setup(tmp_path)
    lock = _lock(repo, REF, age_s=0)
    with pytest.raises(git.GitCommandError, match="File exists"):
        _git.push(clone, str(repo), [(REF, head, None)])
    assert lock.exists()


def test_a_stale_lock_of_the_users_own_branch_is_never_touched(tmp_path: Path) -> None:
    repo, clone, head = _setup(tmp_path)
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env = {**os.environ, **who, "GIT_COMMITTER_EMAIL": "t@t"}
    new = _git.run(clone, "commit-tree", f"{head}^{{tree}}", "-p", head, "-m", "x", env=env)
    _git.run(repo, "branch", "feature")
    lock = _lock(repo, "refs/heads/feature", age_s=_git.STALE_LOCK_S + 50)
    with pytest.raises(git.GitCommandError, match="File exists"):
        _git.push(clone, str(repo), [("refs/heads/feature", new, head)])
    assert lock.exists()
