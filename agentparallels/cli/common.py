"""What the commands share: messages, exit codes, argument types, the queue a job runs on,
the worker a command runs in its own process, and following a job to its end.

Every command module imports these from here (and ``connect`` from ``agentparallels.client``),
so no command imports another and nothing below the command line imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError

from agentparallels import devserver, queues, tracing
from agentparallels.core import attributes, names, progress, redact
from agentparallels.core.agentjob import AgentResult
from agentparallels.core.errors import BAD_INPUT, GIT_CONFLICT, UsageError
from agentparallels.core.llm import KEY_VARIABLES, split_model
from agentparallels.core.models import Progress, RefactorResult
from agentparallels.ops import existing

__all__ = [
    "BAD_INPUT_EXIT",
    "DEFAULT_TASK_QUEUE",
    "FAILED",
    "LEFT_BEHIND",
    "WORKFLOW",
    "Parser",
    "add_sandbox_arguments",
    "add_wait_argument",
    "check_key",
    "check_rollback",
    "err",
    "existing",
    "exit_with",
    "finish",
    "APPROVAL_WAIT",
    "finish_here",
    "start_and_follow",
    "in_process_worker",
    "job_queue",
    "new_job_id",
    "outcome_summary",
    "positive",
    "progress_of",
    "report_failure",
    "ui_link",
    "update_running_job",
    "user_name",
]

WORKFLOW = names.REFACTOR
FAILED = 1
"""Exit code: the job failed or was cancelled, and was rolled back (checked)."""
BAD_INPUT_EXIT = 2
"""Exit code: bad input; nothing was changed."""
LEFT_BEHIND = 3
"""Exit code: the job failed or was cancelled, and its rollback left something behind."""
DEFAULT_TASK_QUEUE = os.environ.get("AGENTPARALLELS_TASK_QUEUE", names.TASK_QUEUE)


def err(message: str) -> None:
    """One line on stderr, with anything that looks like a secret masked."""
    print(redact.text(message), file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """A parser whose mistakes are one line and exit code 2 (``main`` reports them)."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def user_name() -> str:
    """Who runs the command (the default of ``--by``): the login name, or "" without one."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return ""


async def update_running_job(
    client: Client,
    handle: WorkflowHandle,
    desc: WorkflowExecutionDescription,
    update: str,
    arg: Any,
    *,
    wait: float,
    ended: str,
    nothing: str,
    again: str,
) -> str | None:
    """Send ``update`` to a running job and return what it said; None when no worker serves
    the job's queue or none took the update within ``wait`` seconds (both said on stderr,
    ``nothing`` naming what did not happen, ``again`` what to do once a worker runs). A job
    not running (``ended`` says what that means), or an update its validator refuses, is a
    usage error naming why."""
    job = handle.id
    if desc.status != WorkflowExecutionStatus.RUNNING:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise UsageError(f"job {job} is not running (it is {state}): {ended}")
    queue = desc.task_queue
    if not await queues.served(client, queue):  # an update reaches the job only via a worker
        err(queues.unserved(job, queue, nothing, again))
        return None
    try:
        said: str = await asyncio.wait_for(
            handle.execute_update(update, arg, result_type=str), wait
        )
        return said
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise UsageError(f"job {job}: {message}") from None
    except TimeoutError:
        err(
            f"no worker of job {job}'s task queue {queue!r} took it within {wait}s (the "
            f"command that ran it may have ended): start {queues.how_to_serve(queue)}, then "
            f"see `agentparallels status {job}`"
        )
        return None


def positive(text: str) -> int:
    """An argument type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sandbox-ro``, ``--sandbox-rw``, ``--sandbox-env``: what tool commands may see
    beyond the defaults (docs/isolation.md)."""
    parser.add_argument(
        "--sandbox-ro",
        action="append",
        default=[],
        metavar="PATH",
        help="let tool commands read PATH (hidden by default: everything outside the "
        "worktree, the system and the commands' own tools); repeatable",
    )
    parser.add_argument(
        "--sandbox-rw",
        action="append",
        default=[],
        metavar="PATH",
        help="let tool commands read and write PATH; repeatable",
    )
    parser.add_argument(
        "--sandbox-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass the worker's environment variable NAME to tool commands (they get only "
        "PATH, locale, TERM and TZ otherwise); repeatable",
    )


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    """``--wait`` of the commands that steer a running job (they start no worker)."""
    parser.add_argument(
        "--wait",
        type=positive,
        default=int(queues.WAIT_S),
        metavar="SECONDS",
        help="how long to wait for the job's worker to take it up (default %(default)s)",
    )
    # Accepted as before, and unused: the request goes to the job, on the job's own queue.
    parser.add_argument("--task-queue", help=argparse.SUPPRESS)
    parser.add_argument("--no-worker", action="store_true", help=argparse.SUPPRESS)


def job_queue(args: argparse.Namespace, old: str | None = None) -> str:
    """The queue a job is started on: ``--task-queue`` if given; else, with a worker in this
    process, a queue of its own (so no other command's worker takes its steps); else the
    default queue (or, for a resumed job, the one its earlier run was started from)."""
    if args.task_queue:
        return args.task_queue
    base = queues.base_of(old) if old else DEFAULT_TASK_QUEUE
    return base if args.no_worker or getattr(args, "detach", False) else queues.private(base)


def in_process_worker(client: Client, task_queue: str, enabled: bool) -> Any:
    """The worker a command runs beside its job (an async context), or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    from agentparallels import worker  # loads every workflow and activity: only when needed

    return worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue))


def new_job_id(repository: str, kind: str = "refactor") -> str:
    """``<kind>-<repository's name>-<random>``: readable in lists, unique in practice."""
    name = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:30] or "repo"
    return f"{kind}-{slug}-{uuid.uuid4().hex[:8]}"


def ui_link(client: Client, job_id: str) -> str | None:
    """The job's page in the local dev server's UI; None on any other cluster."""
    target = client.service_client.config.target_host
    if target in (f"localhost:{devserver.DEFAULT_PORT}", f"127.0.0.1:{devserver.DEFAULT_PORT}"):
        return (
            f"http://localhost:{devserver.DEFAULT_UI_PORT}/namespaces/{client.namespace}"
            f"/workflows/{job_id}"
        )
    return None


def check_key(model: str, base_url: str | None, *, private: bool) -> None:
    """A job whose model calls only this process's worker makes (``private``: the job's queue
    is this command's own) needs the provider's key here: a usage error now rather than a
    failed job, since keys never travel with jobs. An endpoint of one's own (``--base-url``)
    may need no provider key, so it is not asked for."""
    variable = None if base_url else KEY_VARIABLES[split_model(model)[0]]
    if private and variable and not os.environ.get(variable):
        raise UsageError(
            f"{variable} is not set: this command's worker makes the model calls of --model "
            f"{model}; set it, or run the job with --no-worker on workers that have it"
        )


def outcome_summary(result: Any) -> str:
    """What a finished job made, in the words of its kind (refactor or agent)."""
    if isinstance(result, AgentResult):
        return progress.agent_summary(result)
    if isinstance(result, RefactorResult):
        return progress.summary(result)
    return f"the job finished: {result!r}"


APPROVAL_WAIT = "once every check passes it waits for `agentparallels approve {job_id}` (or reject)"
"""Said when a job started that waits for an approval (``str.format`` with ``job_id``)."""


async def start_and_follow(
    client: Client,
    args: argparse.Namespace,
    job_id: str,
    task_queue: str,
    start: Callable[[bool], Awaitable[WorkflowHandle[Any, Any]]],
    waits: Sequence[str] = (),
) -> int:
    """Start a job with ``start(eager)`` and follow it to its end with the command's own
    worker (with ``--detach``, print its id and return; with ``--no-worker``, other workers
    run it). The worker starts first, so that the job's first workflow task comes back to it
    with the start (``eager``, see ``devserver.EAGER_DISPATCH``). ``waits``: what the job will
    wait for (approvals), said once it started."""
    here = not args.no_worker and not args.detach
    async with in_process_worker(client, task_queue, here):
        handle = await start(here)
        err(f"job {job_id} started")
        for line in waits:
            err(line)
        if link := ui_link(client, job_id):
            err(f"watch it in the Temporal UI: {link}")
        if args.detach:
            print(job_id)
            return 0
        return await finish_here(handle, task_queue)


async def finish_here(handle: WorkflowHandle[Any, Any], task_queue: str) -> int:
    """``finish`` for a command whose own worker runs the job; if the command is interrupted,
    say how the job can go on."""
    try:
        return await finish(handle, show=True)
    except asyncio.CancelledError:
        err(
            f"job {handle.id} goes on when a worker serves its task queue {task_queue!r}: "
            f"{queues.how_to_serve(task_queue)}"
        )
        raise


async def finish(handle: WorkflowHandle[Any, Any], *, show: bool) -> int:
    """Follow the job to its end, showing progress; report the outcome; return the exit code."""
    outcome = asyncio.ensure_future(handle.result())
    live = sys.stderr.isatty()
    last = ""
    parts = "shards"
    if show and (await handle.describe()).workflow_type == names.AGENT:
        parts = "units"
    while not outcome.done():
        p = await progress_of(handle)
        if show and p is not None and (text := progress.line(p, parts)) != last:
            if live:  # redraw one line in place
                print("\r\033[K" + text, end="", file=sys.stderr, flush=True)
            else:
                err(text)
            last = text
        await asyncio.wait({outcome}, timeout=0.5)
    if show and live and last:
        err("")
    try:
        result = outcome.result()
    except WorkflowFailureError as e:
        return await check_rollback(handle, e, report_failure(handle.id, e))
    print(outcome_summary(result))
    if isinstance(result, AgentResult) and result.published is None:
        err(f"job {handle.id} published nothing: its units changed no file")
        return FAILED  # the agent's promise is a published, tested branch
    return 0


async def check_rollback(handle: WorkflowHandle[Any, Any], e: WorkflowFailureError, rc: int) -> int:
    """After a job failed or was cancelled (``e``), look for what it left in its repository:
    say it is as it was only if nothing is left, else name each leftover and how to remove it.
    Returns ``rc``, or ``LEFT_BEHIND`` when something is left."""
    from agentparallels import leftovers

    desc = await handle.describe()
    repository = {p.key.name: p.value for p in desc.typed_search_attributes}.get(
        attributes.REPOSITORY.name
    )
    if not isinstance(repository, str):
        err(f"the job's repository is not recorded: check it yourself for refs of {handle.id}")
        return rc
    cause = e.cause
    # A job that failed because its branch already existed must not take that branch for its own.
    theirs = isinstance(cause, ApplicationError) and cause.type == GIT_CONFLICT
    try:
        left = leftovers.find(repository, handle.id, branch=not theirs)
    except Exception as problem:  # unreadable from here: say so, claim nothing
        err(f"could not check {repository} for what job {handle.id} left: {problem}")
        return rc
    if left:
        err(leftovers.report(repository, handle.id, left))
        return LEFT_BEHIND
    if rc != BAD_INPUT_EXIT:  # bad input: one line, the usage error's
        nothing = f"nothing of job {handle.id} is left; the repository is as it was"
        err(f"checked {repository}: {nothing}")
    return rc


def report_failure(job_id: str, e: WorkflowFailureError) -> int:
    """Say why the job failed, in one line; the exit code that goes with it."""
    cause = e.cause
    if isinstance(cause, CancelledError):
        err(f"job {job_id} was cancelled and rolled back")
        return FAILED
    if isinstance(cause, ApplicationError) and cause.type == BAD_INPUT:
        err(f"agentparallels: error: {cause.message.splitlines()[0]}")
        return BAD_INPUT_EXIT
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
    err(f"job {job_id} failed: {message}")
    return FAILED


async def progress_of(handle: WorkflowHandle[Any, Any]) -> Progress | None:
    """The job's progress, or None while no worker answers for it."""
    try:
        return await handle.query(
            names.PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=2)
        )
    except Exception:  # no worker has picked the job up yet, or it just ended
        return None


def exit_with(body: Callable[[], Any]) -> None:
    """Run ``body`` and leave the process with its code, skipping interpreter teardown (which
    can crash after the Temporal client's native threads have run)."""
    try:
        rc = body()
    finally:
        tracing.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 0)
