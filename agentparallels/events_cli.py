"""``agentparallels events``, ``pause`` and ``unpause``: following and steering a running job.

agentparallels events JOB [--follow]   the job's events; with --follow, as they happen
agentparallels pause JOB               finish the steps in flight, then start nothing new
agentparallels unpause JOB             carry on
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from agentparallels import queues
from agentparallels.core.errors import UsageError
from agentparallels.core.events import (
    ENDINGS,
    EVENTS_QUERY,
    PAUSE_SIGNAL,
    UNPAUSE_SIGNAL,
    EventPage,
)

POLL_S = 0.25
"""How often ``events --follow`` asks a running job for new events."""


def add_commands(sub: Any) -> None:
    events = sub.add_parser("events", help="show a job's events (started, file edited, ...)")
    events.add_argument("job")
    events.add_argument("--follow", action="store_true", help="print them until the job ends")
    events.add_argument(
        "--no-worker",
        action="store_true",
        help="for an ended job: do not run a worker in this process to read its events",
    )
    events.set_defaults(handler=events_command)

    from agentparallels.cli import add_wait_argument

    pause = sub.add_parser("pause", help="pause a job after the steps it is running")
    pause.add_argument("job")
    add_wait_argument(pause)
    pause.set_defaults(handler=pause_command)

    unpause = sub.add_parser("unpause", help="let a paused job carry on")
    unpause.add_argument("job")
    add_wait_argument(unpause)
    unpause.set_defaults(handler=unpause_command)


async def _page(handle: WorkflowHandle[Any, Any], cursor: int) -> EventPage | None:
    try:
        return await handle.query(
            EVENTS_QUERY, cursor, result_type=EventPage, rpc_timeout=timedelta(seconds=5)
        )
    except Exception:  # no worker has picked the job up yet, or it is just ending
        return None


def _print(page: EventPage, cursor: int) -> int:
    if page.dropped:
        print(f"... {page.dropped} older events no longer kept", flush=True)
    for event in page.events:
        print(event.line(), flush=True)
    return max(cursor, page.last)


async def _drain(handle: WorkflowHandle[Any, Any], cursor: int) -> tuple[int, bool]:
    """Print every event after ``cursor``; the new cursor, and whether the job has ended
    (None pages, when the job cannot be asked, count as no news)."""
    while (page := await _page(handle, cursor)) is not None:
        cursor = _print(page, cursor)
        ended = any(e.kind in ENDINGS for e in page.events)
        if not page.events or ended:
            return cursor, ended
    return cursor, False


async def events_command(args: argparse.Namespace) -> int:
    from agentparallels.cli import _existing, connect, err, in_process_worker

    client = await connect(autostart=False, announce=err)
    handle, desc = await _existing(client, args.job)
    cursor = 0
    if desc.status == WorkflowExecutionStatus.RUNNING:
        if not args.follow:
            page = await _page(handle, cursor)
            if page is None:
                err(
                    f"job {args.job} is running but no worker is serving it: start one with "
                    f"{queues.how_to_serve(desc.task_queue)}"
                )
                return 1
            _print(page, cursor)
            return 0
        while True:
            cursor, ended = await _drain(handle, cursor)
            if ended:
                return 0
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(POLL_S)
    # An ended job answers from its history, replayed by a worker on its task queue.
    queue = desc.task_queue or ""
    async with in_process_worker(client, queue, not args.no_worker):
        page = await _page(handle, cursor)
        if page is None:
            raise UsageError(
                f"cannot read the events of job {args.job}: no worker serves task queue "
                f"{queue!r} (drop --no-worker, or start {queues.how_to_serve(queue)})"
            )
        cursor = _print(page, cursor)
        await _drain(handle, cursor)
    return 0


async def _signal(args: argparse.Namespace, signal: str, verb: str) -> bool:
    """Send ``signal`` to the running job; whether a worker of the job took it up (this
    command starts none: a signal is kept in the job's history until one does)."""
    from agentparallels.cli import _existing, connect, err

    client = await connect(autostart=False, announce=err)
    handle, desc = await _existing(client, args.job)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise UsageError(
            f"job {args.job} has ended ({desc.status.name.lower()}); only a running job can be "
            f"{verb}"
        )
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
