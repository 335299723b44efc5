"""``agentparallels approve`` / ``reject``: decide on a job that waits for approval."""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels.cli.common import (
    add_wait_argument,
    check_rollback,
    err,
    existing,
    finish,
    report_failure,
    update_running_job,
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
    said = await update_running_job(
        client,
        handle,
        desc,
        APPROVE_UPDATE if approve else REJECT_UPDATE,
        Decision(reason=args.reason, by=args.by),
        wait=args.wait,
        ended="nothing to decide",
        nothing="nothing was decided",
        again="decide again",
    )
    if said is None:
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
