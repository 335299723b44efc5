"""Which task queues have workers: the look-up behind capability routing's fail-fast dispatch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.common import RetryPolicy

from activities._defn import defn
from agentparallels._value import Value

POLL_EVERY_S = 0.2


class PollersInput(Value):
    task_queues: tuple[str, ...]
    grace_s: float = 2.0
    """Keep looking this long, in seconds, for queues without pollers (a worker starting up)."""


class QueuePollers(Value):
    task_queue: str
    workflow_pollers: int
    """Workers (poller identities) the server has seen polling its workflow tasks lately."""


async def _count(task_queue: str) -> int:
    client = activity.client()
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len({p.identity for p in response.pollers})


@defn(
    "route.pollers",
    start_to_close=timedelta(seconds=90),
    heartbeat=None,
    retry=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200)),
)
async def pollers(inp: PollersInput) -> tuple[QueuePollers, ...]:
    """Pollers of each queue, looking again for up to ``grace_s`` while some queue has none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + inp.grace_s
    while True:
        counts = [await _count(q) for q in inp.task_queues]
        if all(counts) or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL_EVERY_S)
    return tuple(
        QueuePollers(task_queue=q, workflow_pollers=n)
        for q, n in zip(inp.task_queues, counts, strict=True)
    )
