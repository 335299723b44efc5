"""gather_bounded: item order, at most ``limit`` at once, the first failure cancels the rest."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import CancelledError
    from temporalio.worker import Worker

    from agentparallels.workflows.fanout import gather_bounded

CALLS: list[str] = []
TWO_RUNNING = asyncio.Event()


@activity.defn(name="test.fanout.record")
async def record(name: str) -> str:
    CALLS.append(name)
    if name.startswith("crash"):
        raise ApplicationError(f"{name} refused", non_retryable=True)
    if sum(c.endswith("started") for c in CALLS) == 2:
        TWO_RUNNING.set()
    return name.upper()


def run(name: str):  # noqa: ANN201 - the activity's result
    return workflow.execute_activity(record, name, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="test.fanout.Peak")
class PeakWorkflow:
    @workflow.run
    async def run(self, n: int, limit: int) -> list:
        """Run ``n`` activities through ``gather_bounded``; return [results, in-flight peak]."""
        running = peak = 0

        async def one(i: int) -> str:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            result = await run(f"item {i}")
            running -= 1
            return result

        results = await gather_bounded([lambda i=i: one(i) for i in range(n)], limit)
        return [results, peak]


@workflow.defn(name="test.fanout.Order")
class OrderWorkflow:
    @workflow.run
    async def run(self, n: int) -> list[list[int]]:
        """Items finish in reverse order; return [results, order finished]."""
        turn, finished = n - 1, []

        async def one(i: int) -> int:
            nonlocal turn
            await workflow.wait_condition(lambda: turn == i)
            finished.append(i)
            turn -= 1
            return i * 10

        return [await gather_bounded([lambda i=i: one(i) for i in range(n)], n), finished]


@workflow.defn(name="test.fanout.FirstFailure")
class FirstFailureWorkflow:
    @workflow.run
    async def run(self, n: int, limit: int, crash: int) -> list[str]:
        """Item ``crash`` fails; the others wait forever, cleaning up when cancelled."""
        events: list[str] = []

        async def one(i: int) -> None:
            events.append(f"{i} started")
            if i == crash:
                await run(f"crash {i}")
            try:
                await workflow.wait_condition(lambda: False)
            except asyncio.CancelledError:
                events.append(f"{i} cancelled")
                events.append(await run(f"clean up {i}"))
                raise

        try:
            await gather_bounded([lambda i=i: one(i) for i in range(n)], limit)
        except ActivityError as err:
            events.append(f"raised: {err.cause}")
        return events


@workflow.defn(name="test.fanout.Cancelled")
class CancelledWorkflow:
    @workflow.run
    async def run(self) -> None:
        """Three items, two at a time, each waits forever; cancelled, each running one cleans up."""

        async def one(i: int) -> None:
            try:
                await run(f"{i} started")
                await workflow.wait_condition(lambda: False)
            except BaseException:
                await run(f"clean up {i}")
                raise

        try:
            await gather_bounded([lambda i=i: one(i) for i in range(3)], 2)
        except asyncio.CancelledError as err:
            await run(f"gather raised {type(err).__name__}")
            raise


def worker(client: Client, task_queue: str) -> Worker:
    workflows = [PeakWorkflow, OrderWorkflow, FirstFailureWorkflow, CancelledWorkflow]
    CALLS.clear()
    TWO_RUNNING.clear()
    return Worker(client, task_queue=task_queue, workflows=workflows, activities=[record])


async def execute(client: Client, task_queue: str, wf, *args):  # noqa: ANN001, ANN002, ANN201
    async with worker(client, task_queue):
        return await client.execute_workflow(
            wf, args=args, id=f"{task_queue}-wf", task_queue=task_queue
        )


@pytest.mark.parametrize(("n", "limit", "peak"), [(5, 2, 2), (3, 1, 1), (3, 8, 3)])
async def test_in_flight_never_exceeds_limit(
    client: Client, task_queue: str, n: int, limit: int, peak: int
) -> None:
    """At most ``limit`` pieces of work are in flight, and that many are used."""
    results = await execute(client, task_queue, PeakWorkflow.run, n, limit)
    assert results == [[f"ITEM {i}" for i in range(n)], peak]
    assert sorted(CALLS) == [f"item {i}" for i in range(n)]


async def test_results_come_in_item_order(client: Client, task_queue: str) -> None:
    """Results follow the items' order even when the work finishes in reverse."""
    results = await execute(client, task_queue, OrderWorkflow.run, 4)
    assert results == [[0, 10, 20, 30], [3, 2, 1, 0]]


async def test_first_failure_cancels_running_work_and_is_raised(
    client: Client, task_queue: str
) -> None:
    """A failure cancels the work still running, waits for its clean-up, then is raised."""
    assert await execute(client, task_queue, FirstFailureWorkflow.run, 2, 2, 1) == [
        *["0 started", "1 started", "0 cancelled", "CLEAN UP 0"],
        "raised: crash 1 refused",
    ]


async def test_first_failure_never_starts_pending_work(client: Client, task_queue: str) -> None:
    """Work still waiting for a slot when another fails is never started."""
    assert await execute(client, task_queue, FirstFailureWorkflow.run, 3, 1, 0) == [
        *["0 started", "raised: crash 0 refused"]
    ]


async def test_cancelling_the_caller_cancels_all_work(client: Client, task_queue: str) -> None:
    """A cancelled caller cancels the running work, waits for its clean-up, then re-raises."""
    async with worker(client, task_queue):
        handle = await client.start_workflow(
            CancelledWorkflow.run, id=f"{task_queue}-wf", task_queue=task_queue
        )
        await TWO_RUNNING.wait()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert sorted(CALLS[:2]) == ["0 started", "1 started"]
    assert sorted(CALLS[2:4]) == ["clean up 0", "clean up 1"]
    assert CALLS[4:] == ["gather raised CancelledError"]


@pytest.mark.parametrize("limit", [0, -3])
async def test_limit_below_one_is_refused(limit: int) -> None:
    """A limit under 1 is a ValueError, even with no work to run."""
    with pytest.raises(ValueError, match="^limit must be at least 1$"):
        await gather_bounded([], limit)
