"""``agentparallels budget JOB --add N``: more tokens for an agent job, which goes on if it was
paused for budget (phase ``budget``); see docs/agent.md.

The job takes them as a workflow update, so this command starts no worker: the job's own
workers take it, as they take ``cancel`` and ``approve``. Mistakes (no such job, a job that has
ended, one without a token budget, a kind of job that does not pause) are one line naming the
fix, exit code 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from agentparallels.cli.common import (
    add_wait_argument,
    err,
    existing,
    positive,
    update_running_job,
    user_name,
)
from agentparallels.client import connect
from agentparallels.core import names
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import BudgetAdd

__all__ = ["add_parser", "budget_command"]


def add_parser(sub: Any) -> None:
    budget = sub.add_parser(
        "budget",
        help="add tokens to an agent job's budget: a job paused for budget goes on",
        description="Raise a running agent job's --budget-tokens by N. A job whose next "
        "model call does not fit its budget pauses (phase 'budget') until this command "
        "makes room or its --budget-timeout passes (then it rolls back).",
    )
    budget.add_argument("job")
    budget.add_argument(
        "--add", type=positive, metavar="N", help="tokens to add (required, at least 1)"
    )
    budget.add_argument("--by", default=user_name(), help="who adds them (default: your user)")
    add_wait_argument(budget)
    budget.set_defaults(handler=budget_command)


async def budget_command(args: argparse.Namespace) -> int:
    if args.add is None:
        raise UsageError(f"budget needs --add N: e.g. agentparallels budget {args.job} --add 50000")
    client = await connect(autostart=False, announce=err)
    handle, desc = await existing(client, args.job)
    if desc.workflow_type != names.AGENT:
        raise UsageError(
            f"job {args.job} is a {desc.workflow_type} job: only agent jobs pause for budget "
            "and take more (run a refactor job again with a larger --budget-tokens)"
        )
    said = await update_running_job(
        client,
        handle,
        desc,
        names.BUDGET_UPDATE,
        BudgetAdd(tokens=args.add, by=args.by),
        wait=args.wait,
        ended="there is no budget to add to; start it again with a larger --budget-tokens",
        nothing="no tokens were added",
        again="add them again",
    )
    if said is None:
        return 1
    print(f"job {args.job}: {said}")
    return 0
