"""``agentparallels pause`` and ``unpause``: steering a running job.

agentparallels pause JOB               finish the steps in flight, then start nothing new
agentparallels unpause JOB             carry on
"""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from agentparallels import queues
from agentparallels.cli.common import add_wait_argument, err, existing
from agentparallels.client import connect
from agentparallels.core.errors import UsageError
from agentparallels.core.events import PAUSE_SIGNAL, UNPAUSE_SIGNAL

__all__ = ["add_parsers", "pause_command", "unpause_command"]


def add_parsers(sub: Any) -> None:
    pause = sub.add_parser("pause", help="pause a job after the steps it is running")
    pause.add_argument("job")
    add_wait_argument(pause)
    pause.set_defaults(handler=pause_command)

    unpause = sub.add_parser("unpause", help="let a paused job carry on")
    unpause.add_argument("job")
    add_wait_argument(unpause)
    unpause.set_defaults(handler=unpause_command)


async def _signal(args: argparse.Namespace, signal: str, verb: str) -> bool:
    """Send ``signal`` to the running job; whether a worker of the job took it up (this
    command starts none: a signal is kept in the job's history until one does)."""
    client = await connect(autostart=False, announce=err)
    handle, desc = await existing(client, args.job)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise UsageError(f"job {args.job} has ended ({state}); only a running job can be {verb}")
    await handle.signal(signal)
    queue = desc.task_queue
    wait = getattr(args, "wait", queues.WAIT_S)
    if await queues.served(client, queue) and await queues.taken_up(
        handle, queues.history_length(desc), queues.is_signal(signal), wait
    ):
        return True
    err(queues.unserved(args.job, queue, f"job {args.job} is asked to be {verb}"))
    return False


async def pause_command(args: argparse.Namespace) -> int:
    if not await _signal(args, PAUSE_SIGNAL, "paused"):
        return 1
    print(
        f"job {args.job} pauses after the steps it is running; "
        f"`agentparallels unpause {args.job}` lets it carry on"
    )
    return 0


async def unpause_command(args: argparse.Namespace) -> int:
    if not await _signal(args, UNPAUSE_SIGNAL, "unpaused"):
        return 1
    print(f"job {args.job} carries on")
    return 0
