"""One unit of the coding agent: a model that reads, edits, checks and tests with tools.

Each turn is one recorded model call (``ModelSteps.ask``) offered the tools of
``agentjob.TOOLS``; each tool call it makes is one ``agent.tool`` step, keyed by where it stands
in the unit (``<unit>/<call number>``), so a retried step finds the commit it already pushed
and a replay sees the same decisions; the short ones (:data:`LOCAL_TOOLS`) run as local
activities, one marker each and no workflow task of their own. The unit's head (its branch in
the job's repository) moves with every successful edit: a checkpoint commit, the write-ahead
log a unit on another worker resumes from.

Guards, all in workflow state: the circuit breaker stops the unit after ``breaker_threshold``
consecutive failed checks; loop detection (:class:`workflows.loop_detect.ToolLoops`) sends one
corrective message, then stops it; malformed calls are answered with their error and count
against the unit's turns and tokens; ``turns`` bounds the model calls.

Long sessions (``workflows/agent_context.py``): the conversation is compacted by the model
before a call that would pass ``context_threshold`` of the window, and once more after a
context-length error; a run whose history passes ``run_events`` / ``run_bytes`` continues as
new at a turn boundary, carrying everything (``UnitCarry``); units started before the patch
``agent_context.LONG_SESSION`` do neither (``_Unit.long``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from agentparallels.core import names
from agentparallels.workflows import agent_context
from agentparallels.workflows._call import call
from agentparallels.workflows.agent_watch import ToolWatch
from agentparallels.workflows.circuit_breaker import CircuitBreaker
from agentparallels.workflows.ledger import (
    CREDIT_CALLS,
    GRANT_SIGNAL,
    LEDGER_CREDIT,
    RECALL_SIGNAL,
    LedgerClient,
)
from agentparallels.workflows.loop_detect import ToolLoops
from agentparallels.workflows.model_step import ModelSteps, estimate_tokens
from agentparallels.workflows.routing import MODEL_CAPABILITY, capability_queue
from agentparallels.workflows.saga import shielded
from agentparallels.workflows.shard import BUG_TYPES

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import errors, steps
    from agentparallels.core.agent_session import LoopState, UnitCarry
    from agentparallels.core.agentjob import (
        TOOLS,
        ToolOutcome,
        ToolRequest,
        UnitInput,
        UnitResult,
        unit_marker,
    )
    from agentparallels.core.errors import BREAKER_OPEN, CONTEXT_LENGTH, ITERATION_CAP
    from agentparallels.core.llm import Grant, Message, ModelAnswer, ModelRequest
    from agentparallels.core.models import ShardProgress
    from agentparallels.core.tools import ToolCall

FINISH = "finish"
SUMMARY_CHARS = 1000
"""Longest summary a unit hands back (MapReduce: summaries, never contents)."""
TOOL_RETRY = dataclasses.replace(
    steps.AGENT_TOOL.settings.retry,
    non_retryable_error_types=[
        errors.BAD_INPUT, errors.GIT_CONFLICT, errors.SANDBOX_UNAVAILABLE,
        errors.SANDBOX_DENIED, errors.SCOPE_VIOLATION, errors.CHECK_FAILED,
    ],
)  # fmt: skip
"""The tool step's retry policy naming only the error types it can raise: the full list costs
about 400 bytes of history per tool call (see docs/agent.md, "Long sessions")."""
LOCAL_TOOLS = frozenset({"list_files", "read_file", "search", "edit_file", "write_file"})
"""Tools whose step is short (git reads, one edit and its checkpoint push) and runs as a local
activity: one marker event and no workflow task of its own per call. ``run_check`` and
``run_tests`` run commands for minutes and stay activities of their own, with a heartbeat."""
LOCAL_TOOL_STEPS = "agent-local-tool-steps"
"""Patch id: units started before it replay with every tool call an activity of its own."""
NO_TOOL = "Call a tool. When your goal is met and checked, call finish with a short summary."


def system_prompt(inp: UnitInput) -> str:
    tests = ", then run_tests" if inp.test_cmd else ""
    return (
        f"{unit_marker(inp.unit.name)}, working in its own copy of a git repository.\n"
        f"The job's task: {inp.task}\n"
        f"Your goal: {inp.unit.goal}\n"
        f"You may write only these files: {', '.join(inp.unit.scope)}. You may read the job's "
        f"files ({', '.join(inp.files)}).\n"
        "Work with the tools: read a file before you edit it; edit_file replaces one exact, "
        f"unique snippet; after your edits run run_check{tests}; fix what fails. When your "
        "goal is met, call finish with a short summary of what you changed."
    )


def first_message(inp: UnitInput) -> str:
    note = f"\n\n{inp.note}" if inp.note else ""
    return f"Begin with your goal: {inp.unit.goal}{note}"


def tool_summary(tc: ToolCall) -> str:
    """What the UI shows for a tool step before it runs (``read src/a.py:1-80``)."""
    a = tc.arguments
    if tc.name == "read_file":
        return f"read {a.get('path')}:{a.get('start', 1)}-{a.get('end', '')}".rstrip("-")
    if tc.name in ("edit_file", "write_file"):
        return f"{tc.name.split('_')[0]} {a.get('path')}"
    if tc.name == "search":
        return f"search {str(a.get('pattern'))[:60]!r}"
    if tc.name == "list_files":
        return f"list {a.get('directory') or 'files'}"
    return {"run_check": "check", "run_tests": "tests"}.get(tc.name, tc.name)


class _Unit:
    """What one run of a unit keeps from turn to turn."""

    def __init__(self, inp: UnitInput, ledger: LedgerClient, long: bool) -> None:
        self.inp = inp
        self.long = long
        """Compaction by the model and continue-as-new (units since ``LONG_SESSION``)."""
        resumed = inp.resume_from  # the checkpoint of the run a resumed job resumes
        self.head = resumed.head if resumed else inp.start
        self.changed: list[str] = list(resumed.changed) if resumed else []
        self.calls = 0
        self.turns = 0
        self.checked = False
        """A check or the tests passed after the last edit."""
        self.nudged_finish = False
        self.breaker = CircuitBreaker(threshold=inp.limits.breaker_threshold)
        self.loops = ToolLoops(inp.limits.repeat_limit, inp.limits.edits_without_check)
        self.watch = ToolWatch(inp)
        self.local_tools = workflow.patched(LOCAL_TOOL_STEPS)
        """Short tool steps run as local activities (units since ``LOCAL_TOOL_STEPS``)."""
        self.last_failure = ""
        self.runs = 1
        queue = capability_queue(workflow.info().task_queue, MODEL_CAPABILITY)
        carry = inp.carry
        state = carry.steps if carry else None
        self.model = ModelSteps(
            inp.budget,
            inp.prices,
            state,
            task_queue=queue,
            ledger=ledger,
            attempts=inp.breaker_attempts,
        )
        self.model.compact_on_overflow = not long  # a long unit compacts with a summary instead
        self.conversation: tuple[Message, ...] = (
            Message(role="system", content=system_prompt(inp)),
            Message(role="user", content=first_message(inp)),
        )
        if carry is not None:
            self.resume(carry, ledger)

    def resume(self, c: UnitCarry, ledger: LedgerClient) -> None:
        """Go on where the run that continued as new stood."""
        self.conversation, self.head, self.changed = c.conversation, c.head, list(c.changed)
        self.calls, self.turns, self.runs = c.calls, c.turns, c.runs
        self.checked, self.nudged_finish = c.checked, c.nudged_finish
        self.last_failure = c.last_failure
        self.breaker.failures = c.breaker_failures
        loops = self.loops
        loops.state, loops.warned = c.loops.state, c.loops.warned
        loops.repeats.update(c.loops.repeats)
        loops.edits.update(c.loops.edits)
        self.watch.go_on(c.tools, c.flags, c.flagged)
        ledger.go_on_from(c.ledger_next)

    def carry(self, ledger: LedgerClient) -> UnitCarry:
        """Everything the next run needs (see :meth:`resume`)."""
        loops = self.loops
        return UnitCarry(
            conversation=self.conversation,
            head=self.head,
            changed=tuple(dict.fromkeys(self.changed)),  # each file once, in order
            calls=self.calls,
            turns=self.turns,
            checked=self.checked,
            nudged_finish=self.nudged_finish,
            last_failure=self.last_failure,
            breaker_failures=self.breaker.failures,
            loops=LoopState(
                state=loops.state,
                repeats=dict(loops.repeats),
                edits=dict(loops.edits),
                warned=loops.warned,
            ),
            steps=self.model.state(),
            ledger_next=ledger.last_id,
            runs=self.runs + 1,
            tools=self.watch.stats(),
            flags=tuple(self.watch.flags),
            flagged=self.watch.flagged,
        )

    def say(self, *messages: Message) -> None:
        self.conversation = (*self.conversation, *messages)


@workflow.defn(name=names.AGENT_UNIT, failure_exception_types=BUG_TYPES)
class AgentUnitWorkflow:
    def __init__(self) -> None:
        self._ledger = LedgerClient()
        self._progress: ShardProgress | None = None
        self._unit: _Unit | None = None

    @workflow.signal(name=GRANT_SIGNAL)
    def budget_grant(self, grant: Grant) -> None:
        """The job's ledger answers a reservation (see workflows.ledger)."""
        self._ledger.granted(grant)

    @workflow.signal(name=RECALL_SIGNAL)
    def budget_recall(self, rid: int) -> None:
        """The job's ledger wants this unit's credit ``rid`` back (see workflows.ledger)."""
        self._ledger.recall(rid)

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> ShardProgress | None:
        return self._progress

    @workflow.run
    async def run(self, inp: UnitInput) -> UnitResult:
        if inp.ledger:
            self._ledger.parent_id = inp.parent_id
            if workflow.patched(LEDGER_CREDIT):  # a credit spares most calls a round trip
                self._ledger.credit_calls = CREDIT_CALLS
        # decided once, before any command; a continued run exists only where it was patched
        long = inp.carry is not None or workflow.patched(agent_context.LONG_SESSION)
        u = self._unit = _Unit(inp, self._ledger, long)
        self._show("running")
        summary = None
        try:
            while summary is None:
                if u.turns >= inp.limits.turns:
                    raise ApplicationError(
                        f"unit {inp.unit.name} used all its {inp.limits.turns} turns without "
                        f"finishing{'; last failure: ' + u.last_failure if u.last_failure else ''}",
                        type=ITERATION_CAP,
                        non_retryable=True,
                    )
                if u.long and agent_context.history_full(inp.limits):
                    await self._continue_as_new(u)
                summary = await self._turn(u)
        except (Exception, asyncio.CancelledError):  # not continue-as-new, nor an eviction
            if self._ledger.credit_calls:
                await shielded(self._settle_credit(), raise_cancel=False)
            raise
        if self._ledger.parent_id:
            await self._ledger.flush()
        self._show("done")
        return UnitResult(
            name=inp.unit.name,
            head=u.head,
            start=inp.start,
            files_changed=tuple(sorted(set(u.changed))),
            summary=summary[:SUMMARY_CHARS],
            turns=u.turns,
            tool_calls=u.calls,
            usage=u.model.total,
            cost_usd=u.model.cost_usd,
            checks_passed=u.checked,
            tools=u.watch.stats(),
            flags=tuple(u.watch.flags),
            flagged=u.watch.flagged,
        )

    async def _settle_credit(self) -> None:
        """A unit that fails or is cancelled still reports what its credit's calls spent
        (units with a credit only: others' failures replay as they were recorded)."""
        self._ledger.abandon()
        try:
            await self._ledger.flush()
        except FailureError as e:  # the job has ended; it gives back what the unit held
            workflow.logger.info("credit not settled with the job: %s", e)

    async def _continue_as_new(self, u: _Unit) -> None:
        """End this run at a turn boundary and go on in a new one with everything it knows:
        settlements reach the parent's ledger first, and no reservation is under way here."""
        if self._ledger.parent_id:
            await self._ledger.flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        carry = u.carry(self._ledger)
        workflow.continue_as_new(u.inp.model_copy(update={"carry": carry}))

    async def _ask(self, u: _Unit) -> ModelAnswer:
        """The turn's model call, its conversation compacted first when it has grown past the
        threshold, and once more (then called again) after a context-length error."""
        inp = u.inp
        req = ModelRequest(
            model=inp.model,
            base_url=inp.base_url,
            messages=u.conversation,
            max_tokens=inp.limits.max_tokens,
            tools=TOOLS,
            tool_format=inp.tool_format,
            step=f"{inp.unit.name}: turn {u.turns}",
        )
        if not u.long:
            return await u.model.ask(req)
        limit = agent_context.threshold_tokens(inp.limits, inp.model)
        if estimate_tokens(req) > limit:
            req = await agent_context.compact(u.model, req, limit) or req
            u.conversation = req.messages
        try:
            return await u.model.ask(req)
        except ActivityError as e:
            cause = e.cause
            if not (isinstance(cause, ApplicationError) and cause.type == CONTEXT_LENGTH):
                raise
            smaller = await agent_context.compact(u.model, req, limit, force=True)
            if smaller is None:
                raise
            u.conversation = smaller.messages
            return await u.model.ask(smaller)

    async def _turn(self, u: _Unit) -> str | None:
        """One model call and the tool calls it made; the finish summary when it finished."""
        u.turns += 1
        answer = await self._ask(u)
        u.say(Message(role="assistant", content=answer.text, tool_calls=answer.tool_calls))
        if not answer.tool_calls:
            u.say(Message(role="user", content=NO_TOOL))
            return None
        finished, failed = None, False
        for i, tc in enumerate(answer.tool_calls):
            if finished is not None:  # every call gets its result; none runs after finish
                reply = "Not run: it came after finish."
            elif tc.error is not None:
                reply, failed = f"Error: {tc.error}", True
            elif tc.name != FINISH:
                reply, ok = await self._tool(u, tc)
                failed = failed or not ok
            elif failed or i < len(answer.tool_calls) - 1:
                reply = "Not finished: call finish alone, once your other calls have succeeded."
            else:
                finished, reply = self._finish(u, tc)
            u.say(Message(role="tool", content=reply, tool_call_id=tc.id))
        self._show("running")
        return finished

    def _finish(self, u: _Unit, tc: ToolCall) -> tuple[str | None, str]:
        """Accept ``finish``; once, if edits have not passed a check since, ask for one."""
        if u.changed and not u.checked and not u.nudged_finish:
            u.nudged_finish = True
            return None, "Your last edits have not passed run_check yet: run it before finishing."
        return str(tc.arguments.get("summary", "")), "Finished."

    async def _tool(self, u: _Unit, tc: ToolCall) -> tuple[str, bool]:
        """Run one tool call as a step; what the model is told, and whether it succeeded."""
        inp = u.inp
        u.calls += 1
        outcome: ToolOutcome = await call(
            steps.AGENT_TOOL,
            ToolRequest(
                unit=inp.ref,
                checkpoint=u.head,
                start=inp.start,
                call=tc,
                key=f"{inp.job.job_id}/{inp.ref.name}/{u.calls}",
                scope=inp.unit.scope,
                files=inp.files,
                test_cmd=inp.test_cmd,
                check_cmd=inp.check_cmd,
                verify_rules=inp.limits.verify_rules,
                timeout_s=inp.limits.command_timeout_s,
                sandbox=inp.limits.sandbox,
                output_chars=inp.limits.output_chars,
                read_lines=inp.limits.read_lines,
            ),
            summary=f"{inp.unit.name}: {tool_summary(tc)}",
            local=u.local_tools and tc.name in LOCAL_TOOLS,
            start_to_close_timeout=timedelta(seconds=inp.limits.command_timeout_s + 120),
            retry_policy=TOOL_RETRY,
        )
        await u.watch.observe(tc, outcome, u.calls)
        u.head = outcome.head
        edited = outcome.changed[0] if outcome.changed else None
        u.changed += outcome.changed
        if edited:
            u.checked = False
        self._check(u, tc, outcome)
        warning = u.loops.after(
            tc.fingerprint(), outcome.state, edited=edited, checked=outcome.check == "passed"
        )
        reply = f"{outcome.output}\n\n{warning}" if warning else outcome.output
        return reply, outcome.ok

    def _check(self, u: _Unit, tc: ToolCall, outcome: ToolOutcome) -> None:
        """The circuit breaker: consecutive failed checks stop the unit."""
        if outcome.check == "passed":
            u.breaker.record_success()
            u.checked = True
        elif outcome.check == "failed":
            u.last_failure = f"{tc.name} on {', '.join(sorted(set(u.changed))) or 'no files'}"
            if u.breaker.record_failure() == "open":
                tail = outcome.output.strip()[-1500:]
                raise ApplicationError(
                    f"unit {u.inp.unit.name}: {u.breaker.threshold} consecutive failed checks, "
                    f"the last {u.last_failure}:\n{tail}",
                    type=BREAKER_OPEN,
                    non_retryable=True,
                )

    def _show(self, state: str) -> None:
        u = self._unit
        assert u is not None
        tokens = u.model.total.total
        self._progress = ShardProgress(
            name=u.inp.unit.name,
            label=u.inp.unit.goal[:80],
            state=state,  # type: ignore[arg-type]
            files_total=len(u.inp.unit.scope),
            files_done=len(set(u.changed)),
            breaker=u.breaker.state,
            failures=u.breaker.failures,
            tokens=tokens,
        )
        workflow.set_current_details(
            f"**{u.inp.unit.name}**: turn {u.turns}/{u.inp.limits.turns}, {u.calls} tool calls, "
            f"{len(set(u.changed))} files changed, {tokens} tokens, breaker {u.breaker.state}, "
            f"run {u.runs}, {u.model.compactions} compactions"
        )


__all__ = ["AgentUnitWorkflow", "first_message", "system_prompt", "tool_summary"]
