"""One token ledger for a whole job, kept by the parent workflow; shards reserve from it.

A refactor job's shards run as child workflows, in parallel, and all spend one budget. Instead
of giving each shard a fixed share (which fails a shard that needs more than its share while
another leaves its share unspent), the parent keeps the only ledger, and every model call goes
through it in two steps:

1. **Reserve.** Before a call the shard signals the parent a :class:`Reservation` of the call's
   estimate and waits for a :class:`Grant` signalled back. (A workflow cannot send another
   workflow an update, only a signal, so the request and its answer are a pair of signals; both
   sides are plain workflow code, recorded in both histories, so a replay takes the same
   decisions.) The parent grants it when the estimate fits the job's budget and the phase's
   allowance with everything spent *and everything reserved* counted; it refuses it, with the
   budget reason the job then fails with, when it could not fit even if every other reservation
   came back unused; otherwise the request waits, in order, until other calls settle.
2. **Settle.** After the call the shard signals a :class:`Settlement` of what it actually used;
   the rest of the reservation returns to the pool, for whichever shard needs it next. A shard
   that ends (or fails) gives back whatever it still holds.

Phases (plan, execute, verify) are enforced by the same ledger with ``BudgetLimits.allowance``:
unspent budget flows forward, never back. The figures the UI shows (spent, reserved, remaining)
are the ledger's own, so what a user reads is what is enforced.

**Credit.** A round trip to the parent before every call costs a holder that calls the model
turn after turn (an agent unit) about 100 ms and five events a call. Such a holder asks for a
credit with its reservation (``Reservation.credit``, see :class:`LedgerClient`); the ledger
grants one only while nothing else waits, the provider breaker is closed with no failure
counted, and the budget holds it with everything else reserved and room left for
:data:`CREDIT_CALLS` more calls of its size (so a credit never makes another holder wait). The
holder's next calls in the same phase spend the credit without asking, and it settles them in
one settlement when the credit runs short, when a call fails (at once: the breaker hears of
every failure as it happens), before it continues as new, and when it ends, fails or is
cancelled. The settlement tells the breaker of no success older than a recall. A credit is
reserved like any call, so the budget stays enforced; whenever the ledger could use it (a
request waits, or the breaker counts a failure) it recalls every credit
(:data:`RECALL_SIGNAL`), and each holder settles as soon as its call under way, if any, is
done.

Two options make the ledger the job's single gate for model calls (the coding agent uses both;
``workflows.job_ledger`` runs them):

- **Pause, not kill** (``pause=True``). A request that could not fit even if every other
  reservation came back unused is not refused: it stays *blocked* (:meth:`Ledger.blocked`)
  until :meth:`Ledger.add` raises the budget or :meth:`Ledger.refuse_blocked` gives up on it.
- **Provider breaker** (``breaker=``, a :class:`~workflows.circuit_breaker.CircuitBreaker`).
  A settlement says how its call went; consecutive ``unavailable`` outcomes, across every
  holder, open the breaker, and while it is open no grant is given. Once the cool-down has
  passed exactly one request is granted, the probe: its success closes the breaker, its failure
  opens it again for twice the cool-down. After ``probes`` failed probes the provider is taken
  as down and every request is refused with the provider's last message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from agentparallels.core import names
from agentparallels.workflows.circuit_breaker import CircuitBreaker

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.errors import BREAKER_OPEN, BUDGET_EXCEEDED
    from agentparallels.core.llm import (
        PHASES,
        BudgetLimits,
        Grant,
        Reservation,
        Settlement,
        budget_message,
    )
    from agentparallels.core.models import PhaseBudget

RESERVE_SIGNAL = names.RESERVE_SIGNAL
"""Shard to parent: a :class:`Reservation`."""
SETTLE_SIGNAL = names.SETTLE_SIGNAL
"""Shard to parent: a :class:`Settlement`."""
GRANT_SIGNAL = names.GRANT_SIGNAL
"""Parent to shard: a :class:`Grant`."""
RECALL_SIGNAL = names.RECALL_SIGNAL
"""Parent to shard: settle your credit as soon as no call of yours is under way."""
CREDIT_CALLS = 8
"""A credit asked for covers about this many calls of the first one's estimate."""
LEDGER_CREDIT = "ledger-credit"
"""Patch id: units started before it reserve and settle every call with the parent."""
JOB_LEDGER = "job-token-ledger"
"""Patch id: jobs started before the ledger replay with fixed per-shard shares."""


class Ledger:
    """The parent's side: what is spent and held per phase, and who waits for tokens."""

    def __init__(
        self,
        budget: BudgetLimits,
        *,
        pause: bool = False,
        breaker: CircuitBreaker | None = None,
        probes: int = 1,
    ) -> None:
        self.budget = budget
        self.spent: dict[str, int] = {}
        self.held: dict[tuple[str, int], Reservation] = {}
        self.waiting: list[Reservation] = []
        self.pause = pause
        """Keep a request that cannot fit waiting (blocked) instead of refusing it."""
        self.breaker = breaker
        self.probes = probes
        """Failed probes after which the provider is taken as down."""
        self.failed_probes = 0
        self.probe: tuple[str, int] | None = None
        """The reservation let through half-open, whose outcome decides the breaker."""
        self.down: str | None = None
        """Why every request is refused: the provider failed every probe."""
        self.last_error = ""
        self.cost_usd: float | None = 0.0
        """Dollars the settled calls cost; None once one had no price."""
        self._cooldown = breaker.cooldown if breaker is not None else None
        self.credits: set[tuple[str, int]] = set()
        """Held reservations that carry a credit."""
        self.recalled: set[tuple[str, int]] = set()
        """Credits already recalled (a recall is signalled once)."""

    @property
    def total_spent(self) -> int:
        return sum(self.spent.values())

    def count(self, spent: dict[str, int]) -> None:
        """Tokens spent outside the ledger (by shards an earlier run of the job finished)."""
        for phase, n in spent.items():
            self.spent[phase] = self.spent.get(phase, 0) + n

    def used(self, *, held: bool = True) -> dict[str, int]:
        """Tokens per phase: spent, plus (by default) held by calls under way."""
        used = dict(self.spent)
        for r in self.held.values() if held else ():
            used[r.phase] = used.get(r.phase, 0) + r.tokens
        return used

    def reserve(self, r: Reservation) -> list[tuple[str, Grant]]:
        """Take a request; the answers that can be given now (to it or to others)."""
        if (r.holder, r.id) not in self.held and r not in self.waiting:  # a repeat is ignored
            self.waiting.append(r)
        return self._decide()

    def settle(self, s: Settlement) -> list[tuple[str, Grant]]:
        """Count what a call used and return the rest of its reservation to the pool."""
        self.held.pop((s.holder, s.id), None)
        self.credits.discard((s.holder, s.id))
        self.recalled.discard((s.holder, s.id))
        self.spent[s.phase] = self.spent.get(s.phase, 0) + s.tokens
        self.cost_usd = plus_cost(self.cost_usd, s.tokens, s.cost_usd)
        self._outcome(s)
        return self._decide()

    def release(self, holder: str) -> list[tuple[str, Grant]]:
        """A shard has ended: whatever it holds or waits for goes back to the pool."""
        for key in [k for k in self.held if k[0] == holder]:
            del self.held[key]
            self.credits.discard(key)
            self.recalled.discard(key)
        self.waiting = [r for r in self.waiting if r.holder != holder]
        if self.probe is not None and self.probe[0] == holder and self.breaker is not None:
            self.probe = None
            self.breaker.abandon_trial()
        return self._decide()

    def blocked(self) -> list[Reservation]:
        """Requests that could not fit even if every reservation came back unused (only
        with ``pause``: otherwise they are refused at once)."""
        used = self.used(held=False)
        return [r for r in self.waiting if self.budget.refusal(r.phase, used, r.tokens)]

    def add(self, tokens: int) -> list[tuple[str, Grant]]:
        """Raise the job's budget by ``tokens``; the requests that now fit are granted."""
        assert self.budget.total is not None
        self.budget = self.budget.model_copy(update={"total": self.budget.total + tokens})
        return self._decide()

    def refuse_blocked(self) -> list[tuple[str, Grant]]:
        """Give up on every blocked request: each is refused with its budget reason."""
        used = self.used(held=False)
        refused: list[tuple[str, Grant]] = []
        for r in self.blocked():
            why = self.budget.refusal(r.phase, used, r.tokens)
            assert why is not None
            reason = budget_message(*why, r.tokens, used)
            refused.append((r.holder, Grant(id=r.id, granted=False, reason=reason)))
            self.waiting.remove(r)
        return refused

    def shortfall(self, r: Reservation) -> int:
        """The fewest tokens :meth:`add` must give for ``r`` to fit, all else unused."""
        used, total = self.used(held=False), self.budget.total or 0
        low, high = 0, max(r.tokens, 1)
        more = self.budget.model_copy(update={"total": total + high})
        while more.refusal(r.phase, used, r.tokens) and high < 1 << 40:
            low, high = high, high * 2
            more = self.budget.model_copy(update={"total": total + high})
        while high - low > 1:  # the budget rule is monotonic in the total
            mid = (low + high) // 2
            more = self.budget.model_copy(update={"total": total + mid})
            low, high = (mid, high) if more.refusal(r.phase, used, r.tokens) else (low, mid)
        return high

    def recalls(self) -> list[tuple[str, int]]:
        """Credits to ask back now, as (holder, reservation id), each once: whenever a
        request waits, or the provider breaker has counted a failure, a credit must not let
        calls pass the ledger."""
        if not self.credits or not (self.waiting or not self._clear()):
            return []
        due = sorted(self.credits - self.recalled)
        self.recalled.update(due)
        return due

    def _clear(self) -> bool:
        """The provider breaker, if any, is closed with no failure counted."""
        b = self.breaker
        return b is None or (b.state == "closed" and b.failures == 0 and self.probe is None)

    def _credit(self, r: Reservation) -> int:
        """The most of ``r.credit`` the ledger can give with the call: none while anything
        else waits or the breaker is not clear; else as much as the budget holds with room
        left for :data:`CREDIT_CALLS` more calls of this size, so that a credit never makes
        other holders wait (and with little budget left, none: every call asks)."""
        if not r.credit or len(self.waiting) > 1 or not self._clear():
            return 0
        used, room = self.used(), r.tokens * CREDIT_CALLS
        if self.budget.refusal(r.phase, used, r.tokens + r.credit + room) is None:
            return r.credit
        low, high = -1, r.credit  # low fits, high does not: the budget rule is monotonic
        while high - low > 1:
            mid = (low + high) // 2
            fits = self.budget.refusal(r.phase, used, r.tokens + mid + room) is None
            low, high = (mid, high) if fits else (low, mid)
        return max(low, 0)

    def wake(self) -> list[tuple[str, Grant]]:
        """Decide again (the breaker's cool-down has passed)."""
        return self._decide()

    def _outcome(self, s: Settlement) -> None:
        """The provider breaker: a settlement's outcome counts as a success or a failure."""
        if self.breaker is None:
            return
        was_probe = self.probe == (s.holder, s.id)
        if self.probe is not None and not was_probe:
            return  # a call granted before the breaker opened: while out, the probe decides
        if was_probe:
            self.probe = None
        if s.outcome == "ok":
            self.breaker.record_success()
            self.breaker.cooldown, self.failed_probes = self._cooldown, 0
        elif s.outcome == "unavailable":
            self.last_error = s.error
            if was_probe:
                self.failed_probes += 1
                assert self._cooldown is not None
                self.breaker.cooldown = self._cooldown * 2**self.failed_probes
            self.breaker.record_failure()
            if self.failed_probes >= self.probes:
                self.down = self._down_message()
        elif was_probe:  # failed for another reason: says nothing about the provider
            self.breaker.abandon_trial()

    def _down_message(self) -> str:
        assert self.breaker is not None and self._cooldown is not None
        waited = sum((self._cooldown * 2**n for n in range(self.failed_probes)), timedelta())
        return (
            f"the model provider stayed unavailable: {self.breaker.failures} calls failed in a "
            f"row, the last {self.failed_probes} probes after cool-downs totalling "
            f"{_seconds(waited)}; its last error: {self.last_error or 'none given'}"
        )

    def _decide(self) -> list[tuple[str, Grant]]:
        decided: list[tuple[str, Grant]] = []
        for r in list(self.waiting):
            grant = self._answer(r)
            if grant is None:
                continue  # fits once others settle, is blocked, or waits for the breaker
            decided.append((r.holder, grant))
            self.waiting.remove(r)
        return decided

    def _answer(self, r: Reservation) -> Grant | None:
        if self.down is not None:
            return Grant(id=r.id, granted=False, reason=self.down, kind=BREAKER_OPEN)
        if self.budget.refusal(r.phase, self.used(), r.tokens) is None:
            if self.breaker is not None:
                half_open = self.breaker.state == "half-open"
                if not self.breaker.allows():
                    return None
                if half_open:
                    self.probe = (r.holder, r.id)
            credit = self._credit(r)
            key = (r.holder, r.id)
            self.held[key] = r.model_copy(update={"tokens": r.tokens + credit, "credit": 0})
            if credit:
                self.credits.add(key)
            return Grant(id=r.id, granted=True, credit=credit)
        if why := self.budget.refusal(r.phase, self.used(held=False), r.tokens):
            if self.pause:
                return None  # blocked: it waits for more budget (see add, refuse_blocked)
            # It would not fit even if every other reservation came back unused.
            reason = budget_message(*why, r.tokens, self.used(held=False))
            return Grant(id=r.id, granted=False, reason=reason)
        return None

    def figures(self) -> tuple[PhaseBudget, ...]:
        """Each phase's spent, reserved, allowance and what a call in it could get now."""
        used, held = self.used(), self.used()
        for phase, n in self.spent.items():
            held[phase] -= n  # what is left is held by calls under way
        phases = (*PHASES, *sorted(set(used) - set(PHASES)))
        return tuple(
            PhaseBudget(
                phase=phase,
                spent=self.spent.get(phase, 0),
                reserved=held.get(phase, 0),
                allowance=self.budget.allowance(phase, used),
                remaining=self.budget.remaining(phase, used),
            )
            for phase in phases
        )

    def remaining(self) -> int | None:
        """Tokens of the job's budget neither spent nor reserved; None: no job budget."""
        if self.budget.total is None:
            return None
        return max(0, self.budget.total - sum(self.used().values()))


def plus_cost(total: float | None, tokens: int, cost_usd: float | None) -> float | None:
    """``total`` dollars with a call of ``tokens`` tokens that cost ``cost_usd`` added: None
    once a call that used tokens had no price (the sum would understate the cost)."""
    if total is None or (tokens and cost_usd is None):
        return None
    return total + (cost_usd or 0.0)


def _seconds(d: timedelta) -> str:
    n = d.total_seconds()
    return f"{n:g} s" if n < 120 else f"{n / 60:g} min"


async def deliver(grants: list[tuple[str, Grant]], recalls: Sequence[tuple[str, int]] = ()) -> None:
    """The parent's side: signal each decision to the child that asked, then each recall of a
    credit, by its reservation id (a child that has ended meanwhile waits for nothing)."""
    sends: list[tuple[str, str, Grant | int]] = [(h, GRANT_SIGNAL, g) for h, g in grants]
    sends += [(holder, RECALL_SIGNAL, rid) for holder, rid in recalls]
    for holder, name, arg in sends:
        try:
            await workflow.get_external_workflow_handle(holder).signal(name, arg)
        except FailureError:
            pass


Outcome = Literal["", "ok", "unavailable"]
"""How a call went, as a settlement tells the provider breaker."""


@dataclass
class _Credit:
    """A holder's open credit: one reservation of the parent's that several calls spend."""

    rid: int
    phase: str
    left: int
    """Granted tokens neither spent nor held by a call under way."""
    under_way: list[int] = field(default_factory=list)
    """The estimates of the calls under way on it, oldest first."""
    spent: int = 0
    cost_usd: float | None = 0.0
    recalled: bool = False
    """The parent wants it back: settle once no call is under way, spend no more."""
    outcome: Outcome = ""
    """What its settlement tells the provider breaker: a failure's outcome (which closes
    it), ``ok`` only for a call that succeeded after the parent recalled it, else nothing.
    Its earlier successes are older than the failure that made the parent recall it: told
    now, they would close a breaker that has opened since."""
    error: str = ""


class LedgerClient:
    """The shard's side: reserve before a call, settle after.

    With ``credit_calls`` (an agent unit), a reservation also asks for a credit of about that
    many calls (see the module's docstring): calls it covers reserve and settle here, without a
    signal, and one settlement reports them all."""

    def __init__(self, credit_calls: int = 0) -> None:
        self.parent_id: str | None = None
        """Set when the job keeps a ledger; None: the shard checks its own budget."""
        self.credit_calls = credit_calls
        self._next = 0
        self._grants: dict[int, Grant] = {}
        self._sent: list[asyncio.Future[None]] = []
        self._credit: _Credit | None = None
        self._recalled: set[int] = set()
        """Credits the parent asked back (by reservation id)."""

    def granted(self, grant: Grant) -> None:
        """The shard's signal handler for :data:`GRANT_SIGNAL`."""
        self._grants[grant.id] = grant

    def recall(self, rid: int) -> None:
        """The shard's signal handler for :data:`RECALL_SIGNAL`: credit ``rid`` is settled as
        soon as no call is under way on it, and spent no more. The recall may come in the same
        workflow task as its grant, before :meth:`reserve` has opened the credit: it is kept
        for it."""
        self._recalled.add(rid)
        if self._credit is not None and self._credit.rid == rid:
            self._credit.recalled = True
            self._close_if_idle()

    async def reserve(self, phase: str, tokens: int) -> int:
        """Wait until the parent grants ``tokens`` for a call in ``phase``; its reservation id.
        A refusal fails the shard with its reason (non-retryable): the budget's, or the
        provider breaker's when the provider stayed down. A call the open credit covers takes
        its tokens from it, without asking."""
        assert self.parent_id is not None
        c = self._credit
        if c is not None:
            if c.phase == phase and not c.recalled and c.left >= tokens:
                c.left -= tokens
                c.under_way.append(tokens)
                return c.rid
            c.recalled = True  # short: settle it (received first), then ask the parent
            self._close_if_idle()
            await self._drain()
        self._next += 1
        rid = self._next
        holder = workflow.info().workflow_id
        ask = tokens * (self.credit_calls - 1) if self.credit_calls and self._credit is None else 0
        request = Reservation(holder=holder, id=rid, phase=phase, tokens=tokens, credit=ask)
        await self._request(request)
        await workflow.wait_condition(lambda: rid in self._grants)
        grant = self._grants.pop(rid)
        if not grant.granted:
            kind = grant.kind or BUDGET_EXCEEDED
            raise ApplicationError(grant.reason, type=kind, non_retryable=True)
        if grant.credit and self._credit is None:
            recalled = rid in self._recalled
            self._credit = _Credit(rid, phase, grant.credit, [tokens], recalled=recalled)
        return rid

    def settle(
        self,
        rid: int,
        phase: str,
        tokens: int,
        *,
        outcome: Outcome = "",
        error: str = "",
        cost_usd: float | None = None,
    ) -> None:
        """Tell the parent what the call used and how it went; sent without waiting (see
        :meth:`flush`). A call on the open credit is counted in it; the credit is settled
        at once when the call did not succeed (the breaker must hear of it) or was recalled."""
        assert self.parent_id is not None
        c = self._credit
        if c is not None and rid == c.rid:
            estimate = c.under_way.pop(0) if c.under_way else tokens
            c.left += estimate - tokens
            c.spent += tokens
            c.cost_usd = plus_cost(c.cost_usd, tokens, cost_usd)
            if outcome != "ok":
                if c.outcome in ("", "ok"):
                    c.outcome, c.error = outcome, error
                c.recalled = True
            elif c.rid in self._recalled and c.outcome == "":
                c.outcome = "ok"  # a success newer than the failure that recalled it
            self._close_if_idle()
            return
        s = Settlement(
            holder=workflow.info().workflow_id,
            id=rid,
            phase=phase,
            tokens=tokens,
            outcome=outcome,
            error=error,
            cost_usd=cost_usd,
        )
        self._sent.append(asyncio.ensure_future(self._settled(s)))

    def _close_if_idle(self) -> None:
        """Settle a recalled credit once no call is under way on it."""
        c = self._credit
        if c is None or not c.recalled or c.under_way:
            return
        self._credit = None
        s = Settlement(
            holder=workflow.info().workflow_id,
            id=c.rid,
            phase=c.phase,
            tokens=c.spent,
            outcome=c.outcome,
            error=c.error,
            cost_usd=c.cost_usd if c.spent else None,
        )
        self._sent.append(asyncio.ensure_future(self._settled(s)))

    def abandon(self) -> None:
        """The holder is failing: settle the open credit with what it spent so far, even with
        a call under way on it (a cancelled call's tokens are not known)."""
        if self._credit is not None:
            self._credit.under_way.clear()
            self._credit.recalled = True
            self._close_if_idle()

    async def flush(self) -> None:
        """Wait until the parent has received every settlement, the open credit's too (at a
        turn boundary, the unit's end or its failure: no call is under way on it)."""
        if self._credit is not None:
            self._credit.recalled = True
            self._close_if_idle()
        await self._drain()

    async def _drain(self) -> None:
        """Wait until the parent has received every settlement sent so far."""
        for sent in self._sent:
            await sent
        self._sent.clear()

    @property
    def last_id(self) -> int:
        """The last reservation number used (a run continued as new goes on from it)."""
        return self._next

    def go_on_from(self, last_id: int) -> None:
        """Number the next reservations after ``last_id``: the parent's ledger keys them by
        (holder, number), and the holder stays the same across continue-as-new."""
        self._next = last_id

    async def _request(self, r: Reservation) -> None:
        assert self.parent_id is not None
        await workflow.get_external_workflow_handle(self.parent_id).signal(RESERVE_SIGNAL, r)

    async def _settled(self, s: Settlement) -> None:
        assert self.parent_id is not None
        await workflow.get_external_workflow_handle(self.parent_id).signal(SETTLE_SIGNAL, s)


Answer = Callable[[list[tuple[str, Grant]]], Awaitable[None]]
"""Delivers a ledger's decisions (to this workflow's own client or by signal to others)."""


class LocalLedger(LedgerClient):
    """The parent's own model calls (the planner's) reserve from its ledger directly: the
    same rules, breaker and pause as its children's, without a signal."""

    def __init__(self, ledger: Ledger, answer: Answer) -> None:
        super().__init__()
        self.ledger = ledger
        self._answer = answer
        self.parent_id = workflow.info().workflow_id

    async def _request(self, r: Reservation) -> None:
        await self._answer(self.ledger.reserve(r))

    async def _settled(self, s: Settlement) -> None:
        await self._answer(self.ledger.settle(s))


__all__ = [
    "Answer",
    "GRANT_SIGNAL",
    "JOB_LEDGER",
    "Ledger",
    "LedgerClient",
    "LocalLedger",
    "Outcome",
    "deliver",
    "plus_cost",
    "CREDIT_CALLS",
    "LEDGER_CREDIT",
    "RECALL_SIGNAL",
    "RESERVE_SIGNAL",
    "SETTLE_SIGNAL",
]
