"""Which task queues have workers: the look-up behind capability routing's fail-fast dispatch."""

from __future__ import annotations

import asyncio
import time

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core.messages import PollersInput, QueuePollers

POLL_EVERY_S = 0.2
FRESH_S = 90.0
"""A worker counts as serving a queue if it polled it this recently, in seconds: a live one
polls again at least every minute (the server's long poll), while the server lists a poller
that went away for five minutes."""


async def pollers_of(
    client: Client,
    queue: str,
    kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
) -> int:
    """Workers (poller identities) that polled ``queue``'s tasks of ``kind`` within
    ``FRESH_S``."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        )
    )
    now = time.time()
    return len(
        {p.identity for p in response.pollers if now - p.last_access_time.ToSeconds() < FRESH_S}
    )


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


__all__ = ["FRESH_S", "POLL_EVERY_S", "pollers", "pollers_of"]
