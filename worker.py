"""The Agent Parallels worker: runs every workflow and activity of the project.

Start one with ``agentparallels worker`` (or ``python worker.py``); start as many as you like, on
as many machines as can reach the repositories. Jobs whose starter went away are picked up by
any of them. SIGINT or SIGTERM shuts a worker down gracefully: running activities get a grace
period to finish, and whatever does not finish is retried on another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

import activities
import workflows
from activities._workspace import collect_garbage
from agentparallels import tracing

DEFAULT_TASK_QUEUE = "agentparallels"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How much one worker takes on."""

    task_queue: str = DEFAULT_TASK_QUEUE
    """The queue jobs are started on."""
    max_concurrent_activities: int = 8
    """Activities (git steps, edits, tool runs) running at once in this worker."""
    max_concurrent_workflow_tasks: int = 20
    """Workflow tasks processed at once."""
    graceful_shutdown_s: float = 10.0
    """How long running activities may take to finish on shutdown."""


def build_worker(
    client: Client,
    options: WorkerOptions = WorkerOptions(),
    *,
    activity_fns: Sequence[Callable[..., Any]] = activities.ALL,
) -> Worker:
    """A worker with every workflow and activity registered (the client carries the pydantic
    data converter). Activities are blocking, so they run in a thread pool of their own."""
    return Worker(
        client,
        task_queue=options.task_queue,
        workflows=workflows.ALL,
        activities=activity_fns,
        activity_executor=ThreadPoolExecutor(
            max_workers=options.max_concurrent_activities, thread_name_prefix="activity"
        ),
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=options.graceful_shutdown_s),
        **tracing.worker_options(client),
    )


async def run(options: WorkerOptions, client: Client | None = None) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    if client is None:
        from agentparallels.client import connect

        client = await connect()
    for stale in collect_garbage():
        print(f"removed stale worktrees {stale}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, options):
        print(f"worker polling task queue {options.task_queue!r}; Ctrl-C to stop", flush=True)
        await stop.wait()
        print("shutting down: letting running activities finish ...", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-queue",
        default=os.environ.get("AGENTPARALLELS_TASK_QUEUE", DEFAULT_TASK_QUEUE),
        help="task queue to poll (default: %(default)s)",
    )
    parser.add_argument(
        "--max-activities",
        type=int,
        default=8,
        metavar="N",
        help="activities run at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-workflow-tasks",
        type=int,
        default=20,
        metavar="N",
        help="workflow tasks processed at once (default: %(default)s)",
    )


def options_from(args: argparse.Namespace) -> WorkerOptions:
    return WorkerOptions(
        task_queue=args.task_queue,
        max_concurrent_activities=args.max_activities,
        max_concurrent_workflow_tasks=args.max_workflow_tasks,
    )


def main(argv: list[str] | None = None) -> None:
    """``python worker.py ...`` is ``agentparallels worker ...``: same flags, same errors."""
    from agentparallels.cli import exit_with
    from agentparallels.cli import main as cli_main

    exit_with(lambda: cli_main(["worker", *(argv or [])]))


if __name__ == "__main__":
    main(sys.argv[1:])
