"""``agentparallels cancel JOB``: cancel a job; everything it did is rolled back."""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from agentparallels import queues
from agentparallels.cli.common import add_wait_argument, err, existing, finish
from agentparallels.client import connect
from agentparallels.core.errors import UsageError

__all__ = ["add_parser", "cancel_command"]


def add_parser(sub: Any) -> None:
    cancel = sub.add_parser("cancel", help="cancel a job and roll back everything it did")
    cancel.add_argument("job")
    add_wait_argument(cancel)
    cancel.set_defaults(handler=cancel_command)


async def cancel_command(args: argparse.Namespace) -> int:
    """Ask the job to cancel; its own workers roll it back (this command starts none)."""
    client = await connect(autostart=False, announce=err)
    handle, desc = await existing(client, args.job)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise UsageError(f"job {args.job} is not running (it is {state})")
    await handle.cancel()
    queue = desc.task_queue
    if not await queues.served(client, queue) or not await queues.taken_up(
        handle, queues.history_length(desc), queues.is_cancel_request, args.wait
    ):
        err(queues.unserved(args.job, queue, f"job {args.job} is asked to cancel", "it rolls back"))
        return 1
    err(f"cancelling job {args.job}: rolling back ...")
    return await finish(handle, show=False)
