"""The job's ledger as its parent workflow runs it: one gate for every model call of the job.

:class:`~workflows.ledger.Ledger` decides; :class:`JobLedger` gives it a clock, a voice and a
handle for people:

- the children's reserve and settle signals and the parent's own calls (the planner's, through
  :class:`~workflows.ledger.LocalLedger`) reach the same ledger, and every decision goes back
  to whoever asked;
- **pause, not kill**: a call the budget cannot hold, even with every reservation back, waits
  (the job's phase shows ``budget``, an event says what is needed) until
  ``agentparallels budget JOB --add N`` (the ``budget_add`` update, :meth:`JobLedger.add`)
  makes room, or until ``budget_timeout`` has passed: then it is refused with the budget's
  reason and the job rolls back;
- **provider breaker**: consecutive ``ModelUnavailable`` failures across the job open the
  ledger's breaker; calls wait (phase ``breaker``) until its cool-down has passed, then one
  probe decides; a timer wakes the ledger at the end of each cool-down.

Timers run in a background task of the job (:meth:`JobLedger.watch`), on workflow time, so a
replay takes the same decisions at the same points.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows.circuit_breaker import CircuitBreaker
from agentparallels.workflows.events import JobEvents
from agentparallels.workflows.ledger import Ledger, LocalLedger, deliver

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.errors import BAD_INPUT
    from agentparallels.core.llm import BudgetAdd, BudgetLimits, Grant

BUDGET_PHASE = "budget"
"""The job's phase while a model call waits for more budget."""
BREAKER_PHASE = "breaker"
"""The job's phase while model calls wait for the provider breaker's cool-down."""
PAUSE_AND_BREAKER = "job-ledger-pause-breaker"
"""Patch id: agent jobs started before it replay with a ledger only under a token budget, the
planner counted after its calls, a refusal at once and no provider breaker."""


class JobLedger:
    """The parent's ledger with its pause, its breaker's timers and its events."""

    def __init__(
        self,
        ledger: Ledger,
        events: JobEvents,
        on_change: Callable[[], None],
        *,
        budget_timeout: timedelta,
        attempts: int = 0,
    ) -> None:
        self.ledger = ledger
        self.events = events
        self.on_change = on_change
        """Called after every decision: the job shows the ledger's new figures and phase."""
        self.budget_timeout = budget_timeout
        self.attempts = attempts
        """Attempts of one model call under the breaker (``ModelSteps.attempts``)."""
        self.local = LocalLedger(ledger, self.answer)
        self.paused_since: datetime | None = None
        self._breaker_open = False
        self._woken: datetime | None = None
        """The end of a cool-down the ledger was already woken for."""

    @classmethod
    def build(
        cls,
        budget: BudgetLimits,
        events: JobEvents,
        on_change: Callable[[], None],
        *,
        budget_timeout_s: float,
        failures: int,
        cooldown_s: float,
        probes: int,
    ) -> JobLedger:
        """A ledger that pauses for budget and keeps a provider breaker; each call may be
        attempted ``failures + probes + 1`` times, so the breaker's verdict comes first."""
        breaker = CircuitBreaker(failures, timedelta(seconds=cooldown_s))
        ledger = Ledger(budget, pause=True, breaker=breaker, probes=probes)
        timeout = timedelta(seconds=budget_timeout_s)
        return cls(
            ledger, events, on_change, budget_timeout=timeout, attempts=failures + probes + 1
        )

    async def answer(self, grants: list[tuple[str, Grant]]) -> None:
        """After a decision: note the pause and the breaker, show them, and send each grant
        to the one that asked (the job's own calls directly, its children by signal)."""
        self._notice()
        self.on_change()
        own = workflow.info().workflow_id
        for holder, grant in grants:
            if holder == own:
                self.local.granted(grant)
        await deliver([(h, g) for h, g in grants if h != own], self.ledger.recalls())

    def hold(self) -> str | None:
        """The phase the job shows while model calls wait here; None: none waits."""
        if self.paused_since is not None:
            return BUDGET_PHASE
        breaker = self.ledger.breaker
        if breaker is not None and breaker.state != "closed" and self.ledger.waiting:
            return BREAKER_PHASE
        return None

    def check_add(self, add: BudgetAdd) -> None:
        """The update's validator: refused updates leave no trace in the job's history."""
        if self.ledger.budget.total is None:
            raise ApplicationError(
                "the job has no token budget to add to (it was started without "
                "--budget-tokens): nothing limits its tokens",
                type=BAD_INPUT,
            )

    async def add(self, add: BudgetAdd) -> str:
        """``agentparallels budget JOB --add N``: raise the budget; blocked calls that now
        fit go on."""
        waiting = len(self.ledger.blocked())
        grants = self.ledger.add(add.tokens)
        total = self.ledger.budget.total
        by = f" by {add.by}" if add.by else ""
        self.events.record("budget_added", detail=f"{add.tokens} tokens{by}; budget {total}")
        await self.answer(grants)
        still = len(self.ledger.blocked())
        if still:
            need = self.ledger.shortfall(self.ledger.blocked()[0])
            return f"budget now {total} tokens; still paused: add at least {need} more"
        resumed = f"; {waiting} waiting call(s) resumed" if waiting else ""
        return f"budget now {total} tokens{resumed}"

    async def watch(self) -> None:
        """The pause's timeout and the breaker's cool-downs, on workflow time: run as a
        background task for the job's life."""
        while True:
            await workflow.wait_condition(lambda: self._next() is not None)
            due = self._next()
            assert due is not None
            when, what = due
            if not await self._reached(due):
                continue  # something changed first: look again
            if what == BUDGET_PHASE:
                grants = self.ledger.refuse_blocked()
                self.events.record(
                    "budget_refused",
                    detail=f"no budget added within {self.budget_timeout.total_seconds():g} s",
                )
            else:
                self._woken = when
                grants = self.ledger.wake()
            await self.answer(grants)

    async def _reached(self, due: tuple[datetime, str]) -> bool:
        """Wait for ``due``; False if the next moment to act changed before it came."""
        delay = (due[0] - workflow.now()).total_seconds()
        if delay <= 0:
            return True
        try:
            await workflow.wait_condition(lambda: self._next() != due, timeout=delay)
        except TimeoutError:
            return True
        return False

    def _next(self) -> tuple[datetime, str] | None:
        """The next moment the ledger must act by itself: a pause's deadline, or the end
        of a cool-down while calls wait for it."""
        due: list[tuple[datetime, str]] = []
        if self.paused_since is not None:
            due.append((self.paused_since + self.budget_timeout, BUDGET_PHASE))
        breaker = self.ledger.breaker
        if breaker is not None and self.ledger.waiting:
            reopens = breaker.reopens_at
            if reopens is not None and reopens != self._woken:
                due.append((reopens, BREAKER_PHASE))
        return min(due) if due else None

    def _notice(self) -> None:
        """Record the pause and the breaker's changes as the job's events."""
        blocked = self.ledger.blocked()
        if blocked and self.paused_since is None:
            self.paused_since = workflow.now()
            self.events.record("budget_paused", detail=self.note())
        elif not blocked:
            self.paused_since = None
        breaker = self.ledger.breaker
        if breaker is None:
            return
        is_open = breaker.state != "closed"
        if is_open and not self._breaker_open:
            self.events.record("provider_breaker_opened", detail=self.note())
        elif not is_open and self._breaker_open:
            self.events.record("provider_breaker_closed", detail="a model call succeeded")
        self._breaker_open = is_open

    def note(self) -> str:
        """What the UI and ``status`` say about calls waiting here (empty: none)."""
        job = workflow.info().workflow_id
        if self.paused_since is not None:
            r = self.ledger.blocked()[0]
            used = self.ledger.used(held=False)
            why = self.ledger.budget.refusal(r.phase, used, r.tokens)
            need = self.ledger.shortfall(r)
            deadline = self.paused_since + self.budget_timeout
            return (
                f"paused for budget: a {r.phase} call of up to {r.tokens} tokens does not fit "
                f"{why[0] if why else 'the budget'} ({self.ledger.total_spent} spent); run "
                f"`agentparallels budget {job} --add {need}` (at least {need}) before "
                f"{deadline:%H:%M:%S} UTC, or the job rolls back"
            )
        breaker = self.ledger.breaker
        if breaker is None or breaker.state == "closed":
            return ""
        last = f"; last error: {self.ledger.last_error[:200]}" if self.ledger.last_error else ""
        if breaker.state == "half-open":
            return f"model provider breaker half-open: one probe call decides{last}"
        reopens = breaker.reopens_at
        when = f"; next probe at {reopens:%H:%M:%S} UTC" if reopens else ""
        return (
            f"model provider breaker open after {breaker.failures} failed calls in a row, "
            f"{self.ledger.failed_probes}/{self.ledger.probes} probes failed{when}{last}"
        )


__all__ = ["BREAKER_PHASE", "BUDGET_PHASE", "JobLedger", "PAUSE_AND_BREAKER"]
