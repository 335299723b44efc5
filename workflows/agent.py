"""The coding agent's job: plan, execute, merge, verify, publish (see docs/agent.md).

A pipeline of phases, each built from the catalogue's patterns: the planner model decomposes
the task over a lazily built repository map (orchestrator, lazy loading); one child workflow
per unit runs a tool-using loop in its own worktree and scope, routed by capability, bounded
by ``parallel``, dependencies first (fan-out, service mesh, bulkhead); their summaries and
heads come back (MapReduce) and merge in dependency order; every check votes on the merge,
one repair unit may fix a failure (two-phase commit, circuit breaker); the publish invariant
checks the result against the units' heads; a saga undoes everything on failure or cancel.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import NoReturn

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from agentparallels.core import names
from agentparallels.workflows._agent_resume import (
    RESUMED_PLAN_GATE,
    Takeover,
    checkpoint_note,
    take_over,
)
from agentparallels.workflows._call import call
from agentparallels.workflows.agent_approval import (
    Approvals,
    decide_hint,
    denied,
    plan_text,
    replan_messages,
)
from agentparallels.workflows.agent_review import Committee, owners, rework_notes
from agentparallels.workflows.agent_unit import AgentUnitWorkflow
from agentparallels.workflows.agent_watch import JobWatch
from agentparallels.workflows.events import JobEvents, ending
from agentparallels.workflows.fanout import gather_bounded
from agentparallels.workflows.job_ledger import PAUSE_AND_BREAKER, JobLedger
from agentparallels.workflows.ledger import (
    RESERVE_SIGNAL,
    SETTLE_SIGNAL,
    Ledger,
    deliver,
)
from agentparallels.workflows.mapreduce import check_summary
from agentparallels.workflows.model_step import ModelSteps
from agentparallels.workflows.pipeline import Step, Verdict, chain
from agentparallels.workflows.routing import MODEL_CAPABILITY, capability_queue
from agentparallels.workflows.saga import Saga, failure_of, incomplete, rolled_back, shielded
from agentparallels.workflows.shard import BUG_TYPES
from agentparallels.workflows.two_phase import prepare

CLEANUP = "cleanup: remove scratch refs and worktrees"
REPAIRABLE = {"tests", "lint", "check"}
"""Failed votes a repair unit may fix; a moved base ref or an oversized diff it cannot."""
ENDS = ("rolling back", "failed", "cancelled", "done")
"""Phases no wait in the ledger is shown over."""
SUMMARY_BYTES = 8 * 1024
"""Largest result a unit may hand back (MapReduce: a summary and a commit, never contents)."""

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.agentjob import (
        PLANNER_MARKER,
        REPAIR_UNIT,
        AgentInput,
        AgentPlan,
        AgentResult,
        RepoMap,
        RepoMapInput,
        Resumed,
        UnitCheckpoint,
        UnitInput,
        UnitMerge,
        UnitMergeInput,
        UnitPlan,
        UnitResult,
        plan_errors,
        topological,
    )
    from agentparallels.core.attributes import PHASE, TOKENS
    from agentparallels.core.checklist import AWAITING_APPROVAL, Checklist, Decision
    from agentparallels.core.errors import CHECK_FAILED, GIT_CONFLICT, PLAN_INVALID
    from agentparallels.core.llm import (
        BudgetAdd,
        Grant,
        Message,
        ModelRequest,
        Reservation,
        Settlement,
    )
    from agentparallels.core.messages import (
        PollersInput,
        QueuePollers,
        ResultCheckInput,
        ShardClaim,
    )
    from agentparallels.core.models import (
        CheckRun,
        JobRef,
        Progress,
        Published,
        PublishInput,
        RefUpdate,
        ShardProgress,
    )
    from agentparallels.core.tools import ToolFormat


def planner_messages(inp: AgentInput, the_map: RepoMap) -> tuple[Message, ...]:
    limits = inp.limits
    system = (
        f"{PLANNER_MARKER}: split the task into units of work, each done by a separate agent "
        "in its own copy of the repository, writing only the files in its scope (it may read "
        "every file of the job). A unit that needs another's result lists it in depends_on "
        "and starts from it; two units may share a file only if one depends on the other. "
        "Capabilities: python, tests, docs. The unit name 'repair' is reserved. "
        f"At most {limits.max_units} units. Answer with JSON only: "
        '{"summary": "...", "units": [{"name": "lower-case-name", "goal": "...", "scope": '
        '["path", ...], "capability": "python", "depends_on": []}]}'
    )
    user = (
        f"Task: {inp.task}\n\nThe repository ({the_map.tokens} tokens of map; file contents "
        f"come later, through tools):\n{the_map.text}"
    )
    return Message(role="system", content=system), Message(role="user", content=user)


@workflow.defn(name=names.AGENT, failure_exception_types=BUG_TYPES)
class AgentWorkflow:
    def __init__(self) -> None:
        self._progress = Progress(job_id="", phase="queued")
        self._units: dict[str, ShardProgress] = {}
        self._unit_tokens: dict[str, int] = {}
        """Tokens of every finished run of each unit."""
        self._ledger: Ledger | None = None
        self._keeper: JobLedger | None = None
        """The ledger's pause and provider breaker (jobs since ``PAUSE_AND_BREAKER``)."""
        self._stage = "queued"
        """The pipeline's phase; the job shows ``budget`` or ``breaker`` over it while its
        model calls wait in the ledger."""
        self._events = JobEvents()
        self._planner = ModelSteps()
        self._routes: dict[str, str] = {}
        """Capability -> the task queue its units run on."""
        self._taken = Takeover()
        """What this run takes over from the run it resumes (``agentparallels resume``)."""
        self._committee = Committee()
        self._asking = ""
        """What an approval gate shows while it waits (``Progress.message``)."""
        self._approvals = Approvals()
        self._plan_spent: dict[str, int] = {}
        """The planner's tokens the ledger has counted (re-plans count only what is new)."""
        self._watch = JobWatch(self._events.record, self._refresh)

    @workflow.update(name=names.APPROVE_UPDATE)
    def approve(self, decision: Decision) -> str:
        return self._approvals.decide(True, decision)

    @approve.validator
    def _may_approve(self, decision: Decision) -> None:
        self._approvals.validate(True, decision, self._progress.phase)

    @workflow.update(name=names.REJECT_UPDATE)
    def reject(self, decision: Decision) -> str:
        return self._approvals.decide(False, decision)

    @reject.validator
    def _may_reject(self, decision: Decision) -> None:
        self._approvals.validate(False, decision, self._progress.phase)

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> Progress:
        return self._progress.model_copy(update={"shards": tuple(self._units.values())})

    @workflow.signal(name=RESERVE_SIGNAL)
    async def budget_reserve(self, request: Reservation) -> None:
        if self._ledger is not None:
            await self._answer(self._ledger.reserve(request))

    @workflow.signal(name=SETTLE_SIGNAL)
    async def budget_settle(self, settled: Settlement) -> None:
        if self._ledger is not None:
            await self._answer(self._ledger.settle(settled))

    @workflow.update(name=names.BUDGET_UPDATE)
    async def budget_add(self, add: BudgetAdd) -> str:
        """``agentparallels budget JOB --add N``: a job paused for budget goes on."""
        assert self._keeper is not None
        return await self._keeper.add(add)

    @budget_add.validator
    def _may_add(self, add: BudgetAdd) -> None:
        if self._keeper is None:
            raise ApplicationError("the job does not take more budget while it runs")
        self._keeper.check_add(add)

    async def _answer(self, grants: list[tuple[str, Grant]]) -> None:
        if self._keeper is not None:
            await self._keeper.answer(grants)
            return
        assert self._ledger is not None
        workflow.upsert_search_attributes([TOKENS.value_set(self._ledger.total_spent)])
        self._refresh()
        await deliver(grants)

    @workflow.run
    async def run(self, inp: AgentInput) -> AgentResult:
        run = _Run(inp=inp, job=self._begin(inp))
        if self._keeper is not None:
            asyncio.create_task(self._keeper.watch())  # noqa: RUF006 - lives as long as the job
        stages = [
            Step("plan", self._plan_stage),
            Step("execute", self._execute_stage),
            Step("merge", self._merge_stage, gate=_changed, gate_name="changes"),
            Step("verify", self._verify_stage),
            Step("review", self._review_stage),
            Step("publish", self._publish_stage),
        ]
        try:
            done: _Run = (await chain(stages, run)).output
        except (Exception, asyncio.CancelledError) as err:  # not GeneratorExit (eviction)
            await self._roll_back(err, run.job, run.saga)
        self._phase("done")
        result = self._result(done)
        await shielded(call(steps.CLEANUP, done.job, summary=CLEANUP), raise_cancel=False)
        await self._events.finish("done", f"{result.outcome}: {len(result.files_changed)} files")
        return result

    async def _plan_stage(self, run: _Run) -> _Run:
        resumed = run.inp.resumed
        if resumed is not None and resumed.plan is not None:  # the earlier run's plan
            run.job = run.job.model_copy(update={"base_commit": resumed.base_commit})
            run.plan = resumed.plan
            self._planned(resumed.plan)
            if run.inp.plan_approval is not None and workflow.patched(RESUMED_PLAN_GATE):
                return await self._resumed_approval(run, resumed)
            self._taken = await take_over(run.job, resumed, self._events)
            return run
        the_map = await self._map(run.inp, run.job)
        run.job = run.job.model_copy(update={"base_commit": the_map.base_commit})
        run.plan = await self._plan(run.inp, the_map)
        run.plan = await self._approved_plan(run, the_map, run.plan)
        return run

    async def _resumed_approval(self, run: _Run, resumed: Resumed) -> _Run:
        """With ``--approve-plan``, a resumed job's kept plan waits at the gate as a new one
        does: a person may have rejected the run it resumes. A re-plan after a rejection keeps
        nothing of that run (its units worked to another plan); an approval takes it over."""
        assert resumed.plan is not None
        the_map = await self._map(run.inp, run.job)
        run.plan = await self._approved_plan(run, the_map, resumed.plan)
        if run.plan != resumed.plan:
            run.job = run.job.model_copy(update={"base_commit": the_map.base_commit})
            return run
        self._taken = await take_over(run.job, resumed, self._events)
        return run

    async def _approved_plan(self, run: _Run, the_map: RepoMap, the_plan: AgentPlan) -> AgentPlan:
        """With ``--approve-plan``: wait for a person's decision on the plan before any edit;
        a rejection's comment goes back to the planner, at most ``replans`` times."""
        opts = run.inp.plan_approval
        if opts is None:
            return the_plan
        limit = timedelta(seconds=opts.timeout_s)
        for rejected in range(opts.replans + 1):
            shown = f"{plan_text(the_plan)}\n\n{decide_hint(run.job.job_id)}"
            self._asking = shown  # shown from here on by every refresh, the phase's first
            self._phase(AWAITING_APPROVAL)
            last = rejected == opts.replans
            record = await self._approvals.ask("plan", limit, shown, self._events, final=last)
            self._asking = ""
            self._refresh()
            if record.outcome == "approved":
                return the_plan
            if record.outcome == "timed out" or last:
                raise denied(record, limit)
            self._phase("plan")
            prior = replan_messages(the_plan, record)
            the_plan = await self._plan(run.inp, the_map, prior)
        raise AssertionError("unreachable: the last rejection raised")

    async def _execute_stage(self, run: _Run) -> _Run:
        assert run.plan is not None
        run.results = await self._execute(run.inp, run.job, run.plan, run.saga)
        return run

    async def _merge_stage(self, run: _Run) -> _Run:
        assert run.plan is not None
        self._phase("merge")
        run.results, merged = await self._merge_all(run.inp, run.job, run.plan, run.results)
        run.merged, run.changed = merged.commit, merged.changed
        return run

    async def _verify_stage(self, run: _Run) -> _Run:
        """Every check votes on the merge; when lint, the tests or the check command fail,
        one repair unit gets their output, under the breaker, and they vote again."""
        assert run.plan is not None
        self._phase("verify")
        try:
            run.checks = await self._checks(run)
            return run
        except ApplicationError as e:
            if e.type != CHECK_FAILED or not set(e.details) <= REPAIRABLE:
                raise
            failure = e.message
        fixed = await self._repair(run, failure)
        repaired = await self._merge(run.job, [*run.results, fixed], "repaired")
        run.results = [*run.results, fixed]
        run.merged, run.changed = repaired.commit, repaired.changed
        self._phase("verify")
        run.checks = await self._checks(run)
        return run

    async def _review_stage(self, run: _Run) -> _Run:
        """With ``--reviewers``: the committee votes on the verified change; a rejection's
        comments go to the units owning the files, which run again on the merged work (then
        merge and verify again), at most ``rework_rounds`` times; then the job refuses."""
        opts = run.inp.review
        if opts is None:
            return run
        assert run.plan is not None
        for reworked in range(opts.rework_rounds + 1):
            self._phase("review")
            remaining = self._ledger.remaining() if self._ledger is not None else None
            before = self._committee.usage.total
            keeper = self._keeper
            verdict = await self._committee.vote(
                run.inp,
                run.job,
                run.merged,
                run.changed,
                remaining,
                self._events,
                ledger=keeper.local if keeper is not None else None,
                attempts=keeper.attempts if keeper is not None else 0,
            )
            if self._ledger is not None and keeper is None:  # counted after the fact
                self._ledger.count({"review": self._committee.usage.total - before})
            self._refresh()
            if verdict.approved:
                return run
            notes = rework_notes(verdict, owners(run.results, run.plan, run.changed), run.plan)
            if reworked == opts.rework_rounds or not notes:
                raise self._committee.refusal(reworked)
            await self._rework(run, notes)
        raise AssertionError("unreachable: the last rejection raised")

    async def _rework(self, run: _Run, notes: dict[str, str]) -> None:
        """Each unit with comments runs again, one after another, on top of the merged work
        and of the reworks before it, the comments as its note; then merge and verify."""
        assert run.plan is not None
        units = {u.name: u for u in run.plan.units}
        start, redone = run.merged, []
        for name, note in notes.items():
            earlier = [r for r in run.results if r.name == name]
            result = await self._unit(
                run.inp, run.job, units[name], start, run.saga, note=note,
                attempt=2 + len(earlier),  # 2 is the conflict re-run's
            )  # fmt: skip
            # Its head holds its earlier files as merged: it claims them too (the invariant).
            made = {p for r in earlier for p in r.files_changed} | set(result.files_changed)
            redone.append(result.model_copy(update={"files_changed": tuple(sorted(made))}))
            start = result.head
        run.results = [*run.results, *redone]
        self._phase("merge")
        merged = await self._merge(run.job, run.results, f"reworked-{len(run.results)}")
        if merged.conflict is not None:
            raise ApplicationError(
                f"the reworked units do not merge: {merged.conflict} in {', '.join(merged.files)}",
                type=GIT_CONFLICT,
                non_retryable=True,
            )
        run.merged, run.changed = merged.commit, merged.changed
        await self._verify_stage(run)

    async def _publish_stage(self, run: _Run) -> _Run:
        """The publish invariant, then (with ``--require-approval``) a person's decision,
        then the point of no return."""
        self._phase("publish")
        job = run.job
        await call(
            steps.CHECK_RESULT,
            ResultCheckInput(job=job, commit=run.merged, shards=_claims(run.results, run.changed)),
            summary="check the result against every unit's verified head",
        )
        await self._publish_approval(run)
        run.published = await shielded(
            call(
                steps.PUBLISH,
                PublishInput(job=job, commit=run.merged, apply=run.inp.apply),
                summary=f"publish {job.branch}",
            ),
            raise_cancel=False,
        )
        return run

    async def _publish_approval(self, run: _Run) -> None:
        """With ``--require-approval``: every check, the publish invariant and the reviewers
        have voted; a person approves (publish), rejects or lets it time out (roll back)."""
        opts = run.inp.approval
        if opts is None:
            return
        limit = timedelta(seconds=opts.timeout_s)
        shown = f"{self._checklist_text(run)}\n\n{decide_hint(run.job.job_id)}"
        self._asking = shown
        self._phase(AWAITING_APPROVAL)
        record = await self._approvals.ask("publish", limit, shown, self._events)
        self._asking = ""
        self._refresh()
        if record.outcome != "approved":
            raise denied(record, limit)
        self._phase("publish")

    def _checklist_text(self, run: _Run) -> str:
        """What a person sees before deciding to publish: every vote so far."""
        lines = [f"The checklist voted yes on {run.merged[:12]} ({len(run.changed)} files):"]
        lines += [f"- {c.command}: passed" for c in run.checks]
        lines.append("- scope: every changed file is what the unit that owns it made")
        spent = self._progress.tokens
        total = self._ledger.budget.total if self._ledger is not None else run.inp.budget.total
        lines.append(f"- budget: {spent} tokens" + (f" of {total}" if total else ""))
        if run.inp.review is not None:
            lines.append(f"- reviewers: {self._committee.verdict_line()}")
        return "\n".join(lines)

    def _begin(self, inp: AgentInput) -> JobRef:
        info = workflow.info()
        self._progress = Progress(job_id=info.workflow_id, phase="plan")
        queue = capability_queue(info.task_queue, MODEL_CAPABILITY)
        if workflow.patched(PAUSE_AND_BREAKER):
            self._keeper = _keeper(inp, self._events, self._ledger_changed)
            self._ledger = self._keeper.ledger
            self._planner = ModelSteps(
                inp.budget,
                inp.prices,
                task_queue=queue,
                ledger=self._keeper.local,
                attempts=self._keeper.attempts,
            )
        else:
            if inp.budget.limited:
                self._ledger = Ledger(inp.budget)
            self._planner = ModelSteps(inp.budget, inp.prices, task_queue=queue)
        self._watch.begin(inp)
        resumes = f"; resumes job {inp.resumed.previous}" if inp.resumed else ""
        self._events.record("started", detail=f"{inp.repository} at {inp.base_ref}{resumes}")
        return JobRef(
            job_id=info.workflow_id,
            repository=inp.repository,
            base_commit="",
            timestamp=int(info.start_time.timestamp()),
        )

    async def _map(self, inp: AgentInput, job: JobRef) -> RepoMap:
        self._phase("plan")
        return await call(
            steps.REPO_MAP,
            RepoMapInput(
                job=job,
                base_ref=inp.base_ref,
                task=inp.task,
                files=inp.files,
                tokens=inp.limits.map_tokens,
            ),
            summary="map the repository: paths and top-level symbols",
        )

    async def _plan(
        self, inp: AgentInput, the_map: RepoMap, prior: tuple[Message, ...] = ()
    ) -> AgentPlan:
        """Ask the planner (after ``prior``: a rejected plan and why); send an invalid plan
        back with its errors, at most ``plan_retries`` times; then refuse."""
        messages = (*planner_messages(inp, the_map), *prior)
        for attempt in range(inp.limits.plan_retries + 1):
            answer = await self._planner.ask(
                ModelRequest(
                    model=inp.model,
                    base_url=inp.base_url,
                    messages=messages,
                    max_tokens=inp.limits.max_tokens,
                    output="AgentPlan",
                    step=f"plan (attempt {attempt + 1})",
                ),
                phase="plan",
            )
            the_plan = AgentPlan.model_validate(answer.parsed)
            errors = plan_errors(the_plan, the_map.files, inp.files, inp.limits.max_units)
            if not errors:
                self._planned(the_plan)
                return the_plan
            feedback = "The plan is invalid:\n" + "\n".join(f"- {e}" for e in errors)
            messages = (
                *messages,
                Message(role="assistant", content=answer.text),
                Message(role="user", content=f"{feedback}\nAnswer again with a corrected plan."),
            )
        raise ApplicationError(
            f"the planner's plan was still invalid after {inp.limits.plan_retries + 1} "
            "attempts:\n" + "\n".join(f"- {e}" for e in errors),
            type=PLAN_INVALID,
            non_retryable=True,
        )

    def _planned(self, the_plan: AgentPlan) -> None:
        if self._ledger is not None and self._keeper is None:  # counted after the fact
            spent = self._planner.spent()  # a re-plan counts only what is new
            self._ledger.count({p: n - self._plan_spent.get(p, 0) for p, n in spent.items()})
            self._plan_spent = spent
        self._units = {
            u.name: ShardProgress(name=u.name, label=u.goal[:80], files_total=len(u.scope))
            for u in the_plan.units
        }
        scope = {p for u in the_plan.units for p in u.scope}
        self._progress = self._progress.model_copy(update={"files_total": len(scope)})
        self._events.record(
            "planned", detail=f"{len(the_plan.units)} units: {', '.join(self._units)}"
        )

    async def _execute(
        self, inp: AgentInput, job: JobRef, the_plan: AgentPlan, saga: Saga
    ) -> list[UnitResult]:
        """Fan out: each unit once its dependencies have finished, at most ``parallel`` at
        once, in dependency order (so a unit waiting for others never holds a slot they
        need)."""
        self._phase("execute")
        self._routes = await self._route(inp, the_plan)
        order = topological(the_plan)
        done: dict[str, asyncio.Future[UnitResult]] = {
            u.name: asyncio.get_running_loop().create_future() for u in order
        }

        async def run(unit: UnitPlan) -> UnitResult:
            deps = [await done[d] for d in unit.depends_on]
            result = await self._unit_of(inp, job, unit, deps, saga)
            done[unit.name].set_result(result)
            return result

        work: list[Callable[[], Awaitable[UnitResult]]] = [partial(run, u) for u in order]
        return await gather_bounded(work, inp.limits.parallel)

    async def _unit_of(
        self, inp: AgentInput, job: JobRef, unit: UnitPlan, deps: list[UnitResult], saga: Saga
    ) -> UnitResult:
        """A unit the run it resumes finished (kept: no model call), one that goes on from
        its last checkpoint there, or one run from its start."""
        if (kept := self._taken.kept.get(unit.name)) is not None:
            self._set_unit(unit.name, state="done", files_done=len(kept.files_changed))
            self._events.record("unit_done", shard=unit.name, detail=f"kept from {kept.kept_from}")
            return kept
        if (cp := self._taken.checkpoints.get(unit.name)) is not None:
            note = checkpoint_note(cp, self._taken.previous)
            return await self._unit(inp, job, unit, cp.start, saga, note=note, resume_from=cp)
        start = await self._start_of(job, unit, deps)
        return await self._unit(inp, job, unit, start, saga)

    async def _route(self, inp: AgentInput, the_plan: AgentPlan) -> dict[str, str]:
        """Where each capability's units run (the service mesh): the queue ``capabilities``
        names; else ``<job queue>.<capability>`` if a worker advertises it by polling there
        (``agentparallels worker --capability python``); else the job's own queue."""
        own = workflow.info().task_queue
        wanted = sorted({u.capability for u in the_plan.units} - set(inp.capabilities))
        routes = {c: q for c, q in inp.capabilities.items()}
        if wanted:
            found: tuple[QueuePollers, ...] = await call(
                steps.POLLERS,
                PollersInput(
                    task_queues=tuple(capability_queue(own, c) for c in wanted), grace_s=0
                ),
                summary=f"find workers for {', '.join(wanted)}",
            )
            for c, q in zip(wanted, found, strict=True):
                routes[c] = q.task_queue if q.workflow_pollers else own
        return routes

    async def _start_of(self, job: JobRef, unit: UnitPlan, deps: list[UnitResult]) -> str:
        """Where a unit starts: the base, its one dependency's head, or its dependencies'
        heads merged."""
        if not deps:
            return job.base_commit
        if len(deps) == 1:
            return deps[0].head
        merged = await self._merge(job, deps, f"start-{unit.name}")
        if merged.conflict:
            raise ApplicationError(
                f"unit {unit.name} cannot start: its dependencies conflict in "
                f"{', '.join(merged.files)}",
                type=GIT_CONFLICT,
                non_retryable=True,
            )
        return merged.commit

    async def _unit(
        self,
        inp: AgentInput,
        job: JobRef,
        unit: UnitPlan,
        start: str,
        saga: Saga,
        *,
        note: str = "",
        attempt: int = 1,
        resume_from: UnitCheckpoint | None = None,
    ) -> UnitResult:
        """One unit as a child workflow on its capability's queue; its branch is undone by
        the saga."""
        unit_inp = UnitInput(
            job=job,
            parent_id=workflow.info().workflow_id,
            unit=unit,
            task=inp.task,
            start=start,
            model=inp.model,
            base_url=inp.base_url,
            tool_format=_tool_format(inp),
            files=inp.files,
            test_cmd=inp.test_cmd,
            check_cmd=inp.check_cmd,
            limits=inp.limits,
            budget=inp.budget,
            prices=inp.prices,
            ledger=self._ledger is not None,
            breaker_attempts=self._keeper.attempts if self._keeper is not None else 0,
            note=note,
            attempt=attempt,
            resume_from=resume_from,
            baseline=inp.baseline,
        )
        ref = unit_inp.ref
        self._set_unit(unit.name, state="running")
        saga.add(f"unit {ref.name}", partial(_drop_branch, job, ref.name))
        result = await self._child(unit, unit_inp)
        check_summary(f"{job.job_id}/{ref.name}", result, SUMMARY_BYTES)
        self._watch.unit_done(result)
        if self._ledger is not None:
            await self._answer(self._ledger.release(f"{job.job_id}/{ref.name}"))
        # A unit run again (a review's rework) counts its earlier runs' tokens too.
        spent = self._unit_tokens[unit.name] = (
            self._unit_tokens.get(unit.name, 0) + result.usage.total
        )
        self._set_unit(unit.name, state="done", files_done=len(result.files_changed), tokens=spent)
        self._events.record("unit_done", shard=unit.name, detail=result.summary[:300])
        return result

    async def _child(self, unit: UnitPlan, inp: UnitInput) -> UnitResult:
        """Run the unit's child workflow. One that ended without settling its credit (cancelled
        mid-call) gives it back (only units with a credit: others' failures replay as they
        were recorded)."""
        holder = f"{inp.job.job_id}/{inp.ref.name}"
        try:
            return await workflow.execute_child_workflow(
                AgentUnitWorkflow.run,
                inp,
                id=holder,
                task_queue=self._routes.get(unit.capability, workflow.info().task_queue),
                static_summary=f"unit {unit.name}: {unit.goal[:120]}",
            )
        except (Exception, asyncio.CancelledError):  # not GeneratorExit (eviction)
            if self._ledger is not None and any(h == holder for h, _ in self._ledger.credits):
                await shielded(self._answer(self._ledger.release(holder)), raise_cancel=False)
            raise

    async def _merge(self, job: JobRef, results: list[UnitResult], ref: str) -> UnitMerge:
        return await call(
            steps.UNIT_MERGE,
            UnitMergeInput(
                job=job,
                base=job.base_commit,
                heads=tuple(r.head for r in results),
                names=tuple(r.name for r in results),
                ref=ref,
            ),
            summary=f"merge {len(results)} units",
        )

    async def _merge_all(
        self, inp: AgentInput, job: JobRef, the_plan: AgentPlan, results: list[UnitResult]
    ) -> tuple[list[UnitResult], UnitMerge]:
        """Merge every unit's head in dependency order; a unit that conflicts runs once more
        on top of what merged before it, then the job refuses naming the files. (Validated
        plans give units disjoint files unless one builds on the other, so this is a guard.)"""
        merged = await self._merge(job, results, "merged")
        if merged.conflict is None:
            return results, merged
        units = {u.name: u for u in the_plan.units}
        name = merged.conflict
        redo = await self._unit(
            inp,
            job,
            units[name],
            merged.commit,
            Saga(),  # the job's cleanup removes its branch with every other scratch ref
            note=f"An earlier attempt of this unit conflicted with the other units' work in "
            f"{', '.join(merged.files)}. Their work is now in your copy: do your goal again "
            "on top of it.",
            attempt=2,
        )
        results = [redo if r.name == name else r for r in results]
        again = await self._merge(job, results, "merged-2")
        if again.conflict is not None:
            raise ApplicationError(
                f"units conflict: {again.conflict} could not be merged even when run again on "
                f"top of the others; the files: {', '.join(again.files)}",
                type=GIT_CONFLICT,
                non_retryable=True,
            )
        return results, again

    async def _repair(self, run: _Run, failure: str) -> UnitResult:
        """The repair unit: the failing output, every file the units could write, on top of
        the merged work."""
        assert run.plan is not None
        scope = tuple(sorted({p for u in run.plan.units for p in u.scope}))
        repair = UnitPlan(
            name=REPAIR_UNIT,
            goal="Make the failing checks on the merged work pass, changing as little as possible.",
            scope=scope,
            depends_on=tuple(u.name for u in run.plan.units),
        )
        self._units[REPAIR_UNIT] = ShardProgress(
            name=REPAIR_UNIT, label="repair", files_total=len(scope)
        )
        note = f"The checks failed:\n{failure[-3000:]}"
        attempt = 1 + sum(r.name == REPAIR_UNIT for r in run.results)  # after a rework, again
        return await self._unit(
            run.inp, run.job, repair, run.merged, run.saga, note=note, attempt=attempt
        )

    async def _checks(self, run: _Run) -> tuple[CheckRun, ...]:
        """The checklist's votes on the merged result: the tests, lint, the diff size,
        conflicts with the base ref, and the check command (once, or on the files the job
        changed when it names ``{file}``); ``CheckFailed`` naming every no."""
        inp = run.inp
        check_cmd = inp.check_cmd
        if check_cmd and "{file}" in check_cmd:
            files = " ".join(shlex.quote(f"./{p}") for p in run.changed)
            check_cmd = check_cmd.replace("{file}", files)
        return await prepare(
            run.job,
            run.merged,
            Checklist(),
            base_ref=inp.base_ref,
            test_cmd=inp.test_cmd,
            rules=inp.limits.verify_rules,
            timeout_s=inp.limits.command_timeout_s,
            sandbox=inp.limits.sandbox,
            check_cmd=check_cmd,
        )

    async def _roll_back(self, err: BaseException, job: JobRef, saga: Saga) -> NoReturn:
        """Undo every step, newest first, and clean up; then fail with what went wrong (and
        what the rollback could not undo, if anything)."""
        self._phase("rolling back")
        failed: list[str] = []
        try:
            failed = await saga.compensate()
        finally:
            if note := await shielded(failure_of(call(steps.CLEANUP, job, summary=CLEANUP))):
                failed.append(f"{CLEANUP}: {note}")
        self._phase("cancelled" if isinstance(err, asyncio.CancelledError) else "failed")
        await shielded(self._events.finish(*ending(err)), raise_cancel=False)
        if failed:
            raise incomplete(err, failed) from None
        if isinstance(err, FailureError):
            raise rolled_back(err) from err
        raise err

    def _result(self, run: _Run) -> AgentResult:
        assert run.plan is not None
        ran = [r for r in run.results if r.kept_from is None]  # this run's model calls
        usage = self._planner.total + self._committee.usage
        for r in ran:
            usage = usage + r.usage
        costs = [
            self._planner.cost_usd,
            self._committee.cost_usd,
            *(r.cost_usd for r in ran),
        ]
        published = run.published
        return AgentResult(
            job_id=run.job.job_id,
            outcome="succeeded" if published else "no_changes",
            branch=run.job.branch if published else None,
            base_commit=run.job.base_commit,
            head=run.merged or run.job.base_commit,
            files_changed=run.changed if published else (),
            plan=run.plan,
            units=tuple(run.results),
            checks=run.checks,
            usage=usage,
            cost_usd=None if any(c is None for c in costs) else sum(c or 0.0 for c in costs),
            published=published,
            resumed_from=run.inp.resumed.previous if run.inp.resumed else None,
            reviews=tuple(self._committee.rounds),
            approvals=tuple(self._approvals.records),
            **self._watch.result_fields(),
        )

    def _set_unit(self, name: str, **update: object) -> None:
        if name in self._units:
            self._units[name] = self._units[name].model_copy(update=update)
        self._refresh()

    def _phase(self, phase: str) -> None:
        self._stage = phase
        if self._keeper is not None and phase not in ENDS and (hold := self._keeper.hold()):
            phase = hold
        self._progress = self._progress.model_copy(update={"phase": phase})
        workflow.upsert_search_attributes([PHASE.value_set(phase)])
        self._refresh()

    def _ledger_changed(self) -> None:
        """The ledger decided: its figures, and the phase while calls wait in it."""
        assert self._keeper is not None and self._ledger is not None
        workflow.upsert_search_attributes([TOKENS.value_set(self._ledger.total_spent)])
        if self._stage in ENDS:
            self._refresh()
            return
        shown = self._keeper.hold() or self._stage
        if shown != self._progress.phase:
            self._phase(self._stage)
        else:
            self._refresh()

    def _refresh(self) -> None:
        """What the Temporal UI shows as the job's current details."""
        units = list(self._units.values())
        done = sum(u.state == "done" for u in units)
        tokens = self._planner.total.total + self._committee.usage.total
        tokens += sum(u.tokens for u in units)
        if self._ledger is not None:
            tokens = max(tokens, self._ledger.total_spent)
        update: dict[str, object] = {
            "tokens": tokens,
            "files_done": sum(u.files_done for u in units),
        }
        money = note = ""
        update["message"] = self._asking
        if self._keeper is not None:
            update.update(_ledger_figures(self._keeper))
            breaker = self._keeper.ledger.breaker
            self._watch.breaker = breaker.state if breaker is not None else None
            if update["cost_usd"] is not None:  # every settled call's, running units' too
                money = f", ${update['cost_usd']:.4f} so far"
            held = update.pop("held")  # why calls wait, over an approval gate's text
            update["message"] = held or self._asking
            note = f"\n\n{held}" if held else ""
        self._progress = self._progress.model_copy(update=update)
        workflow.set_current_details(
            f"**{self._progress.phase}**: {done}/{len(units)} units done, {tokens} tokens"
            + (money or self._watch.cost(self._planner.cost_usd, self._committee.cost_usd))
            + note
            + "".join(f"\n- {u.name}: {u.state}, {u.files_done} files" for u in units)
            + self._watch.details()
        )


@dataclass
class _Run:
    """What the job's stages hand each other (``workflows.pipeline.chain``)."""

    inp: AgentInput
    job: JobRef
    saga: Saga = field(default_factory=Saga)
    plan: AgentPlan | None = None
    results: list[UnitResult] = field(default_factory=list)
    merged: str = ""
    changed: tuple[str, ...] = ()
    """The files the merged result changes from the base, net."""
    checks: tuple[CheckRun, ...] = ()
    published: Published | None = None


async def _changed(run: _Run) -> Verdict:
    """The gate after the merge: with nothing changed there is nothing to verify or publish."""
    if not run.changed:
        return Verdict(passed=False, reason="the units changed no file")
    return Verdict(passed=True)


def _keeper(inp: AgentInput, events: JobEvents, on_change: Callable[[], None]) -> JobLedger:
    limits = inp.limits
    return JobLedger.build(
        inp.budget,
        events,
        on_change,
        budget_timeout_s=limits.budget_timeout_s,
        failures=limits.provider_failures,
        cooldown_s=limits.provider_cooldown_s,
        probes=limits.provider_probes,
    )


def _ledger_figures(keeper: JobLedger) -> dict[str, object]:
    """What the job's progress shows of its ledger: each phase's figures, what is reserved
    and left, the cost so far (with ``--price``) and why calls wait, if they do."""
    ledger = keeper.ledger
    figures = ledger.figures() if ledger.budget.limited else ()
    cost = ledger.cost_usd if ledger.total_spent else None
    return {
        "budget": figures,
        "reserved": sum(b.reserved for b in figures),
        "remaining": ledger.remaining(),
        "cost_usd": cost,
        "held": keeper.note(),
    }


def _tool_format(inp: AgentInput) -> ToolFormat:
    return "native" if inp.tool_format == "auto" else inp.tool_format


def _claims(results: list[UnitResult], changed: tuple[str, ...]) -> tuple[ShardClaim, ...]:
    """Each file the job changed, net, claimed by the last unit (in merge order) that edited
    it: that unit's head holds the file as the result must. A file edited and then put back
    as the base had it is claimed by nobody: the result has it as the base."""
    owner: dict[str, str] = {}
    for r in results:
        for path in r.files_changed:
            if path in changed:
                owner[path] = r.name
    last = {r.name: r for r in results}
    return tuple(
        ShardClaim(
            name=r.name,
            head=r.head,
            files_changed=tuple(p for p in r.files_changed if owner.get(p) == r.name),
        )
        for r in last.values()
    )


async def _drop_branch(job: JobRef, name: str) -> None:
    await call(steps.SET_REF, RefUpdate(job=job, ref=f"{job.scratch}/shards/{name}", target=None))


__all__ = ["AgentWorkflow", "planner_messages"]
