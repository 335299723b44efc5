"""``agentparallels approve`` / ``reject``: decide on a job that waits for approval."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from agentparallels import queues
from agentparallels.cli.common import (
    add_wait_argument,
    check_rollback,
    err,
    existing,
    finish,
    report_failure,
    user_name,
)
from agentparallels.client import connect
from agentparallels.core.checklist import APPROVE_UPDATE, REJECT_UPDATE, Decision
from agentparallels.core.errors import APPROVAL_DENIED, UsageError

__all__ = ["add_parsers", "approve_command", "reject_command"]


def add_parsers(sub: Any) -> None:
    approve = sub.add_parser("approve", help="approve a job awaiting approval: it publishes")
    reject = sub.add_parser("reject", help="reject a job awaiting approval: it rolls back")
    for parser in (approve, reject):
        parser.add_argument("job")
        parser.add_argument("--by", default=user_name(), help="who decides (default: your user)")
        add_wait_argument(parser)
    approve.add_argument("--reason", "--comment", default="", help="why (optional)")
    reject.add_argument(
        "--reason",
        "--comment",
        required=True,
        help="why (required); at an agent job's plan gate, the planner gets it and plans again",
    )
    approve.set_defaults(handler=approve_command)
    reject.set_defaults(handler=reject_command)


async def approve_command(args: argparse.Namespace) -> int:
    return await _decide(args, approve=True)


async def reject_command(args: argparse.Namespace) -> int:
    return await _decide(args, approve=False)


async def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    if not approve and not args.reason.strip():
        raise UsageError("reject needs a reason: --reason 'what is wrong'")
    client = await connect(autostart=False, announce=err)
    handle, desc = await existing(client, args.job)
    status = desc.status
    if status != WorkflowExecutionStatus.RUNNING:
        state = status.name.lower() if status else "unknown"
        raise UsageError(f"job {args.job} is not running (it is {state}): nothing to decide")
    # An update reaches the job only through a worker: none serving its queue, none is sent.
    queue = desc.task_queue
    if not await queues.served(client, queue):
        err(queues.unserved(args.job, queue, "nothing was decided", "decide again"))
        return 1
    decision = Decision(reason=args.reason, by=args.by)
    try:
        said = await asyncio.wait_for(
            handle.execute_update(
                APPROVE_UPDATE if approve else REJECT_UPDATE, decision, result_type=str
            ),
            args.wait,
        )
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise UsageError(f"job {args.job}: {message}") from None
    except TimeoutError:
        err(
            f"no worker of job {args.job}'s task queue {queue!r} took the decision within "
            f"{args.wait}s (the command that ran it may have ended): start "
            f"{queues.how_to_serve(queue)}, then see `agentparallels status {args.job}`"
        )
        return 1
    if said.startswith("plan "):  # an agent job's plan gate: the job goes on, with no wait
        goes_on = "it makes its edits" if approve else "it plans again with your comment"
        print(f"job {args.job}: {said} by {args.by or 'you'}; {goes_on} (see `status`)")
        return 0
    if approve:
        err(f"job {args.job} approved: publishing ...")
        return await finish(handle, show=False)
    err(f"job {args.job} rejected: rolling back ...")
    try:
        await handle.result()
    except WorkflowFailureError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError) and cause.type == APPROVAL_DENIED:
            print(f"job {args.job} was rejected and rolled back")
            return await check_rollback(handle, e, 0)
        return await check_rollback(handle, e, report_failure(args.job, e))
    return 1  # the job published after all (a decision cannot be taken back)
