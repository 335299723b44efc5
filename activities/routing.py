"""Which task queues have workers: the look-up behind capability routing's fail-fast dispatch."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType

from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core._value import Value
from agentparallels.queues import pollers_of

POLL_EVERY_S = 0.2


class PollersInput(Value):
    task_queues: tuple[str, ...]
    grace_s: float = 2.0
    """Keep looking this long, in seconds, for queues without pollers (a worker starting up)."""
    activity: bool = False
    """Count the pollers of activity tasks (workers that only run activities, such as model
    calls) instead of workflow tasks."""


class QueuePollers(Value):
    task_queue: str
    workflow_pollers: int = 0
    """Workers (poller identities) the server has seen polling its workflow tasks lately."""
    activity_pollers: int = 0
    """The same for its activity tasks (looked at when asked)."""


@implements(steps.POLLERS)
async def pollers(inp: PollersInput) -> tuple[QueuePollers, ...]:
    """Pollers of each queue, looking again for up to ``grace_s`` while some queue has none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + inp.grace_s
    if inp.activity:
        kind, field = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, "activity_pollers"
    else:
        kind, field = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "workflow_pollers"
    while True:
        counts = [await pollers_of(activity.client(), q, kind) for q in inp.task_queues]
        if all(counts) or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL_EVERY_S)
    return tuple(
        QueuePollers.model_validate({"task_queue": q, field: n})
        for q, n in zip(inp.task_queues, counts, strict=True)
    )
