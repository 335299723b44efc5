"""A worker never runs git anywhere but its own cache and worktrees: not in the checkout it was
started from when a worktree disappears under a step, and never a destructive command outside
its worktrees."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentparallels.activities import _git
from agentparallels.core.models import CommandEdit, Limits, RefactorInput
from tests.support.repos import git, make_repo, snapshot, start_job

ROOT = Path(__file__).resolve().parents[1]


def user_checkout(path: Path) -> Path:
    """A user's checkout mid-work: a modified tracked file, an untracked file, a virtual
    environment (ignored), all of which a stray ``reset --hard`` / ``clean -fdx`` would lose."""
    repo = make_repo(path, {"app.py": "print('v1')\n", ".gitignore": ".venv/\n"})
    (repo / "app.py").write_text("print('work in progress')\n")
    (repo / "notes.txt").write_text("not committed yet\n")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    return repo


def test_git_refuses_a_directory_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_git.run`` in a missing directory raises, and does not run in the process's own
    directory (GitPython falls back to it), which here is a checkout with work in it."""
    checkout = user_checkout(tmp_path / "checkout")
    before = snapshot(checkout)
    monkeypatch.chdir(checkout)
    gone = tmp_path / "cache" / "worktrees" / "job" / "00-root"
    with pytest.raises(_git.NotARepository, match="does not exist"):
        _git.run(gone, "clean", "--quiet", "-fdx")
    with pytest.raises(_git.NotARepository, match="does not exist"):
        _git.run_with_input(gone, b"", "hash-object", "-w", "--stdin")
    assert snapshot(checkout) == before


def test_git_does_not_look_above_the_directory_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worktree folder whose ``.git`` is gone (half removed) is not a repository: git does
    not walk up to a checkout that contains the cache."""
    checkout = user_checkout(tmp_path / "checkout")
    before = snapshot(checkout)
    half_removed = checkout / "cache" / "worktrees" / "job" / "00-root"
    half_removed.mkdir(parents=True)
    with pytest.raises(Exception, match="not a git repository"):
        _git.run(half_removed, "status", "--porcelain")
    (half_removed.parents[2]).rename(tmp_path / "moved")  # the snapshot compares files only
    assert snapshot(checkout) == before


def test_discarding_changes_refuses_anything_but_a_worktree_of_the_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    """``reset --hard`` and ``clean -fdx`` run only in a worktree under the worker's cache whose
    ``.git`` points into the cache's clones: a user's checkout is refused, untouched."""
    checkout = user_checkout(tmp_path / "checkout")
    before = snapshot(checkout)
    with pytest.raises(_git.NotARepository, match="not a worktree of this worker's cache"):
        _git.discard(checkout)
    inside = cache_dir / "worktrees" / "job" / "00-root"  # under the cache, but a checkout's
    inside.mkdir(parents=True)
    (inside / ".git").write_text(f"gitdir: {checkout / '.git'}\n")
    with pytest.raises(_git.NotARepository, match="not a worktree of this worker's cache"):
        _git.discard(inside)
    assert snapshot(checkout) == before


def spawn_worker(
    env: WorkflowEnvironment, task_queue: str, *, cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``worker.py`` in its own process, started in ``cwd`` as a user would, logging to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--task-queue", task_queue],
            cwd=cwd,
            env={**os.environ, "TEMPORAL_ADDRESS": env.client.service_client.config.target_host},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_worktree_removed_under_a_step_leaves_the_workers_checkout_alone(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A worker started inside a user's checkout runs a job whose worktree is removed while a
    step runs (as a concurrent attempt removing and re-making it would): that attempt fails,
    the retry finishes the job, and the checkout's files, index and status are as they were."""
    checkout = user_checkout(tmp_path / "checkout")
    before = snapshot(checkout)
    repo = make_repo(tmp_path / "repo", {"m0.py": "VALUE = 0\n", "m1.py": "VALUE = 1\n"})
    once = tmp_path / "removed-once"
    remove_then_edit = (
        f'if [ ! -e {once} ]; then touch {once}; rm -rf "$PWD"; fi; '
        "sed -i 's/VALUE/CONST/' {file}"
    )
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command=remove_then_edit),
        # The command removes its own worktree (which the sandbox has mounted, so cannot
        # remove) and notes that it did outside it.
        limits=Limits(sandbox="none", batch_files=2),  # sandbox off: see above
    )
    worker = spawn_worker(env, task_queue, cwd=checkout, log=tmp_path / "worker.log")
    try:
        handle = await start_job(env.client, task_queue, job)
        result = await asyncio.wait_for(handle.result(), 180)
    finally:
        worker.terminate()
        worker.wait(30)
    assert once.exists()  # the worktree was removed under the first attempt
    assert snapshot(checkout) == before
    assert sorted(result.files_changed) == ["m0.py", "m1.py"]
    for name in ("m0", "m1"):
        assert git(repo, "show", f"{result.branch}:{name}.py") == f"CONST = {name[1]}"
