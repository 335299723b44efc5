"""Scale-out under faults: many jobs on several worker processes while workers are killed, and a
job that outlives a restart of the Temporal server itself.

Both are slow fault-injection tests (marked ``slow``); CI runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from agentparallels import devserver
from agentparallels.core.models import CommandEdit, Limits, Progress, RefactorInput, RefactorResult
from agentparallels.plugin import AgentParallelsPlugin
from tests.support.ports import free_port
from tests.support.repos import commits_touching, git, make_repo, start_job
from tests.support.workers import WorkerProcess

MODULES, FILES_PER_MODULE = 2, 3


def small_repo(path: Path, tag: int) -> Path:
    files = {}
    for m in range(MODULES):
        files[f"pkg{m}/__init__.py"] = ""
        for f in range(FILES_PER_MODULE):
            files[f"pkg{m}/f{f}.py"] = f"VALUE_{tag}_{m}_{f} = {tag * 100 + m * 10 + f}\n"
    return make_repo(path, files)


def expected_tree(path: Path, tag: int) -> dict[str, str]:
    """What a correct run leaves on the job branch for ``small_repo(path, tag)``."""
    tree = {}
    for m in range(MODULES):
        tree[f"pkg{m}/__init__.py"] = ""
        for f in range(FILES_PER_MODULE):
            tree[f"pkg{m}/f{f}.py"] = f"CONST_{tag}_{m}_{f} = {tag * 100 + m * 10 + f}\n"
    return tree


def job_for(repo: Path, *, pause_s: float = 0.2) -> RefactorInput:
    # Slow enough per file that kills land mid-activity.
    return RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command=f"sleep {pause_s}; sed -i 's/VALUE_/CONST_/' {{file}}"),
        limits=Limits(parallel=2, max_files_per_shard=FILES_PER_MODULE, batch_files=1),
    )


def check_job(repo: Path, tag: int, result: RefactorResult, cache_dir: Path, job_id: str) -> None:
    """The branch holds exactly the expected files, each changed by one commit; nothing of the
    job is left in the repository or the workers' cache."""
    tree = expected_tree(repo, tag)
    changed = sorted(p for p in tree if Path(p).name.startswith("f"))
    assert sorted(result.files_changed) == changed
    branch = f"agentparallels/{job_id}"
    for path, text in tree.items():
        assert git(repo, "show", f"{branch}:{path}") == text.rstrip("\n")
    for path in changed:
        assert commits_touching(repo, branch, path) == 1, path
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    assert not (cache_dir / "worktrees" / job_id).exists()


async def files_done(client: Client, handles: list[WorkflowHandle]) -> int:
    total = 0
    for handle in handles:
        try:
            progress = await handle.query("progress", result_type=Progress)
        except Exception:  # not picked up yet, or between workers
            continue
        total += progress.files_done
    return total


@pytest.mark.slow
async def test_twenty_jobs_on_three_workers_survive_repeated_kills(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """Three worker processes serve 20 concurrent jobs; every few seconds one worker is killed
    with SIGKILL and replaced. Every job completes with the right tree, one commit per file, and
    no leftover refs or worktrees."""
    client = env.client
    address = client.service_client.config.target_host
    jobs = 20
    repos = [small_repo(tmp_path / f"repo{i}", i) for i in range(jobs)]
    spawned = 0

    async def new_worker() -> WorkerProcess:
        nonlocal spawned
        spawned += 1
        return await WorkerProcess.at(
            address, task_queue, tmp_path / f"worker{spawned}.log"
        ).polling()

    workers = [await new_worker() for _ in range(3)]
    handles = [
        await start_job(
            client, task_queue, job_for(repo, pause_s=1.5), job_id=f"scale-{i}-{task_queue[-8:]}"
        )
        for i, repo in enumerate(repos)
    ]
    outcome = asyncio.gather(*(h.result() for h in handles))
    kills = 0
    try:
        # One kill every two seconds while the jobs run, each victim replaced at once.
        while kills < 4 and not outcome.done():
            await asyncio.wait({outcome}, timeout=2)
            if outcome.done():
                break
            victim = workers.pop(kills % len(workers))
            victim.kill()
            kills += 1
            workers.append(await new_worker())
        results = await asyncio.wait_for(outcome, 300)
    finally:
        for w in workers:
            w.stop()
    assert kills >= 3, "the jobs finished before the faults could be injected"
    for i, (repo, handle, result) in enumerate(zip(repos, handles, results, strict=True)):
        check_job(repo, i, result, cache_dir, handle.id)
    for clone in (cache_dir / "repos").glob("*.git"):
        assert len(git(clone, "worktree", "list").splitlines()) == 1  # the bare clone only


@asynccontextmanager
async def own_server(opts: devserver.ServerOptions) -> AsyncIterator[subprocess.Popen]:
    proc = devserver.spawn(opts)
    try:
        await devserver.wait_healthy(opts, proc)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


async def result_across_outage(handle: WorkflowHandle, timeout_s: float) -> RefactorResult:
    """The job's result, waiting through the server being away."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                return await handle.result()
            except RPCError:  # the server is restarting
                await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_job_completes_across_a_server_restart(
    task_queue: str, tmp_path: Path, cache_dir: Path, blob_dir: Path
) -> None:
    """The dev server is stopped mid-job and started again on the same database: the worker
    reconnects and the job completes with the right result."""
    opts = devserver.ServerOptions(
        db=tmp_path / "server" / "temporal.db",
        port=free_port(),
        ui_port=free_port(),
        extra_args=("--dynamic-config-value", devserver.FAST_TIMERS),
    )
    repo = small_repo(tmp_path / "repo", 7)
    async with own_server(opts) as first:
        plugin = AgentParallelsPlugin(store_dir=blob_dir)
        client = await Client.connect(opts.address, plugins=[plugin])
        w = await WorkerProcess.at(opts.address, task_queue, tmp_path / "worker.log").polling()
        try:
            handle = await start_job(client, task_queue, job_for(repo, pause_s=0.5))
            while (done := await files_done(client, [handle])) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            assert done < MODULES * FILES_PER_MODULE, "the job ended before the restart"
            os.killpg(first.pid, signal.SIGTERM)
            first.wait()
            async with own_server(opts):
                result = await result_across_outage(handle, 180)
        finally:
            w.stop()
    check_job(repo, 7, result, cache_dir, handle.id)
