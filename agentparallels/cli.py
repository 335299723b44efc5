"""``agentparallels``: the command line.

    agentparallels server                       run the embedded Temporal dev server
    agentparallels worker                       run a worker
    agentparallels refactor PATH --rename ...   run the multi-file refactor job
    agentparallels refactor PATH --instruct ... --model openai:...   a model edits each file
    agentparallels status JOB [--follow|--graph]   show a job's progress or outcome
    agentparallels list [--repo P] [--phase P] [--status S] [--query Q]   find jobs
    agentparallels graph JOB [-o FILE]          the call graph a job took, as Mermaid
    agentparallels setup                        register the search attributes on a cluster
    agentparallels cancel JOB                   cancel a job; everything it did is rolled back
    agentparallels cleanup JOB --repo PATH      remove what a failed job's rollback left behind
    agentparallels resume JOB [--test-cmd ...]  run a failed job again, keeping finished shards
    agentparallels events JOB [--follow]        the job's events (file edited, check failed ...)
    agentparallels pause JOB / unpause JOB      hold a job after its running steps; carry on
    agentparallels approve JOB | reject JOB --reason ...   decide on a job awaiting approval
    agentparallels review PATH --ref BRANCH --model ...    a committee of models reviews a diff
    agentparallels replay JOB|FILE...           replay recorded histories against this code
    agentparallels fake-llm --script FILE       a scripted model server on 127.0.0.1
    agentparallels codec-server [--port N]      decrypts payloads for the Temporal UI and CLI

Exit codes: 0 success, 1 the job failed (or was cancelled) and was rolled back (checked: the
repository is as it was), 2 bad input (nothing was changed), 3 the job failed (or was cancelled)
and its rollback left something in the repository (each named, with the command that removes it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import (
    __version__,
    approval_command,
    attributes,
    devserver,
    events_cli,
    logs,
    ops,
    queues,
    review_command,
    tracing,
    validate,
)
from agentparallels.client import connect
from agentparallels.core import names, progress, redact
from agentparallels.core.errors import (
    BAD_INPUT,
    GIT_CONFLICT,
    AgentParallelsError,
    ServerError,
    UsageError,
)
from agentparallels.core.events import parse_hooks
from agentparallels.core.models import (
    WORKFLOW_TASK_TIMEOUT,
    Limits,
    ModelEdit,
    Progress,
    RefactorInput,
    RefactorResult,
    RenameEdit,
)

WORKFLOW = names.REFACTOR
LEFT_BEHIND = 3
"""Exit code: the job failed or was cancelled, and its rollback left something behind."""
DEFAULT_TASK_QUEUE = os.environ.get("AGENTPARALLELS_TASK_QUEUE", names.TASK_QUEUE)


def err(message: str) -> None:
    print(redact.text(message), file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors: one line, exit 2
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def build_parser() -> Parser:
    parser = Parser(
        prog="agentparallels",
        description="Durable agent workflows on Temporal.",
        epilog="exit codes: 0 success; 1 the job failed or was cancelled, and was rolled back "
        "(checked: nothing of it is left); 2 bad input, nothing was changed; 3 the job failed "
        "or was cancelled and its rollback left something behind (each named with the command "
        "that removes it; `agentparallels cleanup JOB --repo PATH` removes them all)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    server = sub.add_parser("server", help="run the embedded Temporal dev server (foreground)")
    server.add_argument("--db", type=Path, help="SQLite database (default: under the state dir)")
    server.add_argument("--port", type=positive, default=devserver.DEFAULT_PORT)
    server.add_argument("--ui-port", type=positive, default=devserver.DEFAULT_UI_PORT)
    server.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    server.add_argument(
        "--ui-codec-endpoint", metavar="URL", help="codec server the UI decodes payloads with"
    )

    worker = sub.add_parser("worker", help="run a worker for every workflow and activity")
    from agentparallels import worker as worker_module

    worker_module.add_arguments(worker)

    ref = sub.add_parser("refactor", help="refactor a git repository as a durable job")
    ref.add_argument("repository", help="path of a local git repository, or a git URL")
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
        help="files in a shard; small modules are packed (default %(default)s)",
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
        help="files per edit step, each with its own commit (default %(default)s)",
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
    ref.add_argument(
        "--sandbox",
        choices=["bwrap", "none"],
        default=limits.sandbox.mode,
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
    approval_command.add_refactor_arguments(ref)
    ref.set_defaults(handler=refactor)
    approval_command.add_parsers(sub)
    review_command.add_parser(sub)

    again = sub.add_parser(
        "replay", help="replay a job's recorded history against the current code"
    )
    again.add_argument("target", nargs="+", help="job ids, or history JSON files")
    again.set_defaults(handler=replay)

    fake = sub.add_parser(
        "fake-llm", help="a scripted model server on loopback, for tests and demos"
    )
    fake.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    fake.add_argument(
        "--script",
        type=Path,
        required=True,
        help="JSON file of answers and faults (see agentparallels/testing/fake_llm.py)",
    )

    codec = sub.add_parser(
        "codec-server", help="serve the payload codec to the Temporal UI (decrypts with your key)"
    )
    codec.add_argument("--port", type=int, default=8081, help="port (default: %(default)s)")
    codec.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    codec.add_argument(
        "--cors-origin",
        action="append",
        metavar="URL",
        help="origin of a Temporal UI allowed to call it (default: http://localhost:8233); "
        "repeatable",
    )

    status = sub.add_parser("status", help="show a job's progress or outcome")
    status.add_argument("job")
    status.add_argument("--follow", action="store_true", help="keep showing until the job ends")
    status.add_argument(
        "--repo",
        metavar="PATH",
        help="when Temporal has no history of the job: read its progress log from this "
        "repository (default: the current directory's)",
    )
    status.add_argument("--graph", action="store_true", help="add the job's call graph (Mermaid)")
    status.set_defaults(handler=status_command)

    cancel = sub.add_parser("cancel", help="cancel a job and roll back everything it did")
    cancel.add_argument("job")
    add_wait_argument(cancel)
    cancel.set_defaults(handler=cancel_command)

    clean = sub.add_parser(
        "cleanup", help="remove what a failed or cancelled job's rollback left behind"
    )
    clean.add_argument("job")
    clean.add_argument("--repo", required=True, metavar="PATH", help="the job's repository")
    clean.set_defaults(handler=cleanup_command)

    resume = sub.add_parser(
        "resume", help="run a failed, cancelled or terminated job again, keeping finished shards"
    )
    resume.add_argument("job")
    resume.add_argument("--test-cmd", help="replace the job's test command ('' for none)")
    resume.add_argument("--check-cmd", help="replace the job's check command ('' for none)")
    resume.add_argument(
        "--timeout", type=positive, metavar="SECONDS", help="replace the job's command time limit"
    )
    add_sandbox_arguments(resume)  # added to the failed run's
    resume.add_argument("--task-queue", help="default: the failed run's")
    resume.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker in this process; a separate worker runs the job",
    )
    resume.add_argument("--detach", action="store_true", help="start the job and return at once")
    resume.set_defaults(handler=resume_command)
    ops.add_parsers(sub)  # list, setup, graph
    events_cli.add_commands(sub)  # events, pause, unpause
    return parser


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


def new_job_id(repository: str) -> str:
    name = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:30] or "repo"
    return f"refactor-{slug}-{uuid.uuid4().hex[:8]}"


def ui_link(client: Client, job_id: str) -> str | None:
    target = client.service_client.config.target_host
    if target in (f"localhost:{devserver.DEFAULT_PORT}", f"127.0.0.1:{devserver.DEFAULT_PORT}"):
        return (
            f"http://localhost:{devserver.DEFAULT_UI_PORT}/namespaces/{client.namespace}"
            f"/workflows/{job_id}"
        )
    return None


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
    if not enabled:
        return contextlib.nullcontext()
    from agentparallels import worker

    return worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue))


MODEL_ONLY_FLAGS = (("price", "--price"), ("budget_tokens", "--budget-tokens"))
MODEL_ONLY_FLAGS += (("phase_shares", "--phase-shares"),)
"""Options that only mean something when a model makes calls (their dest, their flag)."""


def model_flags_only_with_a_model(args: argparse.Namespace, edit: object) -> None:
    """``--price``, ``--budget-tokens`` and ``--phase-shares`` on a job that calls no model
    would be silently ignored: a usage error instead."""
    if isinstance(edit, ModelEdit):
        return
    for dest, flag in MODEL_ONLY_FLAGS:
        if getattr(args, dest, None) is not None:
            editor = "--rename" if isinstance(edit, RenameEdit) else "--edit-cmd"
            raise UsageError(
                f"{flag} applies to model calls, and a {editor} job makes none: drop {flag}, "
                "or have a model edit with --instruct TEXT --model PROVIDER:MODEL"
            )


async def refactor(args: argparse.Namespace) -> int:
    repository = validate.repository(args.repository)
    validate.base_ref(repository, args.base)
    edit = validate.edit(
        args.rename, args.edit_cmd, args.files, instruct=args.instruct, model=args.model,
        base_url=args.base_url,
    )  # fmt: skip
    model_flags_only_with_a_model(args, edit)
    if args.apply:
        validate.clean_for_apply(repository)
    if not args.no_worker:  # a separate worker checks its own machine
        validate.sandbox(args.sandbox)
    confined = validate.sandbox_spec(
        args.sandbox, args.sandbox_ro, args.sandbox_rw, args.sandbox_env
    )
    hooks = parse_hooks(args.hook or [])
    job = RefactorInput(
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
        **approval_command.job_options(args),
    )
    task_queue = job_queue(args)
    if not args.no_worker and not args.detach:
        _check_key(edit, private=not args.task_queue)
    client = await connect(announce=err)
    await attributes.register(client)
    job_id = args.job_id or new_job_id(repository)
    shown = attributes.shown(repository)
    if isinstance(edit, RenameEdit):
        what = f"rename {edit.old} -> {edit.new}"
    elif isinstance(edit, ModelEdit):
        what = f"{edit.model} edits each file: {edit.instruct[:80]}"
    else:
        what = f"run `{edit.command}` on each file"
    try:
        handle = await client.start_workflow(
            WORKFLOW,
            job,
            id=job_id,
            task_queue=task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            result_type=RefactorResult,
            static_summary=f"Refactor {Path(shown).name}: {what}",
            static_details=f"**Repository:** `{shown}` at `{args.base}`\n\n**Change:** {what}",
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(attributes.JOB_KIND, "refactor"),
                SearchAttributePair(attributes.REPOSITORY, shown),
                SearchAttributePair(attributes.PHASE, "queued"),
                SearchAttributePair(attributes.FILES_DONE, 0),
            ]),
        )  # fmt: skip
    except WorkflowAlreadyStartedError:
        raise UsageError(f"a job with id {job_id} already exists; pick another --job-id") from None
    err(f"job {job_id} started")
    if args.require_approval:
        err(f"once every check passes it waits for `agentparallels approve {job_id}` (or reject)")
    if link := ui_link(client, job_id):
        err(f"watch it in the Temporal UI: {link}")
    if args.detach:
        print(job_id)
        return 0
    async with in_process_worker(client, task_queue, not args.no_worker):
        return await _finish_here(handle, task_queue)


def _check_key(edit: Any, *, private: bool) -> None:
    """A model edit that needs a key this process lacks, run by this process's worker alone:
    a usage error now rather than a failed job (keys never travel with jobs)."""
    if not isinstance(edit, ModelEdit) or edit.base_url or not private:
        return
    from agentparallels.core.llm import KEY_VARIABLES, split_model

    variable = KEY_VARIABLES[split_model(edit.model)[0]]
    if not os.environ.get(variable):
        raise UsageError(
            f"{variable} is not set: this command's worker makes the model calls of --model "
            f"{edit.model}; set it, or run the job with --no-worker on workers that have it"
        )


async def _finish_here(handle: WorkflowHandle[Any, RefactorResult], task_queue: str) -> int:
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


async def finish(handle: WorkflowHandle[Any, RefactorResult], *, show: bool) -> int:
    """Follow the job to its end, showing progress; report the outcome; return the exit code."""
    outcome = asyncio.ensure_future(handle.result())
    live = sys.stderr.isatty()
    last = ""
    while not outcome.done():
        p = await _progress(handle)
        if show and p is not None and (text := progress.line(p)) != last:
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
        return await check_rollback(handle, e, _report_failure(handle.id, e))
    print(progress.summary(result))
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
    if rc != 2:  # bad input: one line, the usage error's
        nothing = f"nothing of job {handle.id} is left; the repository is as it was"
        err(f"checked {repository}: {nothing}")
    return rc


def _report_failure(job_id: str, e: WorkflowFailureError) -> int:
    cause = e.cause
    if isinstance(cause, CancelledError):
        err(f"job {job_id} was cancelled and rolled back")
        return 1
    if isinstance(cause, ApplicationError) and cause.type == BAD_INPUT:
        err(f"agentparallels: error: {cause.message.splitlines()[0]}")
        return 2
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
    err(f"job {job_id} failed: {message}")
    return 1


async def _progress(handle: WorkflowHandle[Any, Any]) -> Progress | None:
    try:
        return await handle.query(
            names.PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=2)
        )
    except Exception:  # no worker has picked the job up yet, or it just ended
        return None


async def _existing(
    client: Client, job_id: str
) -> tuple[WorkflowHandle[Any, RefactorResult], WorkflowExecutionDescription]:
    """The job's handle and its latest run's description; a usage error for an unknown id."""
    handle = client.get_workflow_handle(job_id, result_type=RefactorResult)
    try:
        return handle, await handle.describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no job {job_id}: see the Temporal UI for job ids") from None
        raise


async def status_command(args: argparse.Namespace) -> int:
    try:
        client = await connect(autostart=False, announce=err)
        handle, desc = await _existing(client, args.job)
    except UsageError:  # no history (or no server): the job's repository may still know it
        logged = _logged(args.job, args.repo)
        if logged is None:
            raise
        print(logged)
        return 0
    if desc.status != WorkflowExecutionStatus.RUNNING:
        rc = await finish(handle, show=False)
    elif args.follow:
        rc = await finish(handle, show=True)
    else:
        rc = 0
        p = await _progress(handle)
        if p is None:
            print(
                f"job {args.job} is running but no worker is serving it: start one with "
                f"{queues.how_to_serve(desc.task_queue)}"
            )
        else:
            print(progress.table(p))
    if args.graph:
        from agentparallels.callgraph import markdown

        print("\n" + markdown(await ops.graph_of(client, args.job)), end="")
    return rc


def _logged(job_id: str, repo: str | None) -> str | None:
    """What the job's progress log in ``repo`` (default: the current directory's repository)
    says; None when there is none. An explicit ``repo`` without a log is a usage error."""
    from agentparallels.activities import progress_log

    if repo is None:
        found = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                               text=True)  # fmt: skip
        if found.returncode != 0:
            return None
        repository = found.stdout.strip()
    else:
        repository = validate.repository(repo)
    logged = progress_log.read(repository, job_id)
    if logged is None and repo is not None:
        raise UsageError(
            f"no job {job_id}: Temporal has no history of it and {repository} no progress log"
        )
    return progress.logged(logged, repository) if logged else None


async def resume_command(args: argparse.Namespace) -> int:
    from agentparallels import resume

    client = await connect(autostart=False, announce=err)
    overrides = resume.Overrides(
        test_cmd=args.test_cmd, check_cmd=args.check_cmd, timeout_s=args.timeout
    )
    again = await resume.prepare(client, args.job, overrides)
    if args.sandbox_ro or args.sandbox_rw or args.sandbox_env:
        limits = again.input.limits
        spec = validate.sandbox_spec(
            limits.sandbox.mode, args.sandbox_ro, args.sandbox_rw, args.sandbox_env,
            base=limits.sandbox,
        )  # fmt: skip
        limits = limits.model_copy(update={"sandbox": spec})
        again = dataclasses.replace(again, input=again.input.model_copy(update={"limits": limits}))
    if validate.is_url(again.input.repository):  # a job started before URLs were checked
        validate.no_credentials(again.input.repository)
    validate.endpoint(getattr(again.input.edit, "base_url", None))
    await attributes.register(client)
    shown = attributes.shown(again.input.repository)
    summary = await again.old.static_summary() or f"Refactor {shown}"
    # Not the old run's queue itself: a queue of the command that ran it has no worker now.
    task_queue = job_queue(args, again.old.task_queue)
    try:
        handle = await client.start_workflow(
            WORKFLOW,
            again.input,
            id=args.job,
            task_queue=task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            result_type=RefactorResult,
            static_summary=summary.removesuffix(" (resumed)") + " (resumed)",
            static_details=await again.old.static_details(),
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(attributes.JOB_KIND, "refactor"),
                SearchAttributePair(attributes.REPOSITORY, shown),
                SearchAttributePair(attributes.PHASE, "queued"),
                SearchAttributePair(attributes.FILES_DONE, 0),
            ]),
        )  # fmt: skip
    except WorkflowAlreadyStartedError:
        raise UsageError(f"job {args.job} was started again meanwhile; see its status") from None
    err(
        f"job {args.job} resumed; shards its earlier run finished, kept if still in reach: "
        f"{', '.join(sorted(again.input.reuse)) or 'none'}"
    )
    if args.detach:
        print(args.job)
        return 0
    async with in_process_worker(client, task_queue, not args.no_worker):
        return await _finish_here(handle, task_queue)


def _split_targets(targets: list[str]) -> tuple[list[Any], list[str]]:
    """History files (loaded) and job ids, from the command line's targets."""
    from agentparallels import replay as replaying

    histories, jobs = [], []
    for target in targets:
        path = Path(target)
        if path.suffix != ".json" and not path.exists():
            jobs.append(target)
            continue
        if not path.is_file():
            raise UsageError(f"no history file {target}")
        try:
            histories.append(replaying.load(path))
        except ValueError as e:
            raise UsageError(f"{target} is not a workflow history in JSON: {e}") from None
    return histories, jobs


async def replay(args: argparse.Namespace) -> int:
    from agentparallels import replay as replaying

    histories, jobs = _split_targets(args.target)
    if jobs:
        client = await connect(autostart=False, announce=err)
        for job in jobs:
            await _existing(client, job)  # a clear error for an unknown id
            histories.extend(await replaying.histories_of(client, job))
    failed = 0
    for result in await replaying.replay(histories):
        if result.failure is None:
            print(f"{result.workflow_id}: {result.events} events replayed without non-determinism")
        else:
            failed += 1
            print(f"{result.workflow_id}: does not replay: {result.failure}")
    return 1 if failed else 0


async def cancel_command(args: argparse.Namespace) -> int:
    """Ask the job to cancel; its own workers roll it back (this command starts none)."""
    client = await connect(autostart=False, announce=err)
    handle, desc = await _existing(client, args.job)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise UsageError(f"job {args.job} is not running (it is {desc.status.name.lower()})")
    await handle.cancel()
    queue = desc.task_queue
    if not await queues.served(client, queue) or not await queues.taken_up(
        handle, queues.history_length(desc), queues.is_cancel_request, args.wait
    ):
        err(queues.unserved(args.job, queue, f"job {args.job} is asked to cancel",
                            "it rolls back"))  # fmt: skip
        return 1
    err(f"cancelling job {args.job}: rolling back ...")
    return await finish(handle, show=False)


async def cleanup_command(args: argparse.Namespace) -> int:
    from agentparallels import leftovers

    repository = validate.repository(args.repo)
    client = await connect(autostart=False, announce=err)
    handle, desc = await _existing(client, args.job)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise UsageError(f"job {args.job} is still running: cancel it first, its rollback may do")
    # A job that succeeded published its branch: that is its result, not a leftover.
    branch = desc.status != WorkflowExecutionStatus.COMPLETED
    found = leftovers.find(repository, handle.id, branch=branch)
    left = leftovers.remove(repository, handle.id, branch=branch)
    if left:
        err(leftovers.report(repository, handle.id, left))
        return LEFT_BEHIND
    for leftover in found:
        print(f"removed {leftover.what}")
    print(f"nothing of job {args.job} is left in {repository}")
    return 0


def server_options(args: argparse.Namespace) -> devserver.ServerOptions:
    extra = ("--ui-codec-endpoint", args.ui_codec_endpoint) if args.ui_codec_endpoint else ()
    opts = devserver.ServerOptions(ip=args.ip, port=args.port, ui_port=args.ui_port)
    opts = dataclasses.replace(opts, extra_args=extra)
    return dataclasses.replace(opts, db=args.db.resolve()) if args.db else opts


def run(args: argparse.Namespace) -> int:
    if getattr(args, "handler", None) is not None:
        # Client commands: the terminal shows progress; an in-process worker's log goes to a file.
        logs.configure(devserver.state_dir() / "agentparallels.log")
    else:
        logs.configure()
    tracing.configure()
    if args.command == "server":
        return devserver.serve(server_options(args))
    if args.command == "codec-server":
        from agentparallels import codec_server

        return codec_server.command(args.ip, args.port, args.cors_origin)
    if args.command == "fake-llm":
        from agentparallels.testing import fake_llm

        try:
            return fake_llm.serve(args.port, args.script)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot serve {args.script}: {e}") from None
    if args.command == "worker":
        from agentparallels import worker

        asyncio.run(worker.run(worker.options_from(args)))
        return 0
    return asyncio.run(args.handler(args))


def main(argv: list[str] | None = None) -> int:
    """Run one command; user mistakes become a one-line message and exit code 2."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as e:
        err(f"agentparallels: error: {e}")
        return 2
    except ServerError as e:
        err(f"agentparallels: {e}")
        return 1
    except AgentParallelsError as e:
        err(f"agentparallels: {e}")
        return 1
    except RPCError as e:  # the server went away, or answers but not in time
        err(
            f"agentparallels: the Temporal server did not answer ({e.message or e.status.name}); "
            "check it is running and healthy (`agentparallels server`, or TEMPORAL_ADDRESS)"
        )
        return 1
    except KeyboardInterrupt:
        err(
            "interrupted; a running job goes on when a worker serves its task queue "
            "(`agentparallels status JOB`, `agentparallels cancel JOB`)"
        )
        return 130


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


def entry() -> None:
    exit_with(lambda: main(sys.argv[1:]))
