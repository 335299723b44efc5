"""The Agent Parallels worker: runs every workflow and activity of the project.

Start one with ``agentparallels worker`` (or ``python worker.py``); start as many as you like, on
as many machines as can reach the repositories. Jobs started with ``--no-worker`` or
``--detach`` are picked up by any of them; a job a command ran with its own worker is on that
command's queue (``agentparallels status JOB`` names the ``--task-queue`` that takes it over).
A worker takes the model calls that need a provider's key only if that key is set in its
environment (see ``workflows.credentials``). SIGINT or SIGTERM shuts a worker down gracefully:
running activities get a grace period to finish, and whatever does not finish is retried on
another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from agentparallels.activities import sandbox
from agentparallels.activities._workspace import collect_garbage, job_folders
from agentparallels.activities.llm import call_model
from agentparallels.core import names
from agentparallels.core.agentjob import CAPABILITIES
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import KEY_VARIABLES
from agentparallels.plugin import plugin_of
from agentparallels.workflows.credentials import credential_queue
from agentparallels.workflows.routing import MODEL_CAPABILITY, REGISTRY, capability_queue

DEFAULT_TASK_QUEUE = names.TASK_QUEUE
GARBAGE_EVERY_S = 300.0
"""How often a running worker removes its worktrees of ended jobs (also when it starts and
when it stops)."""
HEARTBEAT_EVERY = timedelta(seconds=1)
"""Longest the SDK holds a step's heartbeat back (its own default: 0.8 x the heartbeat timeout,
which left a starved worker 1 s of slack before its step was retried beside it)."""


def _name(fn: Callable[..., Any]) -> str | None:
    """The name an activity function is registered under."""
    defn = activity._Definition.from_callable(fn)
    return defn.name if defn else None


MODEL_CALL = _name(call_model)
"""The activity that calls models; the ``<queue>.model`` workers run it (a stand-in under the
same name, if one is given)."""


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
    sticky_timeout_s: float = 1.0
    """How long a job's next workflow task waits for the worker that ran its last one before
    any worker may take it. A killed or stopped worker's jobs wait this long (the SDK's 10 s
    made the recovery after a kill 10 s longer; at 2 s it was still the last 2 s of the slowest
    recoveries in `make chaos`); a live one that misses it only replays the job from history."""
    capabilities: tuple[str, ...] = ()
    """Capabilities this worker advertises: it also polls ``<task_queue>.<capability>`` for
    each (see ``workflows.routing``)."""
    model_calls_per_second: float | None = None
    """Most model calls started per second on each ``<queue>.model`` queue this worker polls,
    for the whole queue (the server enforces it; the last worker to poll sets it)."""
    credentials: tuple[str, ...] | None = None
    """Providers whose API key this worker holds: it takes their model calls, from
    ``<queue>.model.<provider>`` (see ``workflows.credentials``). None: those whose key is set
    in its environment when it is built."""


def held_credentials() -> tuple[str, ...]:
    """Providers whose API key is set in this process's environment."""
    return tuple(p for p, variable in KEY_VARIABLES.items() if os.environ.get(variable))


class WorkerGroup:
    """Workers started and shut down together: one per task queue a worker process polls."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = tuple(workers)

    @property
    def task_queues(self) -> tuple[str, ...]:
        return tuple(w.task_queue for w in self.workers)

    async def __aenter__(self) -> WorkerGroup:
        started: list[Worker] = []
        try:
            for w in self.workers:
                await w.__aenter__()
                started.append(w)
        except BaseException:
            await asyncio.gather(*(w.__aexit__(None, None, None) for w in started))
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.gather(*(w.__aexit__(*exc) for w in self.workers))


def build_worker(
    client: Client,
    options: WorkerOptions = WorkerOptions(),
    *,
    activity_fns: Sequence[Callable[..., Any]] = (),
    workflow_classes: Sequence[type] = (),
) -> WorkerGroup:
    """Workers on the task queue and on each capability's queue; beside each of those, one for
    the model calls of its workflows (``<queue>.model``, and ``<queue>.model.<p>`` for each
    provider ``p`` whose key it holds), rate-limited if asked. The client carries the
    :class:`~agentparallels.plugin.AgentParallelsPlugin` (converter, tracing, sandbox, every
    workflow and activity); ``activity_fns`` and ``workflow_classes`` are registered beside the
    plugin's, replacing those of the same name. Activities are blocking, so they run in a
    thread pool of their own."""
    plugin_of(client)  # refuses a client without the plugin
    queues = [options.task_queue]
    queues += [capability_queue(options.task_queue, c) for c in options.capabilities]
    held = held_credentials() if options.credentials is None else options.credentials
    model_fns = [fn for fn in activity_fns if _name(fn) == MODEL_CALL] or [call_model]
    calls_only = _without_registrations(client)
    group: list[Worker] = []
    for queue in queues:
        group.append(_job_worker(client, queue, options, activity_fns, workflow_classes))
        model_queue = capability_queue(queue, MODEL_CAPABILITY)
        for model_calls in (model_queue, *(credential_queue(model_queue, p) for p in held)):
            group.append(_model_worker(calls_only, model_calls, options, model_fns))
    return WorkerGroup(group)


def _without_registrations(client: Client) -> Client:
    """The same connection, converter and interceptors, without the plugin's workflows and
    activities: a model-call queue runs the model-call activity only, and polls no workflows."""
    config = client.config(active_config=True)  # a shallow copy
    config["plugins"] = []
    return Client(**config)


LOCAL_ACTIVITIES = 8
"""Local activities a job worker runs at once (one per agent unit's tool call under way)."""
WORKFLOW_TASK_POLLS = 8
"""Workflow task polls a job worker keeps open at once, half of them on the shared queue (the
SDK's default is 5, one of them on the shared queue): when a worker dies, every job it had
cached gets its next workflow task from the shared queue at once, and one poll per worker
took them one round trip at a time (up to 1.2 s of a recovery in `make chaos`)."""


def _job_worker(
    client: Client,
    queue: str,
    options: WorkerOptions,
    activity_fns: Sequence[Callable[..., Any]],
    workflow_classes: Sequence[type],
) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=workflow_classes,
        activities=activity_fns,
        # Local activities (an agent unit's short tool steps) run on the same executor: a
        # thread for each, so that none waits behind a long step (or a step, whose heartbeat
        # starts in its thread, behind them).
        activity_executor=ThreadPoolExecutor(
            max_workers=options.max_concurrent_activities + LOCAL_ACTIVITIES,
            thread_name_prefix="activity",
        ),
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_local_activities=LOCAL_ACTIVITIES,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(WORKFLOW_TASK_POLLS),
        nonsticky_to_sticky_poll_ratio=0.5,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=options.sticky_timeout_s),
        max_heartbeat_throttle_interval=HEARTBEAT_EVERY,
        graceful_shutdown_timeout=timedelta(seconds=options.graceful_shutdown_s),
    )


def _model_worker(
    client: Client, queue: str, options: WorkerOptions, model_fns: Sequence[Callable[..., Any]]
) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        activities=model_fns,
        activity_executor=ThreadPoolExecutor(
            max_workers=options.max_concurrent_activities, thread_name_prefix="model"
        ),
        max_concurrent_activities=options.max_concurrent_activities,
        max_task_queue_activities_per_second=options.model_calls_per_second,
        max_heartbeat_throttle_interval=HEARTBEAT_EVERY,
        graceful_shutdown_timeout=timedelta(seconds=options.graceful_shutdown_s),
    )


async def run(options: WorkerOptions, client: Client | None = None) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    if client is None:
        from agentparallels.client import connect

        client = await connect()
    await collect_garbage_of_ended_jobs(client)
    if why := sandbox.problem("bwrap"):
        print(f"warning: {why}; jobs with --sandbox bwrap (the default) fail here", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, options) as group:
        others = ", ".join(repr(q) for q in group.task_queues[1:])
        print(
            f"worker polling task queue {options.task_queue!r} (and {others}); Ctrl-C to stop",
            flush=True,
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GARBAGE_EVERY_S)
            if not stop.is_set():
                await collect_garbage_of_ended_jobs(client)
        print("shutting down: letting running activities finish ...", flush=True)
    await collect_garbage_of_ended_jobs(client)


async def collect_garbage_of_ended_jobs(client: Client) -> None:
    """Remove this worker's worktrees of jobs that have ended (and of any job untouched for a
    day). Each worker's disk is its own: a shard's worktree stays on the worker that made it
    when another worker finishes the shard or cleans the job up, so each worker removes its
    own once the job is over; a job the server does not know is left to the age rule."""
    ended = []
    for folder in job_folders():
        try:
            async with asyncio.timeout(10):
                described = await client.get_workflow_handle(folder.name).describe()
        except (RPCError, TimeoutError):  # unknown here, or no server: the age rule applies
            continue
        if described.status != WorkflowExecutionStatus.RUNNING:
            ended.append(folder)
    for stale in await asyncio.to_thread(collect_garbage, ended=ended):  # git waits on locks
        print(f"removed worktrees of ended job {stale.name}", flush=True)


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
    parser.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve sub-tasks needing NAME, from the queue <task-queue>.NAME; repeatable "
        f"(known: {', '.join(known_capabilities())})",
    )
    parser.add_argument(
        "--model-calls-per-second",
        type=float,
        default=None,
        metavar="N",
        help="start at most N model calls per second on each model-call queue (whole queue)",
    )


def known_capabilities() -> tuple[str, ...]:
    """What a worker may advertise: what the orchestrator's routes and the agent's units
    need."""
    return tuple(sorted({*REGISTRY.capabilities, *CAPABILITIES}))


def options_from(args: argparse.Namespace) -> WorkerOptions:
    """The options the command line asked for; unknown capabilities are a usage error."""
    known = known_capabilities()
    for name in args.capability:
        if name not in known:
            raise UsageError(
                f"unknown capability {name!r}: --capability takes one of {', '.join(known)}"
            )
    rate = args.model_calls_per_second
    if rate is not None and not rate > 0:
        raise UsageError(f"--model-calls-per-second must be above 0, got {rate:g}")
    return WorkerOptions(
        task_queue=args.task_queue,
        max_concurrent_activities=args.max_activities,
        max_concurrent_workflow_tasks=args.max_workflow_tasks,
        capabilities=tuple(dict.fromkeys(args.capability)),
        model_calls_per_second=rate,
    )


__all__ = [
    "DEFAULT_TASK_QUEUE",
    "GARBAGE_EVERY_S",
    "HEARTBEAT_EVERY",
    "LOCAL_ACTIVITIES",
    "WORKFLOW_TASK_POLLS",
    "MODEL_CALL",
    "WorkerGroup",
    "WorkerOptions",
    "add_arguments",
    "build_worker",
    "collect_garbage_of_ended_jobs",
    "held_credentials",
    "known_capabilities",
    "options_from",
    "run",
]


if __name__ == "__main__":
    # Run as a script, this file is `agentparallels worker` (same flags, same errors, same exit
    # codes): the command line is run by name here, so that the worker library, which the
    # command line imports, never imports the command line back.
    import runpy

    sys.argv[1:1] = ["worker"]
    runpy.run_module("agentparallels.cli", run_name="__main__", alter_sys=True)
