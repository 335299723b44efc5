"""``agentparallels resume JOB [--test-cmd ...]``: run a failed, cancelled or terminated job
again under the same id, keeping the shards its earlier run finished (see
``agentparallels.resume``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from agentparallels import resume, validate
from agentparallels.attributes import register as register_attributes
from agentparallels.cli.common import (
    WORKFLOW,
    add_sandbox_arguments,
    err,
    finish_here,
    in_process_worker,
    job_queue,
    positive,
)
from agentparallels.client import connect
from agentparallels.core import attributes
from agentparallels.core.errors import UsageError
from agentparallels.core.models import RefactorResult

__all__ = ["add_parser", "resume_command"]


def add_parser(sub: Any) -> None:
    again = sub.add_parser(
        "resume", help="run a failed, cancelled or terminated job again, keeping finished shards"
    )
    again.add_argument("job")
    again.add_argument("--test-cmd", help="replace the job's test command ('' for none)")
    again.add_argument("--check-cmd", help="replace the job's check command ('' for none)")
    again.add_argument(
        "--timeout", type=positive, metavar="SECONDS", help="replace the job's command time limit"
    )
    add_sandbox_arguments(again)  # added to the failed run's
    again.add_argument("--task-queue", help="default: the failed run's")
    again.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker in this process; a separate worker runs the job",
    )
    again.add_argument("--detach", action="store_true", help="start the job and return at once")
    again.set_defaults(handler=resume_command)


async def _prepare(client: Client, args: argparse.Namespace) -> resume.Resumption:
    """The new run's input: the old run's, with what the command line replaces."""
    overrides = resume.Overrides(
        test_cmd=args.test_cmd, check_cmd=args.check_cmd, timeout_s=args.timeout
    )
    again = await resume.prepare(client, args.job, overrides)
    if args.sandbox_ro or args.sandbox_rw or args.sandbox_env:
        limits = again.input.limits
        spec = validate.sandbox_spec(
            limits.sandbox.mode,
            args.sandbox_ro,
            args.sandbox_rw,
            args.sandbox_env,
            base=limits.sandbox,
        )
        limits = limits.model_copy(update={"sandbox": spec})
        again = dataclasses.replace(again, input=again.input.model_copy(update={"limits": limits}))
    if validate.is_url(again.input.repository):  # a job started before URLs were checked
        validate.no_credentials(again.input.repository)
    return again


async def _start(
    client: Client, args: argparse.Namespace, again: resume.Resumption, task_queue: str
) -> WorkflowHandle[Any, RefactorResult]:
    shown = attributes.shown(again.input.repository)
    summary = await again.old.static_summary() or f"Refactor {shown}"
    try:
        return await client.start_workflow(
            WORKFLOW,
            again.input,
            id=args.job,
            task_queue=task_queue,
            result_type=RefactorResult,
            static_summary=summary.removesuffix(" (resumed)") + " (resumed)",
            static_details=await again.old.static_details(),
            search_attributes=attributes.queued("refactor", shown),
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"job {args.job} was started again meanwhile; see its status") from None


async def resume_command(args: argparse.Namespace) -> int:
    client = await connect(autostart=False, announce=err)
    again = await _prepare(client, args)
    await register_attributes(client)
    # Not the old run's queue itself: a queue of the command that ran it has no worker now.
    task_queue = job_queue(args, again.old.task_queue)
    handle = await _start(client, args, again, task_queue)
    err(
        f"job {args.job} resumed; shards its earlier run finished, kept if still in reach: "
        f"{', '.join(sorted(again.input.reuse)) or 'none'}"
    )
    if args.detach:
        print(args.job)
        return 0
    async with in_process_worker(client, task_queue, not args.no_worker):
        return await finish_here(handle, task_queue)
