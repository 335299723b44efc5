"""``agentparallels agent PATH --task TEXT --model PROVIDER:MODEL``: a model plans the task,
units of work edit the repository with tools, each in its own worktree, and the job publishes
a branch whose checks and tests pass, or leaves the repository as it was (docs/agent.md).

Everything the flags say is checked here, before the job starts: a mistake is one line naming
the flag and its fix, exit code 2, and nothing changed.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from agentparallels import baselines, queues, validate
from agentparallels.attributes import register as register_attributes
from agentparallels.cli.common import (
    APPROVAL_WAIT,
    DEFAULT_TASK_QUEUE,
    add_sandbox_arguments,
    check_key,
    err,
    job_queue,
    new_job_id,
    positive,
    start_and_follow,
)
from agentparallels.client import connect
from agentparallels.core import attributes, names, redact
from agentparallels.core.agentjob import AgentInput, AgentLimits, AgentResult, in_files
from agentparallels.core.agentreview import MAX_REVIEWERS, PlanApproval, ReviewOptions
from agentparallels.core.checklist import ApprovalOptions
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import split_model

__all__ = [
    "KIND",
    "LIMIT_FLAGS",
    "add_parser",
    "agent_command",
    "approval_options",
    "job_input",
    "review_options",
]

KIND = "agent"
"""The job kind in search attributes (``agentparallels list --kind agent``)."""
LIMIT_FLAGS = {
    "max_units": "--max-units",
    "parallel": "--parallel",
    "turns": "--turns",
    "command_timeout_s": "--timeout",
}
"""The flag that sets each field of :class:`AgentLimits`, for messages."""


def add_parser(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="a model plans a task given in words and edits the repository with tools",
        description="A model plans the task into units of work; each unit edits its files "
        "with tools (read, search, edit, check, test) in its own worktree; the job publishes "
        "the branch agentparallels/JOB once the checks and tests pass, or leaves the "
        "repository as it was. See docs/agent.md.",
    )
    agent.add_argument("repository", metavar="PATH", help="a local git repository")
    agent.add_argument("--task", metavar="TEXT", help="what to change, in words (required)")
    agent.add_argument("--base", default="HEAD", help="commit to start from (default: HEAD)")
    _add_model_options(agent)
    _add_work_options(agent)
    _add_limits(agent)
    agent.add_argument(
        "--sandbox",
        choices=["bwrap", "none"],
        default=AgentLimits().sandbox.mode,
        help="run tool commands (checks, tests) in bubblewrap (deny by default: the worktree, "
        "the system and the commands' own tools; no network, no secrets) or unconfined "
        "(default %(default)s)",
    )
    add_sandbox_arguments(agent)
    _add_gates(agent)
    _add_placement(agent)
    agent.set_defaults(handler=agent_command)


def _add_model_options(agent: argparse.ArgumentParser) -> None:
    agent.add_argument(
        "--model",
        metavar="PROVIDER:MODEL",
        help="the planner's and every unit's model (required): openai:gpt-4.1, "
        "anthropic:claude-sonnet-4-5, or openai:NAME with --base-url",
    )
    agent.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio ...) or a proxy",
    )
    agent.add_argument(
        "--tool-format",
        choices=["auto", "native", "json"],
        default="auto",
        help="how the model calls tools: the provider's tool calling (native), or one JSON "
        "action in its answer (json, for servers without tool calling); auto: native for "
        "OpenAI and Anthropic (default %(default)s)",
    )
    agent.add_argument(
        "--price",
        action="append",
        metavar="MODEL=IN,OUT",
        help="dollars per million input and output tokens, for the cost estimate",
    )
    agent.add_argument(
        "--budget-tokens",
        type=positive,
        metavar="N",
        help="the job's tokens: a model call that would spend more pauses the job (phase "
        "budget) until `agentparallels budget JOB --add N` or --budget-timeout",
    )
    agent.add_argument(
        "--budget-timeout",
        type=positive,
        metavar="SECONDS",
        help="how long a job paused for budget waits for more before it rolls back "
        f"(default {int(AgentLimits().budget_timeout_s)}; needs --budget-tokens)",
    )


def _add_work_options(agent: argparse.ArgumentParser) -> None:
    agent.add_argument(
        "--files",
        action="append",
        metavar="GLOB",
        help="the files units may read and write (default: every tracked file); repeatable",
    )
    agent.add_argument(
        "--test-cmd", metavar="CMD", help="the tests units run and the merged result must pass"
    )
    agent.add_argument(
        "--check-cmd", metavar="CMD", help="a check run on the files a unit changed, after ruff"
    )


def _add_limits(agent: argparse.ArgumentParser) -> None:
    limits = AgentLimits()  # the defaults live in the model, once
    agent.add_argument(
        "--max-units",
        type=positive,
        default=limits.max_units,
        metavar="N",
        help="most units of work a plan may have (default %(default)s, at most 32)",
    )
    agent.add_argument(
        "--parallel",
        type=positive,
        default=limits.parallel,
        metavar="N",
        help="units running at once (default %(default)s, at most 32)",
    )
    agent.add_argument(
        "--turns",
        type=positive,
        default=limits.turns,
        metavar="N",
        help="model calls per unit, malformed answers included (default %(default)s)",
    )
    agent.add_argument(
        "--timeout",
        type=positive,
        default=int(limits.command_timeout_s),
        metavar="SECONDS",
        help="limit of each check and test command (default %(default)s)",
    )


def _add_placement(agent: argparse.ArgumentParser) -> None:
    agent.add_argument("--job-id", help="the job's id (default: agent-<repo>-<random>)")
    agent.add_argument(
        "--task-queue",
        help=f"run the job on this queue (default: {DEFAULT_TASK_QUEUE}, served by "
        "`agentparallels worker`; with this process's own worker, a queue of its own)",
    )
    agent.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker in this process; separate workers run the job",
    )
    agent.add_argument("--detach", action="store_true", help="start the job and return at once")


def _said(flag: str, value: str | None, example: str) -> str:
    """A required text flag, given and not blank."""
    if value is None:
        raise UsageError(f"{flag} is missing: {example}")
    if not value.strip():
        raise UsageError(f"{flag} is empty: {example}")
    return value


def _model(args: argparse.Namespace) -> str:
    model = _said("--model", args.model, "pass --model PROVIDER:MODEL, e.g. openai:gpt-4.1")
    try:
        split_model(model)
    except ValueError as e:
        raise UsageError(f"--model: {e}") from None
    validate.endpoint(args.base_url)
    return model


def _globs(repository: str, given: list[str] | None) -> tuple[str, ...]:
    """``--files``: each a non-blank relative glob, and at least one tracked file must match
    one of them (else the planner would have nothing to read)."""
    globs = tuple(given or ("**/*",))
    for glob in globs:
        if not glob.strip():
            raise UsageError("--files is empty: pass a glob such as 'src/**/*.py'")
        if glob.startswith("/") or ".." in glob.split("/"):
            raise UsageError(
                f"--files {glob}: globs are relative to the repository's top folder, "
                "e.g. 'src/**/*.py'"
            )
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=repository, capture_output=True, text=True
    ).stdout.split("\0")
    if not any(in_files(path, globs) for path in tracked if path):
        raise UsageError(
            f"--files {' '.join(globs)} matches no tracked file of {repository}: "
            "pass globs relative to the repository's top folder"
        )
    return globs


def _command(flag: str, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise UsageError(f"{flag} is empty: give the command, e.g. {flag} 'pytest -q'")
    return value


def _limits(args: argparse.Namespace) -> AgentLimits:
    """The limits the flags set; pydantic's bounds (at most 32 units ...) as usage errors."""
    confined = validate.sandbox_spec(
        args.sandbox, args.sandbox_ro, args.sandbox_rw, args.sandbox_env
    )
    timeout = {} if args.budget_timeout is None else {"budget_timeout_s": args.budget_timeout}
    try:
        return AgentLimits(
            max_units=args.max_units,
            parallel=args.parallel,
            turns=args.turns,
            command_timeout_s=args.timeout,
            sandbox=confined,
            **timeout,
        )
    except ValidationError as e:
        first = e.errors()[0]
        flag = LIMIT_FLAGS.get(str(first["loc"][0]) if first["loc"] else "", "a limit")
        reason = first["msg"].lower().removeprefix("input should be ")
        raise UsageError(f"{flag} {first.get('input')}: it must be {reason}") from None


def job_input(args: argparse.Namespace) -> AgentInput:
    """The job as asked, or a UsageError saying what is wrong; nothing runs before."""
    task = _said("--task", args.task, "say in words what to change, e.g. --task 'rename ...'")
    model = _model(args)
    if validate.is_url(args.repository):
        raise UsageError(
            f"{args.repository} is a URL: the agent works on a local repository; clone it "
            "and pass the clone's path"
        )
    repository = validate.repository(args.repository)
    validate.base_ref(repository, args.base)
    files = _globs(repository, args.files)
    if not args.no_worker:  # a separate worker checks its own machine
        validate.sandbox(args.sandbox)
    if args.budget_timeout is not None and args.budget_tokens is None:
        raise UsageError("--budget-timeout bounds a pause for budget: give --budget-tokens N too")
    return AgentInput(
        repository=repository,
        base_ref=args.base,
        task=task,
        model=model,
        base_url=args.base_url,
        tool_format=args.tool_format,
        files=files,
        test_cmd=_command("--test-cmd", args.test_cmd),
        check_cmd=_command("--check-cmd", args.check_cmd),
        limits=_limits(args),
        budget=validate.budget(args.budget_tokens, None),
        prices=validate.prices(args.price or []),
        review=review_options(args, model),
        **approval_options(args),
    )


async def _start(
    client: Client, job: AgentInput, job_id: str, task_queue: str, *, eager: bool
) -> WorkflowHandle[Any, AgentResult]:
    """Start the job; with ``eager``, its first workflow task comes back with the start, to
    the worker this process runs on ``client`` (see ``devserver.EAGER_DISPATCH``)."""
    shown = attributes.shown(job.repository)
    task = redact.text(job.task.strip())
    model = job.model + (f" at {redact.url(job.base_url)}" if job.base_url else "")
    try:
        return await client.start_workflow(
            names.AGENT,
            job,
            id=job_id,
            task_queue=task_queue,
            result_type=AgentResult,
            static_summary=f"Agent on {Path(shown).name}: {task.splitlines()[0][:80]}",
            static_details=f"**Repository:** `{shown}` at `{job.base_ref}`\n\n"
            f"**Model:** {model}\n\n**Task:** {task}",
            search_attributes=attributes.queued(KIND, shown),
            request_eager_start=eager,
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"a job with id {job_id} already exists; pick another --job-id") from None


async def agent_command(args: argparse.Namespace) -> int:
    job = job_input(args)
    task_queue = job_queue(args)
    if not args.no_worker and not args.detach:
        check_key(job.model, job.base_url, private=not args.task_queue)
        if job.review is not None and job.review.model:
            check_key(job.review.model, job.base_url, private=not args.task_queue)
    client = await connect(announce=err)
    await register_attributes(client)
    if args.no_worker or args.detach:  # the job's steps wait for a worker of that queue
        await _say_if_unserved(client, task_queue)
    baseline, said = await baselines.of_repository(client, job.repository, kind=KIND)
    err(said)
    job = job.model_copy(update={"baseline": baseline})
    job_id = args.job_id or new_job_id(job.repository, KIND)
    waits = []
    if job.plan_approval is not None:
        waits.append(
            f"once planned it waits for `agentparallels approve {job_id}` (or reject --comment)"
        )
    if job.approval is not None:
        waits.append(APPROVAL_WAIT.format(job_id=job_id))
    return await start_and_follow(
        client,
        args,
        job_id,
        task_queue,
        lambda eager: _start(client, job, job_id, task_queue, eager=eager),
        waits,
    )


async def _say_if_unserved(client: Client, task_queue: str) -> None:
    """A job that only other workers run does nothing until one polls its queue: say so
    before starting it (it still starts, and waits for one)."""
    if not await queues.served(client, task_queue):
        err(
            f"no worker polls task queue {task_queue!r} now: the job waits until one does; "
            f"start {queues.how_to_serve(task_queue)}"
        )


def _add_gates(agent: argparse.ArgumentParser) -> None:
    """The review committee's and the approval gates' flags (docs/agent.md)."""
    agent.add_argument(
        "--reviewers",
        type=positive,
        metavar="N",
        help=f"N reviewer models read the verified change file by file and vote (at most "
        f"{MAX_REVIEWERS}); rejected work goes back to its units, then the job refuses",
    )
    agent.add_argument(
        "--reviewer-model", metavar="PROVIDER:MODEL", help="the reviewers' model (default --model)"
    )
    agent.add_argument(
        "--quorum", type=positive, metavar="N", help="approvals needed (default: a majority)"
    )
    agent.add_argument(
        "--rework-rounds",
        metavar="N",
        help="times rejected work goes back to its units before the job refuses (default 1)",
    )
    agent.add_argument(
        "--approve-plan",
        action="store_true",
        help="show the plan and wait for `agentparallels approve JOB` before any edit; "
        "`reject JOB --comment TEXT` plans again with the comment",
    )
    agent.add_argument(
        "--require-approval",
        action="store_true",
        help="wait for `agentparallels approve JOB` before publishing, after every check and "
        "reviewer has voted; reject or time out: roll back",
    )
    agent.add_argument(
        "--approval-timeout",
        type=positive,
        metavar="SECONDS",
        help="deny after this long without a decision, at each gate (default 1 day)",
    )


def review_options(args: argparse.Namespace, model: str) -> ReviewOptions | None:
    """``--reviewers`` and the flags that go with it, checked."""
    if args.reviewers is None:
        for flag, value in (
            ("--reviewer-model", args.reviewer_model),
            ("--quorum", args.quorum),
            ("--rework-rounds", args.rework_rounds),
        ):
            if value is not None:
                raise UsageError(f"{flag} goes with --reviewers N: add it, or drop {flag}")
        return None
    n = args.reviewers
    if n > MAX_REVIEWERS:
        raise UsageError(f"--reviewers {n}: at most {MAX_REVIEWERS} reviewers")
    quorum = args.quorum if args.quorum is not None else n // 2 + 1
    if quorum > n:
        raise UsageError(f"--quorum {quorum} cannot be met by {n} reviewers: at most {n}")
    reviewer_model = None
    if args.reviewer_model is not None:
        reviewer_model = _said("--reviewer-model", args.reviewer_model, "e.g. openai:gpt-4.1")
        try:
            split_model(reviewer_model)
        except ValueError as e:
            raise UsageError(f"--reviewer-model: {e}") from None
    return ReviewOptions(
        reviewers=n, quorum=quorum, model=reviewer_model, rework_rounds=_rounds(args)
    )


def _rounds(args: argparse.Namespace) -> int:
    if args.rework_rounds is None:
        return 1
    try:
        rounds = int(args.rework_rounds)
    except ValueError:
        rounds = -1
    if not 0 <= rounds <= 5:
        raise UsageError(f"--rework-rounds {args.rework_rounds}: give a whole number from 0 to 5")
    return rounds


def approval_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``AgentInput`` fields ``--approve-plan``, ``--require-approval`` and
    ``--approval-timeout`` set."""
    if args.approval_timeout is not None and not (args.approve_plan or args.require_approval):
        raise UsageError("--approval-timeout goes with --approve-plan or --require-approval")
    timeout = {"timeout_s": args.approval_timeout} if args.approval_timeout else {}
    return {
        "plan_approval": PlanApproval(**timeout) if args.approve_plan else None,
        "approval": ApprovalOptions(**timeout) if args.require_approval else None,
    }
