"""Backpressure and caps: model calls rate-limited per queue by the worker, iteration caps."""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client
    from temporalio.exceptions import ApplicationError

    from agentparallels import worker
    from agentparallels.core.errors import ITERATION_CAP
    from agentparallels.core.llm import Message, ModelRequest
    from agentparallels.testing.fake_llm import FakeLLM
    from agentparallels.workflows.circuit_breaker import IterationCap
    from agentparallels.workflows.model_step import ModelSteps
    from agentparallels.workflows.routing import MODEL_CAPABILITY, capability_queue

CALLS = 4


@workflow.defn(name="test.backpressure.Burst")
class BurstWorkflow:
    @workflow.run
    async def run(self, base_url: str) -> int:
        """``CALLS`` model calls at once, on the model-call queue of this workflow's queue."""
        queue = capability_queue(workflow.info().task_queue, MODEL_CAPABILITY)
        steps = ModelSteps(task_queue=queue)
        request = ModelRequest(
            model="openai:fake",
            base_url=base_url,
            messages=(Message(role="user", content="hi"),),
            max_tokens=8,
        )
        answers = await asyncio.gather(*(steps.ask(request) for _ in range(CALLS)))
        return len(answers)


async def burst(client: Client, task_queue: str, rate: float | None) -> tuple[float, set[str]]:
    """Run the burst on a worker with ``rate`` model calls per second; the seconds between the
    first and the last call's start, and the queues the calls were scheduled on."""
    options = worker.WorkerOptions(task_queue=task_queue, model_calls_per_second=rate)
    with FakeLLM(default={"content": "ok"}) as fake:
        async with worker.build_worker(client, options, workflow_classes=[BurstWorkflow]):
            handle = await client.start_workflow(
                BurstWorkflow.run,
                fake.openai_base_url,
                id=f"{task_queue}-burst",
                task_queue=task_queue,
            )
            assert await asyncio.wait_for(handle.result(), 60) == CALLS
    events = (await handle.fetch_history()).events
    started = [
        e.event_time.ToDatetime()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    queues = {
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return (max(started) - min(started)).total_seconds(), queues


@pytest.mark.slow
async def test_model_calls_are_rate_limited_on_their_own_queue(
    client: Client, task_queue: str
) -> None:
    """Four model calls issued at once, with --model-calls-per-second 2: they run on
    <queue>.model, and their starts are spread over at least 1 s (the server's bucket may let
    the first two through together); without a limit they are not held back."""
    limited, queues = await burst(client, task_queue, 2.0)
    assert queues == {f"{task_queue}.model"}
    assert limited >= 1.0, limited
    unlimited, _ = await burst(client, f"{task_queue}-free", None)
    assert unlimited < limited, (unlimited, limited)


def test_iteration_cap_counts_and_then_explains() -> None:
    """tick() numbers the iterations; one past the cap raises, naming the loop and why."""
    cap = IterationCap(3, "review of src/app.py")
    assert [cap.tick() for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ApplicationError) as stopped:
        cap.tick("the critic still asks for tests")
    assert stopped.value.type == ITERATION_CAP and stopped.value.non_retryable
    assert stopped.value.message == (
        "review of src/app.py stopped after 3 iterations, its cap: the critic still asks for tests"
    )


@pytest.mark.parametrize("limit", [0, -1])
def test_iteration_cap_below_one_is_refused(limit: int) -> None:
    """A cap under 1 is a ValueError."""
    with pytest.raises(ValueError, match="^limit must be at least 1$"):
        IterationCap(limit)
