"""``agentparallels resume JOB [--test-cmd ...] [--from-unit U]``: run a failed, cancelled or
terminated job again. A refactor job runs again under the same id, keeping the shards its
earlier run finished (``agentparallels.resume``); an agent job becomes a new job,
``JOB-resume-N``, keeping the plan, the finished units and the unfinished units' checkpoints
(``agentparallels.resume_agent``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from agentparallels import resume, resume_agent, validate
from agentparallels.attributes import register as register_attributes
from agentparallels.cli.common import (
    WORKFLOW,
    add_sandbox_arguments,
    check_key,
    err,
    finish_here,
    in_process_worker,
    job_queue,
    positive,
)
from agentparallels.client import connect
from agentparallels.core import attributes, names
from agentparallels.core.agentjob import AgentInput, AgentResult
from agentparallels.core.errors import UsageError
from agentparallels.core.models import RefactorResult

__all__ = ["add_parser", "resume_command"]


def add_parser(sub: Any) -> None:
    again = sub.add_parser(
        "resume",
        help="run a failed, cancelled or terminated job again, keeping finished shards or units",
    )
    again.add_argument("job")
    again.add_argument("--test-cmd", help="replace the job's test command ('' for none)")
    again.add_argument("--check-cmd", help="replace the job's check command ('' for none)")
    again.add_argument(
        "--timeout", type=positive, metavar="SECONDS", help="replace the job's command time limit"
    )
    again.add_argument(
        "--from-unit",
        metavar="UNIT",
        help="an agent job: run this unit and every unit depending on it again from the start, "
        "keeping the others",
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


def _overrides(args: argparse.Namespace) -> resume.Overrides:
    return resume.Overrides(
        test_cmd=args.test_cmd, check_cmd=args.check_cmd, timeout_s=args.timeout
    )


def _sandboxed(args: argparse.Namespace, inp: Any) -> Any:
    """``inp`` (a refactor's or an agent's input) with the sandbox flags added to its own."""
    if not (args.sandbox_ro or args.sandbox_rw or args.sandbox_env):
        return inp
    limits = inp.limits
    spec = validate.sandbox_spec(
        limits.sandbox.mode, args.sandbox_ro, args.sandbox_rw, args.sandbox_env, base=limits.sandbox
    )
    return inp.model_copy(update={"limits": limits.model_copy(update={"sandbox": spec})})


async def _prepare(client: Client, args: argparse.Namespace) -> resume.Resumption:
    """The new run's input: the old run's, with what the command line replaces."""
    again = await resume.prepare(client, args.job, _overrides(args))
    again = dataclasses.replace(again, input=_sandboxed(args, again.input))
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
    if (await resume.describe(client, args.job)).workflow_type == names.AGENT:
        return await _resume_agent(client, args)
    if args.from_unit is not None:
        raise UsageError(
            f"--from-unit: job {args.job} is a refactor job, which has shards, not units; "
            "resume it without --from-unit (its finished shards are kept)"
        )
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


async def _resume_agent(client: Client, args: argparse.Namespace) -> int:
    """A new agent job that takes over what the failed one made (``resume_agent``)."""
    again = await resume_agent.prepare(client, args.job, _overrides(args), args.from_unit)
    inp: AgentInput = _sandboxed(args, again.input)
    if not args.no_worker and not args.detach:  # this process's worker makes the model calls
        check_key(inp.model, inp.base_url, private=not args.task_queue)
    await register_attributes(client)
    task_queue = job_queue(args, again.old.task_queue)
    summary = await again.old.static_summary() or f"Agent on {inp.repository}"
    details = await again.old.static_details() or ""
    try:
        handle = await client.start_workflow(
            names.AGENT,
            inp,
            id=again.job_id,
            task_queue=task_queue,
            result_type=AgentResult,
            static_summary=summary.removesuffix(" (resumed)") + " (resumed)",
            static_details=f"**Resumes:** job `{args.job}`\n\n{details}",
            search_attributes=attributes.queued("agent", attributes.shown(inp.repository)),
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"job {again.job_id} was started meanwhile; resume again") from None
    err(_taking_over(args.job, again.job_id, inp))
    if args.detach:
        print(again.job_id)
        return 0
    async with in_process_worker(client, task_queue, not args.no_worker):
        return await finish_here(handle, task_queue)


def _taking_over(old: str, new: str, inp: AgentInput) -> str:
    """What the resumed job will try to keep, said before it starts."""
    r = inp.resumed
    if r is None or r.plan is None:
        return f"job {new} resumes job {old}, which made no valid plan: it plans again"
    lines = [
        f"job {new} resumes job {old} with its plan; kept if their commits are still in reach:",
        f"  finished units (no model call again): {', '.join(u.name for u in r.kept) or 'none'}",
        "  unfinished units, from their last checkpoint: "
        + (", ".join(c.name for c in r.checkpoints) or "none"),
    ]
    if r.redo:
        lines.append(f"  run again from the start, as asked: {', '.join(r.redo)}")
    return "\n".join(lines)
