"""A worker killed with SIGKILL mid-job: another worker finishes the job, with no duplicated
commits and the same result as an uninterrupted run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from agentparallels.core.models import CommandEdit, Limits, Progress, RefactorInput
from tests.support.repos import commits_touching, git, make_repo, start_job

ROOT = Path(__file__).resolve().parents[1]


def repo_with(path: Path) -> Path:
    files = {}
    for p in range(3):
        files[f"mod{p}/__init__.py"] = ""
        for m in range(4):
            files[f"mod{p}/f{m}.py"] = f"VALUE_{p}_{m} = {p * 10 + m}\n"
    return make_repo(path, files)


def job_for(repo: Path) -> RefactorInput:
    # Slow enough per file that the kill lands mid-job.
    return RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="sleep 0.3; sed -i 's/VALUE_/CONST_/' {file}"),
        limits=Limits(parallel=2, max_files_per_shard=2),
    )


def spawn_worker(env: WorkflowEnvironment, task_queue: str, log: Path) -> subprocess.Popen:
    """A worker in its own process, as a user would start it, logging to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--task-queue", task_queue],
            env={**os.environ, "TEMPORAL_ADDRESS": env.client.service_client.config.target_host},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def start_worker(env: WorkflowEnvironment, task_queue: str, log: Path) -> subprocess.Popen:
    """Spawn a worker and return once it polls."""
    proc = spawn_worker(env, task_queue, log)
    while "worker polling task queue" not in log.read_text():  # noqa: ASYNC110
        assert proc.poll() is None, log.read_text()
        await asyncio.sleep(0.05)
    return proc


async def files_done(client: Client, job_id: str) -> int:
    handle = client.get_workflow_handle(job_id)
    try:
        progress = await handle.query("progress", result_type=Progress)
    except Exception:  # not picked up yet
        return 0
    return progress.files_done


@pytest.mark.slow
async def test_killed_worker_job_finishes_on_another_worker(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """SIGKILL one worker after a third of the files: a second worker completes the job; every
    file has exactly one commit; the tree equals an uninterrupted run's; nothing is left over."""
    client = env.client
    repo = repo_with(tmp_path / "repo")
    first = await start_worker(env, task_queue, tmp_path / "first.log")
    handle = await start_job(client, task_queue, job_for(repo))
    try:
        async with asyncio.timeout(120):  # a job that fails early must not hang the suite
            while await files_done(client, handle.id) < 4:  # noqa: ASYNC110 - polled remotely
                await asyncio.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = await start_worker(env, task_queue, tmp_path / "second.log")
    try:
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait()

    reference_repo = repo_with(tmp_path / "reference")
    other_queue = f"{task_queue}-reference"
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=other_queue)):
        reference = await (await start_job(client, other_queue, job_for(reference_repo))).result()

    assert len(result.files_changed) == 12
    assert result.files_changed == reference.files_changed
    branch = f"agentparallels/{handle.id}"
    assert git(repo, "rev-parse", f"{branch}^{{tree}}") == git(
        reference_repo, "rev-parse", f"{reference.branch}^{{tree}}"
    )
    for path in result.files_changed:
        assert commits_touching(repo, branch, path) == 1
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    assert not (cache_dir / "worktrees" / handle.id).exists()
    for clone in (cache_dir / "repos").glob("*.git"):
        assert len(git(clone, "worktree", "list").splitlines()) == 1  # the bare clone only
