"""``agentparallels cleanup JOB --repo PATH``: remove what a failed job's rollback left."""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from agentparallels import validate
from agentparallels.cli.common import LEFT_BEHIND, err, existing
from agentparallels.client import connect
from agentparallels.core.errors import UsageError

__all__ = ["add_parser", "cleanup_command"]


def add_parser(sub: Any) -> None:
    clean = sub.add_parser(
        "cleanup", help="remove what a failed or cancelled job's rollback left behind"
    )
    clean.add_argument("job")
    clean.add_argument("--repo", required=True, metavar="PATH", help="the job's repository")
    clean.set_defaults(handler=cleanup_command)


async def cleanup_command(args: argparse.Namespace) -> int:
    from agentparallels import leftovers  # reads git through the activities: only when needed

    repository = validate.repository(args.repo)
    client = await connect(autostart=False, announce=err)
    handle, desc = await existing(client, args.job)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise UsageError(f"job {args.job} is still running: cancel it first, its rollback may do")
    # A job that succeeded published its branch: that is its result, not a leftover.
    branch = desc.status != WorkflowExecutionStatus.COMPLETED
    found = leftovers.find(repository, handle.id, branch=branch)
    left = leftovers.remove(repository, handle.id, branch=branch)
    if left:
        err(leftovers.report(repository, handle.id, left))
        return LEFT_BEHIND
    for leftover in found:
        print(f"removed {leftover.what}")
    print(f"nothing of job {args.job} is left in {repository}")
    return 0
