"""One shard of a refactor: a sub-agent that edits its files in its own worktree and branch.

Each file is edited on top of the previous file's commit (the checkpoint), verified, and
committed, in batches of ``batch_files`` per activity; a batch stops at its first failing file,
which the next batch retries, and the circuit breaker stops the shard after
``breaker_threshold`` consecutive failures. Every successful step registers its
compensation, so a failed or cancelled shard leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.core import names
from agentparallels.workflows._call import call
from agentparallels.workflows.circuit_breaker import CircuitBreaker
from agentparallels.workflows.events import PauseGate, child_event
from agentparallels.workflows.hooks import run_hooks
from agentparallels.workflows.ledger import GRANT_SIGNAL, LedgerClient
from agentparallels.workflows.loop_detect import LoopDetector
from agentparallels.workflows.model_step import ModelSteps
from agentparallels.workflows.saga import Saga, incomplete

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.errors import BREAKER_OPEN
    from agentparallels.core.events import EventKind, JobEvent
    from agentparallels.core.llm import FileContext, Grant, Message, ModelRequest
    from agentparallels.core.models import (
        TIME_BOX_CHUNK,
        EditBatchInput,
        EditBatchResult,
        EditOutcome,
        JobRef,
        ModelEdit,
        RefUpdate,
        Sandbox,
        ShardInput,
        ShardProgress,
        ShardRef,
        ShardResult,
        files_digest,
    )

PROGRESS_SIGNAL = names.SHARD_PROGRESS_SIGNAL
"""The signal a shard sends its parent after each file."""

BATCH_FILES = 50
"""Files one edit step of a command edit took when the job did not say (``Limits.batch_files``)
before steps were time-boxed (:data:`TIMED_STEPS`); jobs started then replay with it. Each file
is still verified and committed on its own. A step's own cost (a push, ruff's passes, git's
looks at the worktree, a workflow round trip) is paid per step: at 20 files it was a third of a
2000-file codemod's subprocess time."""
TIMED_STEPS = "timed-steps"
"""Guards the change from :data:`BATCH_FILES` files a step to a time box (a command edit
whose job sets no ``Limits.batch_files``)."""
STEP_SECONDS = 3.0
"""A command edit's step stops starting commands after this long (it looks at the clock
between chunks of ``core.models.TIME_BOX_CHUNK`` commands), and the next step takes the rest:
a crashed worker redoes this much of the commands and at most one chunk more, while a fast
codemod edits a whole small shard in one step (each step costs a push, ruff's three passes,
git's looks at the worktree and a workflow round trip: 5 shards of a 200-file codemod took 9
steps of 50 files, the last of each shard a few files). Not for a shard with hooks, which are
told each step's files before it runs."""
STEP_FILES = 500
"""The most files a step with a time box is given."""
PRECOMPUTED_BATCH_FILES = 500
"""The same, for an edit the plan computed (a rename, whose files are copied from its change
set): copying a file is cheap to redo, and each step costs a push, a ruff run, git's look at
the worktree and the workflow's round trip (at 1000 files a rename took 48 steps of 221 ms in
four shards, a third of the job)."""

BUG_TYPES = [TypeError, ValueError, KeyError, AttributeError, IndexError, AssertionError]
"""Programming errors fail the workflow (after its rollback) instead of retrying its task."""


def _summary(batch: tuple[str, ...], timed: bool) -> str:
    """How the UI names an edit step."""
    more = f" (+{'up to ' if timed else ''}{len(batch) - 1} more)" if len(batch) > 1 else ""
    return f"edit {batch[0]}{more}"


def _longest(batch: tuple[str, ...], command_timeout_s: float, timed: bool) -> timedelta:
    """An edit step's start-to-close timeout: twice its commands' time limits, and 2 minutes
    for git and ruff. A time-boxed step runs one chunk of commands past its box at the most."""
    commands = min(len(batch), TIME_BOX_CHUNK) if timed else len(batch)
    box = STEP_SECONDS if timed else 0
    return timedelta(seconds=commands * command_timeout_s * 2 + box + 120)


class _HookPlace(TypedDict):
    """Where and how a shard runs its hooks: the arguments of ``run_hooks`` that stay the same
    from step to step."""

    job: JobRef
    worktree: str
    shard: str | None
    timeout_s: float
    sandbox: Sandbox


class _Run:
    """What one run of a shard keeps from step to step."""

    def __init__(self, inp: ShardInput, ledger: LedgerClient) -> None:
        limits = inp.limits
        self.shard = ShardRef(job=inp.job, name=inp.shard.name)
        self.files_digest = files_digest(inp.shard.files)
        self.breaker = CircuitBreaker(threshold=limits.breaker_threshold)
        self.saga = Saga()
        self.tip = inp.job.base_commit
        """The shard's branch: the checkpoint of the next step."""
        model_queue = names.capability_queue(workflow.info().task_queue, names.MODEL_CAPABILITY)
        self.model_steps = ModelSteps(inp.budget, inp.prices, task_queue=model_queue, ledger=ledger)
        self.loops = LoopDetector(breaker=self.breaker)
        name = self.shard.name
        self.hook_at = _HookPlace(
            job=inp.job,
            worktree=name,
            shard=name,
            timeout_s=limits.command_timeout_s,
            sandbox=limits.sandbox,
        )
        self.model = inp.edit.as_model()
        """The edit, when a model makes it: one file per step, after its recorded answer."""
        timed = (
            self.model is None
            and inp.change_commit is None
            and limits.batch_files is None
            and workflow.patched(TIMED_STEPS)
        )
        # Not with hooks: a hook around a step is told the step's files, all of them.
        self.timed = timed and not inp.hooks
        """A command edit's steps are time-boxed (:data:`STEP_SECONDS`)."""
        self.pending = list(inp.shard.files)
        self.changed: list[str] = []
        self.attempts = 0
        self.conversation: tuple[Message, ...] = ()
        """The model's conversation about the file it is at (its failures as feedback)."""


@workflow.defn(name=names.SHARD, failure_exception_types=BUG_TYPES)
class ShardWorkflow:
    def __init__(self) -> None:
        self._progress: ShardProgress | None = None
        self._signals: list[asyncio.Future[None]] = []
        self._events: list[JobEvent] = []  # for the next report
        self._gate = PauseGate()
        self._ledger = LedgerClient()

    @workflow.signal(name=GRANT_SIGNAL)
    def budget_grant(self, grant: Grant) -> None:
        """The job's ledger answers a reservation (see workflows.ledger)."""
        self._ledger.granted(grant)

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> ShardProgress | None:
        return self._progress

    @workflow.run
    async def run(self, inp: ShardInput) -> ShardResult:
        self._progress = ShardProgress(
            name=inp.shard.name,
            label=inp.shard.label,
            state="running",
            files_total=len(inp.shard.files),
        )
        if inp.ledger:  # the parent's ledger decides every call; this shard has no share
            self._ledger.parent_id = inp.parent_id
        run = _Run(inp, self._ledger)
        shard = run.shard
        # The first edit step creates the branch and the worktree; their compensations are
        # registered before it, as undoing them is a no-op when they were never made.
        run.saga.add(
            "branch",
            lambda: call(steps.SET_REF, RefUpdate(job=inp.job, ref=shard.ref, target=None)),
        )
        run.saga.add("worktree", lambda: call(steps.REMOVE_WORKTREE, shard))
        try:
            while run.pending:
                await self._gate.wait()  # a paused job starts no new step
                await self._step(inp, run)
                await self._report(inp, run)
            return await self._done(run)
        except (Exception, asyncio.CancelledError) as err:  # not GeneratorExit (eviction)
            failed = await run.saga.compensate()
            if failed:  # reported to the parent, which reports it in the job's failure
                raise incomplete(err, failed) from None
            raise

    async def _step(self, inp: ShardInput, run: _Run) -> None:
        """One edit step: the next batch (for a model, its answer for the next file) edited,
        checked and committed by an activity, then each file's outcome counted."""
        batch, answer = await self._next_batch(inp, run)
        await run_hooks(inp.hooks, "pre-edit", commit=run.tip, files=batch, **run.hook_at)
        step = await self._edit(inp, run, batch, answer)
        if not step.outcomes:
            raise ApplicationError(f"edit step on {batch[0]} reported nothing")
        if step.tip != run.tip:
            undo = RefUpdate(job=inp.job, ref=run.shard.ref, target=run.tip)
            run.saga.add(f"edits up to {step.outcomes[-1].path}", lambda: call(steps.SET_REF, undo))
            run.tip = step.tip
            edited = [o.path for o in step.outcomes if o.status == "committed"]
            await run_hooks(inp.hooks, "post-edit", commit=run.tip, files=edited, **run.hook_at)
        for outcome in step.outcomes:
            run.attempts += 1
            if outcome.status == "failed":
                await self._failed(inp, run, outcome, answer)
            else:
                run.breaker.record_success()
                run.pending.remove(outcome.path)
                run.conversation = ()
                if outcome.status == "committed":
                    run.changed.append(outcome.path)
                    self._note("file_edited", run.shard.name, outcome.path)

    async def _next_batch(self, inp: ShardInput, run: _Run) -> tuple[tuple[str, ...], str | None]:
        """The files of the next step and, for a model edit, the model's answer for its one
        file (one file at a time, each answer a recorded decision)."""
        if run.timed:
            return tuple(run.pending[:STEP_FILES]), None
        if run.model is None:
            size = inp.limits.batch_files
            if size is None:  # a job started before it was optional says 20 itself
                size = BATCH_FILES if inp.change_commit is None else PRECOMPUTED_BATCH_FILES
            return tuple(run.pending[:size]), None
        path = run.pending[0]
        if not run.conversation:
            run.conversation = _edit_prompt(run.model, path)
        # A first attempt is execution; a retry after a failed check is paid for from the
        # verify budget, which execution cannot use up.
        phase = "execute" if len(run.conversation) <= 2 else "verify"
        reply = await run.model_steps.ask(
            _edit_request(run.model, inp, path, run.conversation), phase=phase
        )
        return (path,), reply.text

    async def _edit(
        self, inp: ShardInput, run: _Run, batch: tuple[str, ...], answer: str | None
    ) -> EditBatchResult:
        limits = inp.limits
        return await call(
            steps.EDIT_FILES,
            EditBatchInput(
                shard=run.shard,
                paths=batch,
                checkpoint=run.tip,
                edit=inp.edit,
                change_commit=inp.change_commit,
                ruff_format=inp.ruff_format,
                check_cmd=inp.check_cmd,
                verify_rules=limits.verify_rules,
                timeout_s=limits.command_timeout_s,
                sandbox=limits.sandbox,
                # A model edit's step is one file, its own scope (and history stays small).
                scope=inp.shard.files if run.model is None else (),
                answer=answer,
                time_box_s=STEP_SECONDS if run.timed else None,
                # A hook runs in the shard's worktree and may read any file of it.
                sparse=inp.change_commit is not None and not inp.hooks,
            ),
            summary=_summary(batch, run.timed),
            start_to_close_timeout=_longest(batch, limits.command_timeout_s, run.timed),
        )

    async def _failed(
        self, inp: ShardInput, run: _Run, outcome: EditOutcome, answer: str | None
    ) -> None:
        """A file failed: counted by the breaker (which may stop the shard) and, for a model
        edit, given back to the model as feedback."""
        breaker = run.breaker
        breaker.record_failure()
        self._note("check_failed", run.shard.name, outcome.path, _failure(outcome))
        if not breaker.allows():
            opened = f"after {breaker.failures} consecutive failures"
            self._note("breaker_opened", run.shard.name, outcome.path, opened)
        await self._report(inp, run)
        if not breaker.allows():
            raise ApplicationError(
                f"circuit breaker opened after {breaker.failures} consecutive "
                f"failed attempts at {outcome.path}: `{outcome.command}` failed "
                f"with:\n{outcome.output.strip()}",
                type=BREAKER_OPEN,
                non_retryable=True,
            )
        if answer is not None:  # the failure goes back to the model
            run.loops.record("edit", outcome.path, answer, _feedback(outcome))
            run.conversation = (
                *run.conversation,
                Message(role="assistant", content=answer),
                Message(role="user", content=_feedback(outcome)),
            )

    async def _done(self, run: _Run) -> ShardResult:
        await self._flush()
        assert self._progress is not None
        self._progress = self._progress.model_copy(update={"state": "done"})
        return ShardResult(
            name=run.shard.name,
            head=run.tip,
            files_changed=tuple(run.changed),
            attempts=run.attempts,
            files_digest=run.files_digest,
            usage=run.model_steps.total,
            phase_tokens=run.model_steps.spent(),
            cost_usd=run.model_steps.cost_usd,
        )

    async def _report(self, inp: ShardInput, run: _Run) -> None:
        assert self._progress is not None
        self._progress = self._progress.model_copy(
            update={
                "files_done": len(inp.shard.files) - len(run.pending),
                "breaker": run.breaker.state,
                "failures": run.breaker.failures,
                "tokens": run.model_steps.total.total,
                "phase_tokens": run.model_steps.spent(),
            }
        )
        # Sent without waiting for it, so the next edit step is not held up; awaited in order
        # before the shard ends.
        report = self._progress.model_copy(update={"events": tuple(self._events)})
        self._events.clear()
        parent = workflow.get_external_workflow_handle(inp.parent_id)
        self._signals.append(asyncio.ensure_future(parent.signal(PROGRESS_SIGNAL, report)))

    def _note(self, kind: EventKind, shard: str, path: str, detail: str = "") -> None:
        """An event for the parent to publish, sent with the next progress report."""
        self._events.append(child_event(kind, shard=shard, file=path, detail=detail))

    async def _flush(self) -> None:
        """Wait until the parent has received every progress report and settlement."""
        for sent in self._signals:
            await sent
        self._signals.clear()
        await self._ledger.flush()


EDIT_SYSTEM = (
    "You edit one file of a code base as instructed. Answer with the complete new content of "
    "the file in one fenced code block, or with a unified diff of it in one ```diff block. "
    "Change nothing the instruction does not ask for. No explanations."
)


def _edit_prompt(edit: ModelEdit, path: str) -> tuple[Message, ...]:
    return (
        Message(role="system", content=EDIT_SYSTEM),
        Message(role="user", content=f"Instruction: {edit.instruct}\n\nEdit `{path}`."),
    )


def _edit_request(
    edit: ModelEdit, inp: ShardInput, path: str, conversation: tuple[Message, ...]
) -> ModelRequest:
    """The file itself is read by the model-call step (it stays out of the history)."""
    return ModelRequest(
        model=edit.model,
        base_url=edit.base_url,
        messages=conversation,
        context=FileContext(
            repository=inp.job.repository,
            commit=inp.job.base_commit,
            path=path,
            related_tokens=edit.related_tokens,
            file_tokens=inp.file_tokens.get(path, 0),
        ),
        max_tokens=edit.max_tokens,
        step=f"edit {path}",
    )


def _failure(outcome: EditOutcome) -> str:
    lines = outcome.output.strip().splitlines()
    return f"`{outcome.command}` failed" + (f": {lines[-1]}" if lines else "")


def _feedback(outcome: EditOutcome) -> str:
    return (
        f"That edit failed: `{outcome.command}` said:\n{outcome.output.strip()}\n"
        "Answer again with the corrected file."
    )


__all__ = [
    "BUG_TYPES",
    "EDIT_SYSTEM",
    "BATCH_FILES",
    "PRECOMPUTED_BATCH_FILES",
    "STEP_FILES",
    "STEP_SECONDS",
    "TIMED_STEPS",
    "PROGRESS_SIGNAL",
    "ShardWorkflow",
]
