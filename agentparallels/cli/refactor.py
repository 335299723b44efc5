"""``agentparallels refactor PATH --rename ... | --edit-cmd ... | --instruct ... --model ...``:
refactor a git repository as a durable job, with this process's own worker unless told not to.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from agentparallels import validate
from agentparallels.attributes import register as register_attributes
from agentparallels.cli.common import (
    APPROVAL_WAIT,
    DEFAULT_TASK_QUEUE,
    WORKFLOW,
    add_sandbox_arguments,
    check_key,
    err,
    job_queue,
    new_job_id,
    positive,
    start_and_follow,
    ui_link,
)
from agentparallels.client import connect
from agentparallels.core import attributes
from agentparallels.core.checklist import ApprovalOptions, Checklist
from agentparallels.core.errors import UsageError
from agentparallels.core.events import parse_hooks
from agentparallels.core.models import (
    EditSpec,
    Limits,
    RefactorInput,
    RefactorResult,
)

__all__ = [
    "MODEL_ONLY_FLAGS",
    "add_parser",
    "approval_options",
    "job_input",
    "model_flags_only_with_a_model",
    "new_job_id",
    "refactor",
    "ui_link",
]

MODEL_ONLY_FLAGS: tuple[tuple[str, str], ...] = (
    ("price", "--price"),
    ("budget_tokens", "--budget-tokens"),
    ("phase_shares", "--phase-shares"),
)
"""Options that only mean something when a model makes calls (their dest, their flag)."""


def add_parser(sub: Any) -> None:
    ref = sub.add_parser("refactor", help="refactor a git repository as a durable job")
    ref.add_argument("repository", help="path of a local git repository, or a git URL")
    _add_editors(ref)
    _add_model_options(ref)
    ref.add_argument("--base", default="HEAD", help="commit to start from (default: HEAD)")
    ref.add_argument("--check-cmd", help="verify each edited file with this command too")
    ref.add_argument(
        "--test-cmd", help="run on the merged result before succeeding, e.g. 'pytest -q'"
    )
    ref.add_argument(
        "--apply",
        action="store_true",
        help="fast-forward the current branch to the result (clean working tree)",
    )
    _add_limits(ref)
    _add_confinement(ref)
    _add_placement(ref)
    _add_approval_arguments(ref)
    ref.set_defaults(handler=refactor)


def _add_editors(ref: argparse.ArgumentParser) -> None:
    editors = ref.add_argument_group("editors (choose one)")
    editors.add_argument(
        "--rename",
        metavar="OLD=NEW",
        help="semantic rename: OLD a dotted path (pkg.mod.func, pkg.mod.Class."
        "method, pkg.mod, pkg.mod.func.param), NEW a bare identifier",
    )
    editors.add_argument(
        "--edit-cmd",
        metavar="'CMD {file}'",
        help="run this command on each file ({file} is replaced by its path)",
    )
    editors.add_argument(
        "--instruct", metavar="TEXT", help="have a model edit each file as told (needs --model)"
    )
    editors.add_argument(
        "--files",
        action="append",
        metavar="GLOB",
        help="with --edit-cmd or --instruct: which tracked files (default **/*.py); repeatable",
    )


def _add_model_options(ref: argparse.ArgumentParser) -> None:
    ref.add_argument(
        "--model",
        metavar="PROVIDER:MODEL",
        help="for --instruct: openai:gpt-4.1, anthropic:claude-sonnet-4-5, ...",
    )
    ref.add_argument("--base-url", help="for --instruct: an OpenAI-compatible or proxy endpoint")
    ref.add_argument(
        "--price",
        action="append",
        metavar="MODEL=IN,OUT",
        help="for --instruct: dollars per million input and output tokens, for the cost estimate",
    )
    ref.add_argument(
        "--budget-tokens",
        type=positive,
        metavar="N",
        help="for --instruct: stop before the model calls spend more than N tokens",
    )
    ref.add_argument(
        "--phase-shares",
        metavar="PHASE=SHARE,...",
        help="with --budget-tokens: each phase's share of it, e.g. plan=0.1,execute=0.7,"
        "verify=0.2 (the default); unspent budget flows forward to the later phases",
    )


def _add_limits(ref: argparse.ArgumentParser) -> None:
    limits = Limits()  # the defaults live in the model, once
    ref.add_argument(
        "--parallel",
        type=positive,
        default=limits.parallel,
        help="shards at once (default %(default)s)",
    )
    ref.add_argument(
        "--max-files-per-shard",
        type=positive,
        default=limits.max_files_per_shard,
        help="files in a shard; small modules are packed (default: the files spread over "
        "--parallel shards, at least 20 each)",
    )
    ref.add_argument(
        "--shard-tokens",
        type=positive,
        metavar="N",
        help="most tokens of files in a shard, so each sub-agent's files fit its window "
        "(default: no limit); a single larger file fails the plan",
    )
    ref.add_argument(
        "--batch-files",
        type=positive,
        default=limits.batch_files,
        help="files per edit step, each with its own commit (default 50; 500 for a rename, "
        "whose files are copied from the plan's change set)",
    )
    ref.add_argument(
        "--breaker-threshold",
        type=positive,
        default=limits.breaker_threshold,
        help="consecutive failed verifications that stop a shard (default %(default)s)",
    )
    ref.add_argument(
        "--timeout",
        type=positive,
        default=int(limits.command_timeout_s),
        metavar="SECONDS",
        help="limit of each edit, check and test command (default %(default)s)",
    )


def _add_confinement(ref: argparse.ArgumentParser) -> None:
    ref.add_argument(
        "--sandbox",
        choices=["bwrap", "none"],
        default=Limits().sandbox.mode,
        help="run edit, check and test commands and hooks in bubblewrap (deny by default: the "
        "worktree, the system and the commands' own tools; no network, no secrets) or "
        "unconfined (default %(default)s)",
    )
    add_sandbox_arguments(ref)
    ref.add_argument(
        "--hook",
        action="append",
        metavar="POINT=CMD",
        help="run CMD at pre-edit, post-edit or pre-merge; a non-zero exit vetoes the step and "
        "rolls the job back (repeatable; see docs/patterns.md)",
    )


def _add_placement(ref: argparse.ArgumentParser) -> None:
    ref.add_argument("--job-id", help="the job's id (default: refactor-<repo>-<random>)")
    ref.add_argument(
        "--task-queue",
        help=f"run the job on this queue (default: {DEFAULT_TASK_QUEUE}, served by "
        "`agentparallels worker`; with this process's own worker, a queue of its own)",
    )
    ref.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker in this process; a separate worker runs the job",
    )
    ref.add_argument("--detach", action="store_true", help="start the job and return at once")


def _add_approval_arguments(ref: argparse.ArgumentParser) -> None:
    """The refactor job's checklist and two-phase (approval) flags."""
    ref.add_argument(
        "--max-diff-lines",
        type=positive,
        metavar="N",
        help="checklist: vote no when the result changes more than N lines",
    )
    ref.add_argument(
        "--require-approval",
        action="store_true",
        help="wait for `agentparallels approve JOB` before publishing; reject or time out: "
        "roll back",
    )
    ref.add_argument(
        "--approval-timeout",
        type=positive,
        metavar="SECONDS",
        help="with --require-approval: deny after this long without a decision (default 1 day)",
    )


def approval_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``RefactorInput`` fields the checklist and approval flags set."""
    if args.approval_timeout is not None and not args.require_approval:
        raise UsageError("--approval-timeout goes with --require-approval")
    approval = None
    if args.require_approval:
        approval = ApprovalOptions(
            **({"timeout_s": args.approval_timeout} if args.approval_timeout else {})
        )
    return {"checklist": Checklist(max_diff_lines=args.max_diff_lines), "approval": approval}


def model_flags_only_with_a_model(args: argparse.Namespace, edit: EditSpec) -> None:
    """``--price``, ``--budget-tokens`` and ``--phase-shares`` on a job that calls no model
    would be silently ignored: a usage error instead."""
    if edit.as_model() is not None:
        return
    for dest, flag in MODEL_ONLY_FLAGS:
        if getattr(args, dest, None) is not None:
            raise UsageError(
                f"{flag} applies to model calls, and a {edit.flag} job makes none: drop {flag}, "
                "or have a model edit with --instruct TEXT --model PROVIDER:MODEL"
            )


def job_input(args: argparse.Namespace) -> RefactorInput:
    """The job as asked, or a UsageError saying what is wrong; nothing runs before."""
    repository = validate.repository(args.repository)
    validate.base_ref(repository, args.base)
    edit = validate.edit(
        args.rename,
        args.edit_cmd,
        args.files,
        instruct=args.instruct,
        model=args.model,
        base_url=args.base_url,
    )
    model_flags_only_with_a_model(args, edit)
    if args.apply:
        validate.clean_for_apply(repository)
    if not args.no_worker:  # a separate worker checks its own machine
        validate.sandbox(args.sandbox)
    confined = validate.sandbox_spec(
        args.sandbox, args.sandbox_ro, args.sandbox_rw, args.sandbox_env
    )
    hooks = parse_hooks(args.hook or [])
    return RefactorInput(
        repository=repository,
        base_ref=args.base,
        edit=edit,
        check_cmd=args.check_cmd,
        test_cmd=args.test_cmd,
        apply=args.apply,
        limits=Limits(
            parallel=args.parallel,
            max_files_per_shard=args.max_files_per_shard,
            shard_tokens=args.shard_tokens,
            batch_files=args.batch_files,
            breaker_threshold=args.breaker_threshold,
            command_timeout_s=args.timeout,
            sandbox=confined,
        ),
        budget=validate.budget(args.budget_tokens, args.phase_shares),
        prices=validate.prices(args.price or []),
        hooks=hooks,
        **approval_options(args),
    )


async def _start(
    client: Client,
    args: argparse.Namespace,
    job: RefactorInput,
    job_id: str,
    task_queue: str,
    *,
    eager: bool,
) -> WorkflowHandle[Any, RefactorResult]:
    """Start the job; with ``eager``, its first workflow task comes back with the start, to
    the worker this process runs on ``client`` (see ``devserver.EAGER_DISPATCH``)."""
    shown = attributes.shown(job.repository)
    what = job.edit.summary()
    try:
        return await client.start_workflow(
            WORKFLOW,
            job,
            id=job_id,
            task_queue=task_queue,
            result_type=RefactorResult,
            static_summary=f"Refactor {Path(shown).name}: {what}",
            static_details=f"**Repository:** `{shown}` at `{args.base}`\n\n**Change:** {what}",
            search_attributes=attributes.queued("refactor", shown),
            request_eager_start=eager,
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"a job with id {job_id} already exists; pick another --job-id") from None


async def refactor(args: argparse.Namespace) -> int:
    job = job_input(args)
    task_queue = job_queue(args)
    if not args.no_worker and not args.detach:
        if model := job.edit.as_model():
            check_key(model.model, model.base_url, private=not args.task_queue)
    client = await connect(announce=err)
    await register_attributes(client)
    job_id = args.job_id or new_job_id(job.repository)
    return await start_and_follow(
        client,
        args,
        job_id,
        task_queue,
        lambda eager: _start(client, args, job, job_id, task_queue, eager=eager),
        [APPROVAL_WAIT.format(job_id=job_id)] if args.require_approval else [],
    )
