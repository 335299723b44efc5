"""Model calls from workflow code: recorded decisions, budgets, re-prompts and compaction.

Each call is one ``llm.call`` activity, so its request and answer are recorded in the history:
a replay or a reset reuses the same decision, and whatever follows is keyed by where it stands
in the workflow, not by what the model said. Around that activity, :class:`ModelSteps`:

- checks the token budget (job-wide and per phase, unspent budget flowing forward from phase
  to phase as ``BudgetLimits`` describes) *before* every call, and refuses a call that could
  exceed it, with a message saying how much was spent where; given a job's ledger
  (``workflows.ledger``) it reserves the call's estimate from it instead, and settles what the
  call used afterwards;
- answers a context-length error by compacting the conversation once and calling again,
  never by a blind retry;
- answers an invalid structured answer by calling again with the validation error as feedback
  (a new activity, so the history shows each attempt), at most ``reprompts`` times.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from agentparallels.workflows import credentials
from agentparallels.workflows._call import call
from agentparallels.workflows.ledger import LedgerClient

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.errors import (
        BUDGET_EXCEEDED,
        CONTEXT_LENGTH,
        MODEL_RETRYABLE,
        MODEL_THROTTLED,
        OUTPUT_INVALID,
    )
    from agentparallels.core.llm import (
        BudgetLimits,
        Message,
        ModelAnswer,
        ModelRequest,
        Price,
        StepsState,
        Usage,
        budget_message,
    )

CHARS_PER_TOKEN = 4
"""Estimate used for budget checks before a call; recorded usage replaces it afterwards."""
PER_ATTEMPT = dataclasses.replace(steps.MODEL_RETRY, non_retryable_error_types=[MODEL_RETRYABLE])
"""The model step's retries under a job's provider breaker: a ``ModelUnavailable`` attempt
comes back to the workflow at once, for the breaker to count and to wait on; a worker that
dies mid-call (a timeout) is still retried by the server, finitely."""
FLOW_ONCE = "budget-carry-once"
"""Patch id: runs recorded while unspent plan tokens counted twice replay with that rule."""


def estimate_tokens(req: ModelRequest) -> int:
    """A conservative guess of what ``req`` can cost: its text, the attached file (as the plan
    counted it), its context budget, its longest answer."""
    text = sum(len(m.content) for m in req.messages) // CHARS_PER_TOKEN
    # Tools and tool calls travel with the request too (none in requests without tools).
    text += sum(len(json.dumps(t.parameters)) + len(t.description) for t in req.tools) // (
        CHARS_PER_TOKEN
    )
    text += sum(len(json.dumps(c.arguments)) for m in req.messages for c in m.tool_calls) // (
        CHARS_PER_TOKEN
    )
    context = req.context.related_tokens + req.context.file_tokens if req.context else 0
    return text + context + req.max_tokens


def compact(req: ModelRequest) -> ModelRequest:
    """A smaller request: related files dropped first; then every turn between the first
    (the task) and the last, replaced by a note that they were dropped. When the last turn is
    a tool result, the assistant message that made the call and all its results are kept:
    providers refuse a result without its call."""
    if req.context and req.context.related_tokens:
        return req.model_copy(
            update={"context": req.context.model_copy(update={"related_tokens": 0})}
        )
    system = [m for m in req.messages if m.role == "system"]
    turns = [m for m in req.messages if m.role != "system"]
    keep = 1
    if turns[-1].role == "tool":  # tool results stay with the call they answer
        calls = max(i for i, m in enumerate(turns) if m.role == "assistant" and m.tool_calls)
        keep = len(turns) - calls
    if len(turns) <= keep + 1:
        return req
    dropped = len(turns) - keep - 1
    plural = "s were" if dropped != 1 else " was"
    note = Message(role="user", content=f"({dropped} earlier message{plural} dropped to fit.)")
    return req.model_copy(update={"messages": (*system, turns[0], note, *turns[-keep:])})


class ModelSteps:
    """Model calls of one workflow, with the budget they share."""

    def __init__(
        self,
        budget: BudgetLimits | None = None,
        prices: dict[str, Price] | None = None,
        state: StepsState | None = None,
        *,
        task_queue: str | None = None,
        ledger: LedgerClient | None = None,
        attempts: int = 0,
    ) -> None:
        self.budget = budget or BudgetLimits()
        self.ledger = ledger if ledger is not None and ledger.parent_id else None
        """The job's ledger, which then decides every call instead of ``budget``."""
        self.attempts = attempts if self.ledger is not None else 0
        """Attempts of one call under the job's provider breaker; 0: the step's own retries
        are the only ones (see ``_attempts``)."""
        self.prices = prices or {}
        self.task_queue = task_queue
        """Where the calls run (default: the workflow's queue); a queue of their own lets
        workers rate-limit them. Calls that need a provider's key go to the queue of the
        workers holding it instead (see ``workflows.credentials``)."""
        self._key_holders: set[str] = set()
        self.compact_on_overflow = True
        """False: a context-length error is raised to the caller, which compacts in its own
        way (an agent unit has the model summarise)."""
        state = state or StepsState()
        self.used: dict[str, Usage] = dict(state.used)
        self.calls = state.calls
        self.compactions = state.compactions
        self._cost: float | None = state.cost_usd

    def state(self) -> StepsState:
        """What has been spent, to carry into the next run of a continued-as-new workflow."""
        return StepsState(
            used=self.used, calls=self.calls, cost_usd=self._cost, compactions=self.compactions
        )

    def spent(self) -> dict[str, int]:
        """Tokens per phase."""
        return {phase: usage.total for phase, usage in self.used.items()}

    @property
    def total(self) -> Usage:
        return sum(self.used.values(), Usage())

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost, when every model used has a price."""
        return self._cost

    def check(self, phase: str, estimate: int) -> None:
        """Refuse a call of ``estimate`` tokens in ``phase`` that could exceed a budget."""
        used = self.spent()
        why = self.budget.refusal(phase, used, estimate)
        old = self.budget.refusal(phase, used, estimate, carry_once=False)
        if (why is None) != (old is None) and not workflow.patched(FLOW_ONCE):
            why = old  # recorded under the old rule: decide as it did
        if why is not None:
            raise ApplicationError(
                budget_message(*why, estimate, used), type=BUDGET_EXCEEDED, non_retryable=True
            )

    def record(self, phase: str, model: str, usage: Usage) -> None:
        self.used[phase] = self.used.get(phase, Usage()) + usage
        self.calls += 1
        price = self.prices.get(model)
        if price is None or self._cost is None:
            self._cost = None
        else:
            self._cost += price.cost(usage)

    async def ask(
        self, req: ModelRequest, *, phase: str = "execute", reprompts: int = 2
    ) -> ModelAnswer:
        """Call the model; see the module's docstring for what happens around the call."""
        compacted = False
        invalid = 0
        while True:
            try:
                answer = await self._attempts(req, phase)
            except ActivityError as e:
                if _type_of(e) == CONTEXT_LENGTH and not compacted and self.compact_on_overflow:
                    smaller = compact(req)
                    if smaller != req:
                        req, compacted = smaller, True
                        continue
                raise
            if answer.invalid is None:
                return answer
            invalid += 1
            if invalid > reprompts:
                raise ApplicationError(
                    f"{req.model}'s answer to '{req.step}' did not validate after {invalid} "
                    f"attempts; last error: {answer.invalid}",
                    type=OUTPUT_INVALID,
                    non_retryable=True,
                )
            feedback = (
                "Your answer did not validate:\n"
                f"{answer.invalid}\nAnswer again with corrected JSON only."
            )
            req = req.model_copy(
                update={
                    "messages": (
                        *req.messages,
                        Message(role="assistant", content=answer.text),
                        Message(role="user", content=feedback),
                    )
                }
            )

    async def _attempts(self, req: ModelRequest, phase: str) -> ModelAnswer:
        """One call; under the job's provider breaker, asked again after each
        ``ModelUnavailable`` (the breaker decides when) and each ``ModelRateLimited`` that
        outlasted the step's own retries (the breaker does not count it), at most
        ``attempts`` times."""
        failures = 0
        while True:
            try:
                return await self._once(req, phase)
            except ActivityError as e:
                again = (MODEL_RETRYABLE, MODEL_THROTTLED)  # throttled: not an outage
                if not self.attempts or _type_of(e) not in again or _final(e):
                    raise
                failures += 1
                if failures >= self.attempts:
                    raise
                if self.ledger is not None:  # the failure counts before the next request
                    await self.ledger.flush()

    async def _once(self, req: ModelRequest, phase: str) -> ModelAnswer:
        """Reserve, call, settle (with how the call went, for the provider breaker)."""
        estimate = estimate_tokens(req)
        held = None
        if self.ledger is not None:
            held = await self.ledger.reserve(phase, estimate)
        else:
            self.check(phase, estimate)
        queue = self.task_queue
        if credentials.needs_key(req) and workflow.patched(credentials.PATCH):
            queue = await credentials.route(queue, req, self._key_holders)
        options: dict[str, Any] = {"task_queue": queue} if queue else {}
        if self.attempts:  # the breaker sees every failed attempt; worker faults still retry
            options["retry_policy"] = PER_ATTEMPT
        try:
            answer = await call(
                steps.CALL_MODEL, req, summary=f"{req.step} · {req.model}", **options
            )
        except ActivityError as e:
            if held is not None and self.ledger is not None:  # a failed call: none used
                down = _type_of(e) == MODEL_RETRYABLE
                error = _message(e)[:300] if down else ""
                self.ledger.settle(
                    held, phase, 0, outcome="unavailable" if down else "", error=error
                )
            raise
        self.record(phase, req.model, answer.usage)
        if held is not None and self.ledger is not None:
            price = self.prices.get(req.model)
            cost = price.cost(answer.usage) if price is not None else None
            self.ledger.settle(held, phase, answer.usage.total, outcome="ok", cost_usd=cost)
        return answer


def _final(e: ActivityError) -> bool:
    """The provider said not to ask again (``x-should-retry: false``)."""
    return isinstance(e.cause, ApplicationError) and e.cause.non_retryable


def _message(e: ActivityError) -> str:
    cause = e.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or e)


def _type_of(e: ActivityError) -> str | None:
    cause = e.cause
    return cause.type if isinstance(cause, ApplicationError) else None


__all__ = [
    "CHARS_PER_TOKEN",
    "FLOW_ONCE",
    "PER_ATTEMPT",
    "ModelSteps",
    "compact",
    "estimate_tokens",
]
