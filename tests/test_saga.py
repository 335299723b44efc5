"""Saga: compensations run newest first, past failures, and to the end under cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
    from temporalio.worker import Worker

    from agentparallels.workflows.saga import Saga, shielded

CALLS: list[str] = []
STARTED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
RELEASE: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
"""``block(name)`` sets ``STARTED[name]``, then waits for the test to set ``RELEASE[name]``."""
UNDONE = ["undo c", "undo slow started", "undo slow finished", "undo slow done", "undo a"]
ROLLBACK = ["a", "slow", "c", "crash"]


@activity.defn(name="test.saga.record")
async def record(name: str) -> str:
    CALLS.append(name)
    if name in ("do crash", "undo bad"):
        raise ApplicationError(f"{name} refused", non_retryable=True)
    return name


@activity.defn(name="test.saga.block")
async def block(name: str) -> str:
    CALLS.append(f"{name} started")
    STARTED[name].set()
    await RELEASE[name].wait()
    CALLS.append(f"{name} finished")
    return name


def run(fn, name: str):  # noqa: ANN001, ANN201 - an activity function; its result
    return workflow.execute_activity(fn, name, start_to_close_timeout=timedelta(seconds=30))


async def slowly(name: str) -> None:
    """Two steps: a cancel that reached the first would stop the second."""
    await run(block, name)
    await run(record, f"{name} done")


@workflow.defn(name="test.saga.Rollback")
class RollbackWorkflow:
    @workflow.run
    async def run(self, steps: list[str]) -> list[list[str]]:
        """Do each step ("hold" blocks), registering its undo ("slow" blocks); roll back on
        failure and return [pending, errors, left], or re-raise a cancellation."""
        saga = Saga()
        try:
            for step in steps:
                await run(block if step == "hold" else record, f"do {step}")
                undo = f"undo {step}"
                saga.add(step, lambda u=undo: slowly(u) if u == "undo slow" else run(record, u))
        except BaseException as err:
            pending = saga.pending
            errors = await saga.compensate()
            if isinstance(err, ActivityError) and isinstance(err.cause, ApplicationError):
                return [pending, errors, saga.pending]
            raise
        return [saga.pending]


@workflow.defn(name="test.saga.Shielded")
class ShieldedWorkflow:
    @workflow.run
    async def run(self) -> None:
        await shielded(slowly("work"))
        await run(record, "after")


async def start(client: Client, task_queue: str, wf, *args: object):  # noqa: ANN001, ANN201
    for state in (CALLS, STARTED, RELEASE):
        state.clear()
    return await client.start_workflow(wf, *args, id=f"{task_queue}-wf", task_queue=task_queue)


def worker(client: Client, task_queue: str) -> Worker:
    wfs = [RollbackWorkflow, ShieldedWorkflow]
    return Worker(client, task_queue=task_queue, workflows=wfs, activities=[record, block])


async def cancelled_midway(  # noqa: ANN201
    client: Client, task_queue: str, name: str, *args: object, release: str = ""
):
    """Cancel the workflow while ``block(name)`` runs and wait until it has seen the cancel;
    then release ``release`` (by default ``name``); return the workflow's final status."""
    async with worker(client, task_queue):
        handle = await start(client, task_queue, *args)
        await STARTED[name].wait()
        await handle.cancel()
        await handle.query("__stack_trace")  # answered only after the cancel's workflow task
        RELEASE[release or name].set()
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return (await handle.describe()).status


async def test_failure_undoes_steps_newest_first(client: Client, task_queue: str) -> None:
    """A failed step undoes every earlier step, newest first, and empties the undo log."""
    async with worker(client, task_queue):
        handle = await start(client, task_queue, RollbackWorkflow.run, ["a", "b", "c", "crash"])
        assert await handle.result() == [["a", "b", "c"], [], []]
    assert CALLS == ["do a", "do b", "do c", "do crash", "undo c", "undo b", "undo a"]


async def test_failing_compensation_is_reported_and_the_rest_run(
    client: Client, task_queue: str
) -> None:
    """An undo that raises is returned by step name, and the older undos still run."""
    async with worker(client, task_queue):
        handle = await start(client, task_queue, RollbackWorkflow.run, ["a", "bad", "c", "crash"])
        assert await handle.result() == [["a", "bad", "c"], ["bad: undo bad refused"], []]
    assert CALLS == ["do a", "do bad", "do c", "do crash", "undo c", "undo bad", "undo a"]


async def test_cancelled_workflow_rolls_back_and_ends_cancelled(
    client: Client, task_queue: str
) -> None:
    """Cancelling mid-step runs every undo to the end, then the workflow ends cancelled."""
    steps = ["a", "slow", "c", "hold"]
    args = ("do hold", RollbackWorkflow.run, steps)
    status = await cancelled_midway(client, task_queue, *args, release="undo slow")
    assert status == WorkflowExecutionStatus.CANCELED
    assert CALLS == ["do a", "do slow", "do c", "do hold started", *UNDONE]


async def test_cancel_during_rollback_does_not_stop_it(client: Client, task_queue: str) -> None:
    """A cancel that lands while an undo is running neither stops it nor skips older undos."""
    await cancelled_midway(client, task_queue, "undo slow", RollbackWorkflow.run, ROLLBACK)
    assert CALLS == ["do a", "do slow", "do c", "do crash", *UNDONE]


async def test_cancel_during_rollback_is_honoured_after_it(client: Client, task_queue: str) -> None:
    """Once the rollback is done, a cancel that arrived during it ends the workflow cancelled."""
    status = await cancelled_midway(client, task_queue, "undo slow", RollbackWorkflow.run, ROLLBACK)
    assert status == WorkflowExecutionStatus.CANCELED


async def test_shielded_work_finishes_under_cancellation(client: Client, task_queue: str) -> None:
    """Work under ``shielded`` runs to its end although the workflow is cancelled meanwhile."""
    await cancelled_midway(client, task_queue, "work", ShieldedWorkflow.run)
    assert CALLS[:3] == ["work started", "work finished", "work done"]


async def test_shielded_honours_the_cancel_after_the_work(client: Client, task_queue: str) -> None:
    """After the shielded work, the cancel is raised: nothing further runs."""
    status = await cancelled_midway(client, task_queue, "work", ShieldedWorkflow.run)
    assert (CALLS[3:], status) == ([], WorkflowExecutionStatus.CANCELED)
