"""Per-file edit commands run in the shard's worktree, limited in time and in what they touch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from agentparallels.core.errors import BREAKER_OPEN
from agentparallels.core.models import CommandEdit, Limits, RefactorInput
from tests.support.repos import git, make_repo, snapshot, start_job

ROOT = Path(__file__).resolve().parents[1]


async def failure_of(client: Client, task_queue: str, job: RefactorInput) -> ApplicationError:
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def test_command_over_its_time_limit_is_killed_and_counted(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A command that runs past --timeout is killed, each time, until the breaker opens."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="sleep 60; touch {file}"),
        limits=Limits(command_timeout_s=0.5),
    )
    cause = await failure_of(client, task_queue, job)
    assert cause.type == BREAKER_OPEN
    assert "`sleep 60; touch a.py` failed with:\n[killed after 0.5s]" in cause.message
    assert snapshot(repo) == before


async def test_command_that_changes_other_files_is_refused(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """An edit of one file that also changes another of its shard is a failed attempt, named
    as such (a change outside the shard is a bulkhead violation: tests/test_bulkhead.py)."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", "b.py": "y = 2\n"})
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(
            command="echo '# edited' >> {file}; echo '# stray' >> b.py", files=("a.py", "b.py")
        ),
        limits=Limits(batch_files=1),
    )
    cause = await failure_of(client, task_queue, job)
    assert "changed files outside its target a.py: b.py" in cause.message
    assert snapshot(repo) == before


async def test_command_runs_in_the_worktree_not_the_repository(
    client: Client, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """The command's working directory is the shard's worktree in the worker's cache."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command='echo "# $(pwd)" >> {file}'))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()
    assert result.files_changed == ("a.py",)
    where = git(repo, "show", f"{result.branch}:a.py").splitlines()[1]
    assert where.startswith(f"# {cache_dir / 'worktrees'}")
    assert (repo / "a.py").read_text() == "x = 1\n"


def test_worker_shuts_down_cleanly_on_sigterm(env: WorkflowEnvironment) -> None:
    """SIGTERM makes a worker stop polling, let running work finish and exit 0."""
    address = env.client.service_client.config.target_host  # never the default port's server
    with subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), "--task-queue", "idle"],
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert "worker polling task queue 'idle'" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    assert "shutting down: letting running activities finish" in rest
