"""Calling a step by its spec, with the settings declared in the spec; and keeping a cancel
request that a step outlived.

A workflow is cancelled by cancelling the task it runs in: the step it is waiting for is asked
to cancel. A step hears of that only with its next heartbeat, so it may finish anyway (the
default cancellation type waits for the step's own answer); its result is then returned and
the task's cancellation is gone. Temporal delivers a cancel request once, so a job that takes
the result as a reason to go on never rolls back: a paused job waited for an unpause forever, a
running one carried on and published. :func:`call` raises the cancel again at the caller's next
wait, once the step's result is in (its compensation can still be registered), and
:func:`cancel_requested` lets waits that must not hold a cancelled job look at the request.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.steps import Step

__all__ = ["CANCEL_NOT_LOST", "call", "cancel_requested"]

CANCEL_NOT_LOST = "cancel-not-lost"
"""Patch id: jobs started before it replay with a cancel request a step outlived forgotten."""

In = TypeVar("In")
Out = TypeVar("Out")


async def call(
    step: Step[In, Out],
    arg: In,
    *,
    summary: str | None = None,
    local: bool = False,
    **overrides: Any,
) -> Out:
    """Run ``step`` on ``arg`` with its declared timeouts and retry policy; ``overrides``
    replace single options (e.g. a longer ``start_to_close_timeout``). The activity is named,
    not imported: workflow code never loads the activities floor. A cancel of the calling task
    that the step outlived is raised at the caller's next wait (see the module docstring).

    ``local``: run it as a local activity, in the workflow task of the worker that runs the
    workflow, for short steps every workflow worker can do. Its result is one marker event
    and no workflow task of its own, instead of three events and a workflow task; a worker
    that dies in it fails the workflow task, and the next worker runs the step again (so it
    must be idempotent, like every step). It has no heartbeat: the workflow task's timeout
    stands for it."""
    options = step.settings.options() | overrides
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    if local:
        options.pop("heartbeat_timeout", None)
        options.pop("priority", None)  # no task queue: it runs in the workflow's task
        result = await workflow.execute_local_activity(
            step.name, arg, result_type=step.output, summary=summary, **options
        )
    else:
        result = await workflow.execute_activity(
            step.name, arg, result_type=step.output, summary=summary, **options
        )
    if task is not None and task.cancelling() > before and workflow.patched(CANCEL_NOT_LOST):
        task.cancel()  # the step finished although cancelled: the cancel still stands
    return result


def cancel_requested() -> bool:
    """Whether the workflow was asked to cancel (always False when replaying a job started
    before :data:`CANCEL_NOT_LOST`). For waits that only a task's cancellation used to end,
    which a cancel request a step outlived never reached."""
    return workflow.cancellation_reason() is not None and workflow.patched(CANCEL_NOT_LOST)
