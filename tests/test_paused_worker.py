"""A worker paused (SIGSTOP) mid-step for longer than the heartbeat timeout, then resumed, while
a second worker on the same cache runs the step's retry: the job succeeds and every file it
reports changed is edited on its branch, by one commit that changes exactly that file."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentparallels.activities import _git
from agentparallels.core.models import CommandEdit, Limits, RefactorInput
from tests.support.repos import commits_touching, git, make_repo, start_job
from tests.support.workers import WorkerProcess
from tests.test_overlapping_attempts import waits_for_a_lock

FILES = ("f0.py", "f1.py", "f2.py")
WAIT_S = 120.0


def gated_job(repo: Path, gate: Path) -> RefactorInput:
    """Replaces VALUE_ with CONST_ in each file. On f1.py, the check command's first run waits
    for ``gate/go-1`` (the step is then between its change check and its commit), and the edit
    command's second run waits for ``gate/go-2`` before editing (a retry that has just reset
    the worktree). Each notes in ``gate`` that it got there."""
    edit = (
        f"case {{file}} in f1.py) if [ -e {gate}/edit-1 ]; then touch {gate}/edit-2; "
        f"until [ -e {gate}/go-2 ]; do sleep 0.05; done; fi; touch {gate}/edit-1;; esac; "
        "sed -i 's/VALUE_/CONST_/' {file}"
    )
    check = (
        f"case {{file}} in f1.py) if [ ! -e {gate}/check-1 ]; then touch {gate}/check-1; "
        f"until [ -e {gate}/go-1 ]; do sleep 0.05; done; fi;; esac"
    )
    return RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command=edit),
        check_cmd=check,
        limits=Limits(batch_files=1, parallel=1, sandbox="none"),  # sandbox off: signals outside
    )


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, a look at files and processes outside this event loop."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - nothing here can set an event
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_paused_worker_and_its_retry_lose_no_edit(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The first worker stops between f1.py's change check and its commit; the server times
    its attempt out and the second worker runs the retry (which waits for the worktree, or,
    unguarded, resets it and waits before editing). The first worker resumes and finishes or
    abandons its attempt; the job succeeds with all three files edited, one commit each."""
    gate = tmp_path / "gate"
    gate.mkdir()
    repo = make_repo(tmp_path / "repo", {f: f"VALUE_{i} = {i}\n" for i, f in enumerate(FILES)})
    address = env.client.service_client.config.target_host
    first = await WorkerProcess.at(address, task_queue, tmp_path / "first.log").polling(WAIT_S)
    second = None
    try:
        handle = await start_job(env.client, task_queue, gated_job(repo, gate))
        await until(lambda: (gate / "check-1").exists())
        first.proc.send_signal(signal.SIGSTOP)  # past the heartbeat timeout: a retry starts
        second = await WorkerProcess.at(address, task_queue, tmp_path / "second.log").polling(
            WAIT_S
        )
        await until(lambda: (gate / "edit-2").exists() or waits_for_a_lock(second.proc.pid))
        (gate / "go-1").touch()
        first.proc.send_signal(signal.SIGCONT)
        shard_ref = f"refs/agentparallels/{handle.id}/shards/00-root"
        # The first attempt pushed f1.py, or gave up (cancelled) and the retry edits it.
        await until(
            lambda: (
                (gate / "edit-2").exists()
                or bool(git(repo, "for-each-ref", "--format=%(objectname)", shard_ref))
            )
        )
        (gate / "go-2").touch()
        result = await asyncio.wait_for(handle.result(), WAIT_S)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert sorted(result.files_changed) == list(FILES)
    base = git(repo, "rev-parse", "main")
    for i, path in enumerate(FILES):
        assert git(repo, "show", f"{result.branch}:{path}") == f"CONST_{i} = {i}"
        assert commits_touching(repo, result.branch, path) == 1
    for sha in git(repo, "rev-list", "--no-merges", f"{base}..{result.branch}").split():
        named = _git.trailer(git(repo, "log", "-1", "--format=%B", sha), _git.EDIT_TRAILER)
        assert git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", sha) == named
