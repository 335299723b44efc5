"""Which task queue a job runs on, and whether a worker serves it.

A command that runs its job with a worker of its own (``agentparallels refactor`` without
``--no-worker``) starts the job on a queue of its own, ``<queue>.cli-<id>``, and only its
worker polls it: two such commands never take each other's steps, nor a step their
environment cannot do (another's API key, say). The job carries its queue: every child
workflow and activity of it runs there (model calls on ``<queue>.model...``, see
``workflows.credentials``). Jobs started with ``--no-worker`` or ``--detach``, or with an
explicit ``--task-queue``, run on that queue, served by ``agentparallels worker`` processes.

Commands that steer a running job (cancel, approve, reject, pause, unpause) start no worker:
they send their request to the job, whose own workers carry it out, and say so (and how to go
on) when none does within a bounded wait.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle

from agentparallels.activities.routing import pollers_of

_PRIVATE = re.compile(r"\.cli-[0-9a-f]{8}$")
WAIT_S = 15.0
"""How long, in seconds, a command waits for the job's worker to take up its request."""


def private(base: str) -> str:
    """A queue for one command's job and worker: ``<base>.cli-<random id>``."""
    return f"{base}.cli-{uuid.uuid4().hex[:8]}"


def base_of(queue: str) -> str:
    """The queue ``queue`` was made private from (itself if it is not a private one)."""
    return _PRIVATE.sub("", queue)


def how_to_serve(queue: str) -> str:
    return f"`agentparallels worker --task-queue {queue}`"


async def served(client: Client, queue: str) -> bool:
    """Whether some worker polls the workflow tasks of ``queue``."""
    return await pollers_of(client, queue) > 0


def history_length(desc: WorkflowExecutionDescription) -> int:
    return desc.raw_description.workflow_execution_info.history_length


async def taken_up(
    handle: WorkflowHandle[Any, Any],
    after: int,
    is_request: Callable[[HistoryEvent], bool],
    wait_s: float,
) -> bool:
    """Whether, within ``wait_s`` seconds, a worker started a workflow task after the first
    event past event ``after`` that ``is_request`` (or the job ended after it)."""

    async def follow() -> bool:
        requested = False
        async for event in handle.fetch_history_events(wait_new_event=True):
            if event.event_id <= after:
                continue
            if is_request(event):
                requested = True
            elif requested and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                return True
        return requested  # the history ended: the job closed

    try:
        return await asyncio.wait_for(follow(), wait_s)
    except TimeoutError:
        return False


def is_cancel_request(event: HistoryEvent) -> bool:
    return event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED


def is_signal(name: str) -> Callable[[HistoryEvent], bool]:
    def match(event: HistoryEvent) -> bool:
        return (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and event.workflow_execution_signaled_event_attributes.signal_name == name
        )

    return match


def unserved(job_id: str, queue: str, what: str, then: str = "it carries on") -> str:
    """The message for a request no worker of the job took up: ``what`` happened, and
    ``then`` once a worker serves the job's queue."""
    return (
        f"{what}, but no worker serves job {job_id}'s task queue {queue!r} (the command that "
        f"ran it may have ended): start {how_to_serve(queue)}, then {then}"
    )


__all__ = [
    "WAIT_S",
    "base_of",
    "history_length",
    "how_to_serve",
    "is_cancel_request",
    "is_signal",
    "private",
    "served",
    "taken_up",
    "unserved",
]
