"""The flagship job: a durable multi-file refactor of a git repository.

It composes the patterns: an orchestrator plans and shards the work by module; one child workflow
per shard edits its files in its own worktree (fan-out, bounded by ``parallel``), each guarded by
a circuit breaker; the children's branches are merged only after all have succeeded (fan-in);
the checklist votes on the merged result (a rename's early, on the change set the shards
commit); and a saga undoes every step on failure or cancellation, so the user's repository is
never left half refactored.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from agentparallels.core import names
from agentparallels.workflows._call import call
from agentparallels.workflows.events import HOLDS_THROUGH_PAUSE, JobEvents, ending
from agentparallels.workflows.fanout import gather_bounded
from agentparallels.workflows.hooks import run_hooks
from agentparallels.workflows.ledger import (
    JOB_LEDGER,
    RESERVE_SIGNAL,
    SETTLE_SIGNAL,
    Ledger,
    deliver,
)
from agentparallels.workflows.saga import Saga, failure_of, incomplete, rolled_back, shielded
from agentparallels.workflows.shard import BUG_TYPES, PROGRESS_SIGNAL, ShardWorkflow
from agentparallels.workflows.sharding import (
    MIN_PRECOMPUTED_SHARD_FILES,
    MIN_SHARD_FILES,
    FileTooLarge,
    files_per_shard,
    module_of,
    shard_files,
)
from agentparallels.workflows.two_phase import ApprovalGate, awaiting_details, prepare

CLEANUP = "cleanup: remove scratch refs and worktrees"
PROGRESS_LOG = "progress-log"
"""Patch id of the write-ahead progress log: runs started before it replay without it."""
CHECKLIST = "two-phase-checklist"
"""Patch id: jobs started before the checklist replay with the test command alone."""
PUBLISH_INVARIANT = "publish-invariant"
"""Patch id of the result check before publishing: jobs started before it replay without it."""
PRECOMPUTED_SHARDS = "precomputed-shards"
"""Patch id: jobs started before it size a rename's shards like any edit's."""
EARLY_CHECKS = "early-checks"
"""Patch id: a job with a change set (a rename) lets its checklist vote on it while the shards
commit it; jobs started before it vote only after the merge."""
EARLY_VOTES = ("tests", "lint", "diff-size")
"""The checks that vote early, on a rename's change set: those that read only its tree. The
conflicts check reads the base ref as it is, so it votes on the merge, beside the result check."""
STEPS_ASIDE = "steps-aside"
"""Patch id: the result check runs beside the votes (and must pass before a person is asked to
approve), and publishing cleans up. Jobs started before it check the result after the votes
and clean up in a step of their own."""

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.attributes import FILES_DONE, PHASE, TOKENS
    from agentparallels.core.checklist import AWAITING_APPROVAL, Decision
    from agentparallels.core.errors import (
        BAD_INPUT,
        CHECK_FAILED,
        CHECKED_TREE_DIFFERS,
        RESULT_MISMATCH,
    )
    from agentparallels.core.llm import PHASES, BudgetLimits, Grant, Reservation, Settlement, Usage
    from agentparallels.core.messages import ResultCheckInput, ShardClaim
    from agentparallels.core.models import (
        CheckInput,
        CheckRun,
        JobRef,
        MergeInput,
        ModuleSummary,
        PhaseBudget,
        Plan,
        PlanInput,
        Progress,
        Published,
        PublishInput,
        RefactorInput,
        RefactorResult,
        RefUpdate,
        Shard,
        ShardInput,
        ShardProgress,
        ShardResult,
    )
    from agentparallels.core.progress import budget as budget_line
    from agentparallels.core.progress_log import OpenLogInput, ShardDoneInput


@workflow.defn(name=names.REFACTOR, failure_exception_types=BUG_TYPES)
class RefactorWorkflow:
    def __init__(self) -> None:
        self._budget = BudgetLimits()
        self._ledger: Ledger | None = None
        """The job's token ledger, from which every shard reserves (see workflows.ledger)."""
        self._file_tokens: dict[str, int] = {}
        self._usage = Usage()
        self._progress = Progress(job_id="", phase="queued")
        self._shards: dict[str, ShardProgress] = {}
        self._reused: dict[str, ShardResult] = {}
        """Shards an earlier run of the job finished, taken over instead of run again."""
        self._logged = False
        self._aside = False
        """The result check runs beside the votes, publishing cleans up (``STEPS_ASIDE``)."""
        self._early: asyncio.Task[tuple[CheckRun, ...]] | None = None
        """A rename's checklist, voting on the change set while the shards commit it."""
        self._cleaned = False
        """Publishing cleaned up (``PublishInput.clean_up``): no cleanup step after it."""
        self._events = JobEvents(on_pause=self._paused)
        self._before_pause = "queued"
        self._gate = ApprovalGate()

    @workflow.update(name=names.APPROVE_UPDATE)
    def approve(self, decision: Decision) -> str:
        return self._gate.decide(True, decision)

    @approve.validator
    def _may_approve(self, decision: Decision) -> None:
        self._gate.validate(True, decision, self._progress.phase)

    @workflow.update(name=names.REJECT_UPDATE)
    def reject(self, decision: Decision) -> str:
        return self._gate.decide(False, decision)

    @reject.validator
    def _may_reject(self, decision: Decision) -> None:
        self._gate.validate(False, decision, self._progress.phase)

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> Progress:
        return self._progress.model_copy(update={"shards": tuple(self._shards.values())})

    @workflow.signal(name=PROGRESS_SIGNAL)
    def shard_progress(self, update: ShardProgress) -> None:
        self._events.extend(update.events)
        update = update.model_copy(update={"events": ()})
        if update.name in self._shards and self._shards[update.name].state == "running":
            self._shards[update.name] = update
            self._refresh()

    @workflow.signal(name=RESERVE_SIGNAL)
    async def budget_reserve(self, request: Reservation) -> None:
        if self._ledger is not None:
            await self._answer(self._ledger.reserve(request))

    @workflow.signal(name=SETTLE_SIGNAL)
    async def budget_settle(self, settled: Settlement) -> None:
        if self._ledger is not None:
            await self._answer(self._ledger.settle(settled))

    async def _answer(self, grants: list[tuple[str, Grant]]) -> None:
        """Show the ledger's new figures; signal each decision to the shard that asked."""
        assert self._ledger is not None
        workflow.upsert_search_attributes([TOKENS.value_set(self._ledger.total_spent)])
        self._refresh()
        await deliver(grants)

    @workflow.run
    async def run(self, inp: RefactorInput) -> RefactorResult:
        job, saga = self._begin(inp)
        try:
            the_plan = await self._plan(inp, job)
            job = job.model_copy(update={"base_commit": the_plan.base_commit})
            self._early = self._vote_early(inp, job, the_plan)
            shards = await self._shard(inp, job, the_plan)
            result = await self._edit(inp, job, the_plan, shards, saga)
        except (Exception, asyncio.CancelledError) as err:  # not GeneratorExit (eviction)
            await self._roll_back(err, job, saga)
        if not self._cleaned:  # else publishing did it
            await shielded(call(steps.CLEANUP, job, summary=CLEANUP), raise_cancel=False)
        await self._events.finish("done", f"{result.outcome}: {len(result.files_changed)} files")
        return result

    def _begin(self, inp: RefactorInput) -> tuple[JobRef, Saga]:
        """The job's reference (its base commit still unknown) and its saga; what the UI,
        the ledger and the subscribers see from the start."""
        info = workflow.info()
        timestamp = int(info.start_time.timestamp())
        self._budget = inp.budget
        self._progress = Progress(job_id=info.workflow_id, phase="plan")
        job = JobRef(
            job_id=info.workflow_id, repository=inp.repository, base_commit="", timestamp=timestamp
        )
        self._logged = workflow.patched(PROGRESS_LOG)
        if inp.budget.limited and workflow.patched(JOB_LEDGER):
            self._ledger = Ledger(inp.budget)
        for subscriber in inp.subscribers:
            self._events.subscribe(subscriber)
        self._events.record("started", detail=f"{inp.repository} at {inp.base_ref}")
        return job, Saga()

    async def _plan(self, inp: RefactorInput, job: JobRef) -> Plan:
        self._phase("plan")
        return await call(
            steps.PLAN,
            PlanInput(
                job_id=job.job_id,
                repository=inp.repository,
                base_ref=inp.base_ref,
                edit=inp.edit,
                timestamp=job.timestamp,
                format_change=True,
                count_tokens=inp.edit.as_model() is not None or inp.limits.shard_tokens is not None,
                verify_rules=inp.limits.verify_rules,
                sandbox=inp.limits.sandbox,
                timeout_s=inp.limits.command_timeout_s,
            ),
            summary="plan: list the files to change",
        )

    async def _shard(self, inp: RefactorInput, job: JobRef, the_plan: Plan) -> list[Shard]:
        """Pack the plan's files into shards, and take over those an earlier run finished."""
        self._file_tokens = dict(zip(the_plan.files, the_plan.tokens, strict=False))
        minimum = MIN_SHARD_FILES
        if the_plan.change_commit is not None and not inp.limits.max_files_per_shard:
            if workflow.patched(PRECOMPUTED_SHARDS):
                minimum = MIN_PRECOMPUTED_SHARD_FILES
        try:
            per_shard = inp.limits.max_files_per_shard or files_per_shard(
                len(the_plan.files), inp.limits.parallel, minimum
            )
            shards = shard_files(
                the_plan.files,
                per_shard,
                dict(zip(the_plan.files, the_plan.tokens, strict=False)),
                inp.limits.shard_tokens,
            )
        except FileTooLarge as e:
            raise ApplicationError(str(e), type=BAD_INPUT, non_retryable=True) from None
        self._shards = {
            s.name: ShardProgress(name=s.name, label=s.label, files_total=len(s.files))
            for s in shards
        }
        self._progress = self._progress.model_copy(update={"files_total": len(the_plan.files)})
        if self._logged and shards:
            self._reused = await call(
                steps.OPEN_LOG,
                OpenLogInput(
                    job=job,
                    files_total=len(the_plan.files),
                    shards=tuple(shards),
                    offered=inp.reuse,
                ),
                summary="progress log: take over finished shards, record the plan",
            )
        return shards

    async def _edit(
        self, inp: RefactorInput, job: JobRef, the_plan: Plan, shards: list[Shard], saga: Saga
    ) -> RefactorResult:
        """Fan out one child per shard; then fan in and publish what they changed."""
        self._phase("edit")
        self._aside = workflow.patched(STEPS_ASIDE)
        results = await gather_bounded(
            [
                partial(
                    self._run_shard, inp, job, s, the_plan.change_commit, the_plan.ruff_format, saga
                )
                for s in shards
            ],
            inp.limits.parallel,
        )
        changed = tuple(sorted(p for r in results for p in r.files_changed))
        if not changed:
            await _stopped(self._early)
            # Nothing to publish, so nothing for the publish check to compare: a shard
            # whose branch moved while it reports no file changed is caught here instead.
            moved = [r.name for r in results if r.head != job.base_commit]
            if moved:
                raise ApplicationError(
                    f"shards {', '.join(moved)} committed edits but report no changed "
                    "file: the result is not what the verified steps produced",
                    type=RESULT_MISMATCH,
                    non_retryable=True,
                )
            self._phase("done")
            result = self._result(inp, job, results, job.base_commit, (), None)
        else:
            result = await self._finish(inp, job, results, saga, the_plan.change_commit)
        # What the plan could not do the usual way, in the report (no command: replays).
        return result.model_copy(
            update={"respelled": the_plan.respelled, "unparsed": the_plan.unparsed}
        )

    def _vote_early(
        self, inp: RefactorInput, job: JobRef, the_plan: Plan
    ) -> asyncio.Task[tuple[CheckRun, ...]] | None:
        """The checklist's votes on the plan's change set, started now, while the shards commit
        it: a job whose edit the plan computed at once (a rename) publishes that change set's
        tree, so the votes hold for the result, which the publish check confirms
        (``ResultCheckInput.checked``); when it does not, the checks vote again on the result.
        None for other jobs, and for a job with hooks (its pre-merge hook comes before the
        checklist)."""
        commit = the_plan.change_commit
        if commit is None or inp.hooks or not workflow.patched(EARLY_CHECKS):
            return None

        async def vote() -> tuple[CheckRun, ...]:
            await self._events.gate.wait()
            return await self._checklist(inp, job, commit, only=EARLY_VOTES)

        return asyncio.create_task(vote())

    async def _roll_back(self, err: BaseException, job: JobRef, saga: Saga) -> NoReturn:
        """Undo every step, newest first, and clean up; then fail with what went wrong (and
        what the rollback could not undo, if anything)."""
        self._phase("rolling back")
        # Before the rollback removes the worktree a vote may use; shielded, as the rollback
        # is: a cancel arriving now must not skip it.
        await shielded(_stopped(self._early), raise_cancel=False)
        failed: list[str] = []
        try:
            failed = await saga.compensate()
        finally:
            if note := await shielded(failure_of(call(steps.CLEANUP, job, summary=CLEANUP))):
                failed.append(f"{CLEANUP}: {note}")
        self._phase("cancelled" if isinstance(err, asyncio.CancelledError) else "failed")
        await shielded(self._events.finish(*ending(err)), raise_cancel=False)
        if failed:  # reported, never swallowed: the user is told what may be left
            raise incomplete(err, failed) from None
        if isinstance(err, FailureError):
            raise rolled_back(err) from err
        raise err

    async def _finish(
        self,
        inp: RefactorInput,
        job: JobRef,
        results: list[ShardResult],
        saga: Saga,
        change_commit: str | None,
    ) -> RefactorResult:
        """Fan in: merge the shards, let every check vote on the merge (unless they voted
        early on a change set with the merge's tree; and, if asked, a person approve it),
        publish the branch."""
        merged = await self._merge(inp, job, results, saga)
        claims = tuple(
            ShardClaim(name=r.name, head=r.head, files_changed=r.files_changed) for r in results
        )
        # The result check beside the votes: it needs only the merge.
        early = self._early
        checking: asyncio.Future[bool] | None = None
        late: asyncio.Future[tuple[CheckRun, ...]] | None = None
        if early is not None and change_commit is not None:
            checking = asyncio.ensure_future(self._check(job, merged, claims, change_commit))
            if inp.checklist.conflicts:  # the base ref as it is now, not when the plan ended
                late = asyncio.ensure_future(self._checklist(inp, job, merged, only=("conflicts",)))
        elif self._aside:
            checking = asyncio.ensure_future(self._check(job, merged, claims, None))
        try:
            voted: tuple[CheckRun, ...] | None = None
            if early is not None:
                await self._events.gate.wait()
                self._phase("checklist")
                voted = await early
                voted += await late if late is not None else ()
                if checking is not None and not await checking:
                    voted = None  # the result is not the change set: the checks vote on it
            checks = await self._vote(inp, job, merged, voted, checking)
        except (Exception, asyncio.CancelledError):  # not GeneratorExit (eviction)
            await _stopped(checking)
            await _stopped(late)
            raise
        await self._events.gate.wait()
        self._phase("publish")
        if checking is None and workflow.patched(PUBLISH_INVARIANT):  # what the shards made
            await call(
                steps.CHECK_RESULT,
                ResultCheckInput(job=job, commit=merged, shards=claims),
                summary="check the result against every shard's verified head",
            )
        # The point of no return: once publishing starts, a cancel request is too late.
        published = await shielded(
            call(
                steps.PUBLISH,
                PublishInput(job=job, commit=merged, apply=inp.apply, clean_up=self._aside),
                summary=f"publish {job.branch}" + (", clean up" if self._aside else ""),
            ),
            raise_cancel=False,
        )
        self._cleaned = published.cleaned
        self._phase("done")
        self._phase("done")
        return self._result(inp, job, results, merged, tuple(checks), published)

    async def _merge(
        self, inp: RefactorInput, job: JobRef, results: list[ShardResult], saga: Saga
    ) -> str:
        """The shards' branches merged into one commit (undone by the saga); the pre-merge
        hooks run on it."""
        await self._events.gate.wait()
        self._phase("merge")
        merged = await call(
            steps.MERGE,
            MergeInput(job=job, shard_heads=tuple(r.head for r in results)),
            summary=f"merge {len(results)} shards",
        )
        saga.add(
            "merge",
            lambda: call(
                steps.SET_REF, RefUpdate(job=job, ref=f"{job.scratch}/merged", target=None)
            ),
        )
        files = sorted(p for r in results for p in r.files_changed)
        await run_hooks(
            inp.hooks,
            "pre-merge",
            job=job,
            worktree="pre-merge",
            commit=merged,
            files=files,
            timeout_s=inp.limits.command_timeout_s,
            sandbox=inp.limits.sandbox,
        )
        return merged

    async def _check(
        self, job: JobRef, merged: str, claims: tuple[ShardClaim, ...], checked: str | None
    ) -> bool:
        """The publish check of ``merged`` (it raises if the result is not what the shards
        made), and whether it has the tree of ``checked``, the commit the checks voted on
        (``ResultCheckInput.checked``; always, without one)."""
        try:
            await call(
                steps.CHECK_RESULT,
                ResultCheckInput(job=job, commit=merged, shards=claims, checked=checked),
                summary="check the result against every shard's verified head"
                + (" and the change set the checks voted on" if checked else ""),
            )
        except ActivityError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.type == CHECKED_TREE_DIFFERS:
                return False
            raise
        return True

    async def _vote(
        self,
        inp: RefactorInput,
        job: JobRef,
        merged: str,
        voted: tuple[CheckRun, ...] | None = None,
        checking: asyncio.Future[bool] | None = None,
    ) -> list[CheckRun]:
        """Prepare: every check votes on the merged commit (jobs started before the checklist:
        the test command alone), unless they ``voted`` already on its tree; the result check
        under way (``checking``) passes; then, if asked, a person decides."""
        checks: list[CheckRun] = list(voted or ())
        two_phase = voted is None and workflow.patched(CHECKLIST)
        if inp.test_cmd and voted is None and not two_phase:
            self._phase("test")
            checks.append(await self._test(inp, job, merged))
        if two_phase:  # prepare: every check votes; then, if asked, a person decides
            await self._events.gate.wait()
            self._phase("checklist")
            checks = list(await self._checklist(inp, job, merged))
        if checking is not None:
            await checking
        if inp.approval is not None:
            timeout = timedelta(seconds=inp.approval.timeout_s)
            self._phase(AWAITING_APPROVAL)
            self._events.record("waiting_for_approval", detail=f"approve or reject {job.job_id}")
            since = workflow.now().strftime("%Y-%m-%d %H:%M:%S UTC")
            workflow.set_current_details(awaiting_details(job.job_id, timeout, since))
            await self._gate.wait(timeout)
        return checks

    async def _checklist(
        self,
        inp: RefactorInput,
        job: JobRef,
        commit: str,
        only: tuple[str, ...] | None = None,
    ) -> tuple[CheckRun, ...]:
        return await prepare(
            job,
            commit,
            inp.checklist,
            base_ref=inp.base_ref,
            test_cmd=inp.test_cmd,
            rules=inp.limits.verify_rules,
            timeout_s=inp.limits.command_timeout_s,
            sandbox=inp.limits.sandbox,
            only=only,
        )

    async def _test(self, inp: RefactorInput, job: JobRef, merged: str) -> CheckRun:
        """The test command on the merged commit, as jobs started before the checklist ran it."""
        assert inp.test_cmd is not None
        check = await call(
            steps.RUN_CHECK,
            CheckInput(
                job=job,
                commit=merged,
                command=inp.test_cmd,
                timeout_s=inp.limits.command_timeout_s,
                sandbox=inp.limits.sandbox,
            ),
            summary=f"test: {inp.test_cmd}",
            start_to_close_timeout=timedelta(seconds=inp.limits.command_timeout_s + 120),
        )
        if not check.passed:
            raise ApplicationError(
                f"test command `{inp.test_cmd}` failed (exit {check.exit_code}) on the "
                f"merged result:\n{check.output.strip()}",
                type=CHECK_FAILED,
                non_retryable=True,
            )
        return check

    async def _run_shard(
        self,
        inp: RefactorInput,
        job: JobRef,
        shard: Shard,
        change_commit: str | None,
        ruff_format: bool,
        saga: Saga,
    ) -> ShardResult:
        if shard.name in self._reused:  # finished by an earlier run, its branch set again
            if self._ledger is not None:  # what it spent counts against the budget
                self._ledger.count(self._reused[shard.name].phase_tokens)
            return self._finished(job, shard, self._reused[shard.name], saga)
        child_id = f"{job.job_id}/{shard.name}"
        await self._events.gate.wait()  # a paused job starts no new shard
        self._shards[shard.name] = self._shards[shard.name].model_copy(update={"state": "running"})
        self._refresh()
        try:
            child = await workflow.start_child_workflow(
                ShardWorkflow.run,
                self._shard_input(inp, job, shard, change_commit, ruff_format),
                id=child_id,
                static_summary=f"{shard.label}: {len(shard.files)} files",
            )
            self._events.attach(child)  # it pauses with the job
            result = await child
        except (Exception, asyncio.CancelledError) as err:  # not GeneratorExit: eviction
            state = "cancelled" if isinstance(err, asyncio.CancelledError) else "failed"
            self._shards[shard.name] = self._shards[shard.name].model_copy(update={"state": state})
            self._refresh()
            if self._ledger is not None:  # what it held goes back to the pool
                grants = self._ledger.release(child_id)
                if not isinstance(err, asyncio.CancelledError):
                    await self._answer(grants)
            raise
        if self._ledger is not None:
            await self._answer(self._ledger.release(child_id))
        self._finished(job, shard, result, saga)
        if self._logged:
            await call(
                steps.RECORD_SHARD,
                ShardDoneInput(job=job, result=result),
                summary=f"progress log: {shard.name} done",
            )
        return result

    def _shard_input(
        self,
        inp: RefactorInput,
        job: JobRef,
        shard: Shard,
        change_commit: str | None,
        ruff_format: bool,
    ) -> ShardInput:
        """The child's input: its files, the edit, and its share of the budgets (the whole job's
        when the job's ledger decides every call)."""
        return ShardInput(
            budget=inp.budget
            if self._ledger is not None
            else _share(inp.budget, len(shard.files), self._progress.files_total),
            ledger=self._ledger is not None,
            file_tokens={f: self._file_tokens.get(f, 0) for f in shard.files},
            prices=inp.prices,
            job=job,
            parent_id=job.job_id,
            shard=shard,
            edit=inp.edit,
            change_commit=change_commit,
            ruff_format=ruff_format,
            check_cmd=inp.check_cmd,
            limits=inp.limits,
            hooks=inp.hooks,
        )

    def _finished(self, job: JobRef, shard: Shard, result: ShardResult, saga: Saga) -> ShardResult:
        ref = f"{job.scratch}/shards/{shard.name}"
        saga.add(
            f"shard {shard.name}",
            lambda: call(steps.SET_REF, RefUpdate(job=job, ref=ref, target=None)),
        )
        self._shards[shard.name] = self._shards[shard.name].model_copy(
            update={
                "state": "done",
                "files_done": len(shard.files),
                "tokens": result.usage.total,
                "phase_tokens": result.phase_tokens,
            }
        )
        self._refresh()
        self._usage = self._usage + result.usage
        tokens = self._usage.total if self._ledger is None else self._ledger.total_spent
        workflow.upsert_search_attributes(
            [FILES_DONE.value_set(self._files_done()), TOKENS.value_set(tokens)]
        )
        return result

    def _files_done(self) -> int:
        return sum(s.files_done for s in self._shards.values())

    def _phase(self, phase: str) -> None:
        if self._events.gate.paused and phase not in {*HOLDS_THROUGH_PAUSE, AWAITING_APPROVAL}:
            self._before_pause, phase = phase, "paused"  # shown until unpaused
        self._progress = self._progress.model_copy(update={"phase": phase})
        workflow.upsert_search_attributes([PHASE.value_set(phase)])
        self._refresh()

    def _paused(self, paused: bool) -> None:
        if paused:
            self._phase(self._progress.phase)
        elif self._progress.phase == "paused":
            self._phase(self._before_pause)

    def _refresh(self) -> None:
        """Update what the Temporal UI shows as the job's current details: with a ledger, its
        own figures (what is enforced), else the shards' reports against the budget."""
        spent: dict[str, int] = {}
        for s in self._shards.values():
            for phase, used in s.phase_tokens.items():
                spent[phase] = spent.get(phase, 0) + used
        if self._ledger is not None:  # what is enforced
            budget = self._ledger.figures()
            tokens, reserved = self._ledger.total_spent, sum(b.reserved for b in budget)
            remaining = self._ledger.remaining()
        else:
            budget = tuple(
                PhaseBudget(
                    phase=phase,
                    spent=spent.get(phase, 0),
                    allowance=self._budget.allowance(phase, spent),
                )
                for phase in (*PHASES, *sorted(set(spent) - set(PHASES)))
            )
            tokens, reserved, remaining = sum(s.tokens for s in self._shards.values()), 0, None
        self._progress = self._progress.model_copy(
            update={
                "files_done": self._files_done(),
                "tokens": tokens,
                "budget": budget,
                "reserved": reserved,
                "remaining": remaining,
            }
        )
        p = self._progress
        rows = "\n".join(
            f"| {s.name} | {s.state} | {s.files_done}/{s.files_total} | {s.breaker} |"
            for s in self._shards.values()
        )
        table = (
            f"\n\n| shard | state | files | breaker |\n|---|---|---|---|\n{rows}" if rows else ""
        )
        budget_text = f"\n\ntokens: {budget_line(p)}" if p.tokens or self._budget.limited else ""
        workflow.set_current_details(
            f"**{p.phase}**: {p.files_done}/{p.files_total} files{budget_text}{table}"
        )

    def _result(
        self,
        inp: RefactorInput,
        job: JobRef,
        results: list[ShardResult],
        head: str,
        checks: tuple[CheckRun, ...],
        published: Published | None,
    ) -> RefactorResult:
        modules: dict[str, tuple[set[str], list[str]]] = {}
        for r in results:
            for path in r.files_changed:
                shards, paths = modules.setdefault(module_of(path), (set(), []))
                shards.add(r.name)
                paths.append(path)
        summaries = tuple(
            ModuleSummary(
                module=m, shards=tuple(sorted(shards)), files_changed=tuple(sorted(paths))
            )
            for m, (shards, paths) in sorted(modules.items())
        )
        files = tuple(sorted(p for r in results for p in r.files_changed))
        return RefactorResult(
            job_id=job.job_id,
            outcome="succeeded" if files else "unchanged",
            branch=published.branch if published else None,
            base_commit=job.base_commit,
            head_commit=head,
            files_changed=files,
            modules=summaries,
            checks=checks,
            applied=published.applied if published else False,
            apply_note=published.apply_note if published else "",
            usage=sum((r.usage for r in results), Usage()),
            reused_shards=tuple(sorted(self._reused)),
            cost_usd=None
            if any(r.cost_usd is None for r in results)
            else sum(r.cost_usd or 0.0 for r in results),
        )


def _share(budget: BudgetLimits, files: int, total_files: int) -> BudgetLimits:
    """A shard's share of the job's budgets, in proportion to its files."""

    def part(tokens: int) -> int:
        return max(1, tokens * files // max(total_files, 1))

    return BudgetLimits(
        total=part(budget.total) if budget.total is not None else None,
        phases={phase: part(tokens) for phase, tokens in budget.phases.items()},
        shares=budget.shares,
    )


async def _stopped(task: asyncio.Future[Any] | None) -> None:
    """``task`` ended: asked to cancel if still running, and waited for (its steps end before
    anything removes what they use); whatever it raised is dropped."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


__all__ = ["CHECKLIST", "CLEANUP", "PROGRESS_LOG", "PUBLISH_INVARIANT", "RefactorWorkflow"]
