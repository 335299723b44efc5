"""The short version of ``make chaos``: a few jobs on three workers with separate HOMEs, one
worker killed and one paused past its heartbeat timeout, every branch compared with the plain
edit, nothing left behind.

It runs ``bench/chaos.py`` (``python -m bench.chaos``) as the user would (its own dev server
and worker processes), so it is slow (marked ``slow``); CI runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from agentparallels.core.checklist import ApprovalOptions, Decision
from agentparallels.core.models import CommandEdit, Progress, RefactorInput
from agentparallels.core.steps import HEARTBEAT
from tests.support.repos import start_job

ROOT = Path(__file__).resolve().parents[1]
WAITING = "awaiting-approval"
EDIT_STEP = "refactor.edit_files"


def chaos(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_round_with_a_kill_and_a_pause_is_clean() -> None:
    """Four jobs, one SIGKILL (worker replaced), one SIGSTOP longer than the heartbeat timeout:
    every job succeeds with the plain edit's tree, no edit committed twice, no worktree or
    scratch ref left, and the killed worker's steps are finished elsewhere."""
    doc = chaos(
        "--jobs",
        "4",
        "--rounds",
        "1",
        "--kills",
        "1",
        "--pauses",
        "1",
        "--hogs",
        "0",
        "--no-server-restart",
        "--kill-every",
        "3",
        "--seed",
        "11",
        "--recovery-goal",
        "120",  # a loaded test machine: the figure belongs to `make chaos`
    )
    (r,) = doc["rounds"]
    assert (r["kills"], r["pauses"]) == (1, 1), "the jobs ended before the faults"
    problems = {
        k: r[k]
        for k in ("wrong_trees", "failed_jobs", "duplicate_commits", "leftover_worktrees")
        + ("scratch_refs",)
        if r[k]
    }
    assert problems == {}
    assert r["succeeded"] == 4
    assert r["unrecovered_steps"] == 0
    assert doc["clean"], doc["summary"]


async def test_a_killed_workers_job_is_taken_over_within_seconds(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A job waits for approval, its workflow cached on worker A; A is killed (SIGKILL) and B
    replaces it (on the same HOME). The approval is processed by B within seconds: the
    workflow task that went to A's sticky queue moves to the shared queue after the worker's
    sticky timeout (1 s), not the SDK's default 10 s."""
    from bench.chaos import EDIT, Machine, WorkerProcess, make_repo

    address = env.client.service_client.config.target_host
    repo = make_repo(tmp_path / "repo", 0, modules=1, files=1)
    job = RefactorInput(
        repository=str(repo), edit=CommandEdit(command=EDIT), approval=ApprovalOptions()
    )
    a = await WorkerProcess(Machine(tmp_path / "a"), address, task_queue, "a").polling()
    b = None
    try:
        handle = await start_job(env.client, task_queue, job)
        async with asyncio.timeout(120):
            while (await handle.query("progress", result_type=Progress)).phase != WAITING:  # noqa: ASYNC110 - workflow state, seen by query
                await asyncio.sleep(0.1)
        a.kill()
        # On A's disk: this is about the workflow task, not about objects missing from a cache.
        b = await WorkerProcess(a.machine, address, task_queue, "b").polling()
        began = time.monotonic()
        await handle.execute_update("approve", Decision(by="tester"), result_type=str)
        took = time.monotonic() - began
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        a.stop()
        if b:
            b.stop()
    assert result.outcome == "succeeded"
    assert took < 8, f"the approval waited {took:.1f} s for the killed worker"


async def test_a_running_step_heartbeats_well_within_its_timeout(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """While an edit step runs, its heartbeats reach the server at least every 0.6 x its
    heartbeat timeout, so a briefly starved worker keeps its step (the SDK's own throttle, 0.8 x
    the timeout, left it a fifth of the timeout of slack)."""
    from bench.chaos import make_repo

    repo = make_repo(tmp_path / "repo", 0, modules=1, files=1)
    edit = CommandEdit(command="sleep 6; sed -i 's/VALUE_/CONST_/' {file}")
    beats: list[float] = []
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, RefactorInput(repository=str(repo), edit=edit))
        result = asyncio.create_task(handle.result())
        while not result.done():
            beats += [t for t in await heartbeat_times(client, handle.id) if t not in beats]
            await asyncio.wait({result}, timeout=0.1)
    assert result.result().outcome == "succeeded"
    assert len(beats) >= 3, beats
    gaps = [b - a for a, b in itertools.pairwise(sorted(beats))]
    assert max(gaps) <= 0.6 * HEARTBEAT.total_seconds(), gaps


async def heartbeat_times(client: Client, job_id: str) -> list[float]:
    """When the running edit steps of the job's shards last heartbeated."""
    try:
        job = (await client.get_workflow_handle(job_id).describe()).raw_description
        out = []
        for child in job.pending_children:
            shard = await client.get_workflow_handle(child.workflow_id).describe()
            out += [
                a.last_heartbeat_time.ToMicroseconds() / 1e6
                for a in shard.raw_description.pending_activities
                if a.activity_type.name == EDIT_STEP and a.HasField("last_heartbeat_time")
            ]
        return out
    except RPCError:  # a shard that just ended
        return []


def test_a_recovery_stops_counting_when_another_fault_takes_the_job() -> None:
    """How `make chaos` counts: a kill's recovery ends where another fault took the job up
    (its workflow task started on the next victim, or on a paused worker), and the task that
    fault lost is measured as that fault's own recovery; a task that only ran slowly on a
    live worker is nobody's."""
    from bench.chaos import Fault, LostTask, fault_of, mark_hit_again, step_key

    step = ("job/00-pkg0", "3", EDIT_STEP)
    kill_a = Fault("kill", at=100.0, worker="w3", identity="3@vm", until=100.0, steps=[step])
    kill_b = Fault("kill", at=106.3, worker="w5", identity="5@vm", until=106.3)
    # w5 took the job's next workflow task 6.13 s after the first kill, and was killed before
    # finishing it.
    on_b = LostTask("job/00-pkg0", 22, 106.13, "5@vm", timed_out=111.13, moved_on=111.73)
    slow = LostTask("job/00-pkg0", 30, 120.0, "1@vm", timed_out=125.0, moved_on=125.5)
    faults = [kill_a, kill_b]
    assert fault_of(on_b, faults) == 1
    assert fault_of(slow, faults) is None
    # The server may record a start on a killed worker after the signal (its poll was open).
    after_kill = LostTask("job/00-pkg0", 26, 106.4, "5@vm", timed_out=111.4, moved_on=112.0)
    assert fault_of(after_kill, faults) == 1
    kill_a.recovery_s, kill_a.step_done_s = [111.73 - 100.0], [5.09]
    kill_b.steps, kill_b.recovery_s = [on_b.item], [111.73 - 106.3]
    mark_hit_again(faults, [(on_b, 1)])
    assert kill_a.counted() == [6.3]
    assert kill_b.counted() == [111.73 - 106.3]

    # A paused worker takes a task it will only run after it is resumed: the pause lost it,
    # counted from the task's start for a kill that began before it.
    pause = Fault("pause", at=200.0, worker="w2", identity="2@vm", until=207.0)
    kill = Fault("kill", at=202.0, worker="w1", identity="1@vm", until=202.0, steps=[step])
    on_paused = LostTask("job/00-pkg0", 40, 206.5, "2@vm", timed_out=211.5, moved_on=212.0)
    faults = [pause, kill]
    assert fault_of(on_paused, faults) == 0
    kill.recovery_s = [10.0]
    mark_hit_again(faults, [(on_paused, 0)])
    assert kill.counted() == [4.5]
    # Without the lost task, the kill's whole recovery counts.
    mark_hit_again(faults, [])
    assert kill.counted() == [10.0]
    # The killed step's retry taken by the worker paused before the kill (seen there at
    # 206.0): the kill's recovery counts up to then.
    pause.steps, pause.seen, pause.recovery_s = [step], {step_key(step): 206.0}, [6.0]
    mark_hit_again(faults, [])
    assert kill.counted() == [4.0]
    assert pause.counted() == [6.0]  # the kill at 202 came after the pause caught nothing
