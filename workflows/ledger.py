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
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from agentparallels.core import names

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.errors import BUDGET_EXCEEDED
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
JOB_LEDGER = "job-token-ledger"
"""Patch id: jobs started before the ledger replay with fixed per-shard shares."""


class Ledger:
    """The parent's side: what is spent and held per phase, and who waits for tokens."""

    def __init__(self, budget: BudgetLimits) -> None:
        self.budget = budget
        self.spent: dict[str, int] = {}
        self.held: dict[tuple[str, int], Reservation] = {}
        self.waiting: list[Reservation] = []

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
        self.spent[s.phase] = self.spent.get(s.phase, 0) + s.tokens
        return self._decide()

    def release(self, holder: str) -> list[tuple[str, Grant]]:
        """A shard has ended: whatever it holds or waits for goes back to the pool."""
        for key in [k for k in self.held if k[0] == holder]:
            del self.held[key]
        self.waiting = [r for r in self.waiting if r.holder != holder]
        return self._decide()

    def _decide(self) -> list[tuple[str, Grant]]:
        decided: list[tuple[str, Grant]] = []
        for r in list(self.waiting):
            if self.budget.refusal(r.phase, self.used(), r.tokens) is None:
                self.held[(r.holder, r.id)] = r
                decided.append((r.holder, Grant(id=r.id, granted=True)))
            elif why := self.budget.refusal(r.phase, self.used(held=False), r.tokens):
                # It would not fit even if every other reservation came back unused.
                reason = budget_message(*why, r.tokens, self.used(held=False))
                decided.append((r.holder, Grant(id=r.id, granted=False, reason=reason)))
            else:
                continue  # fits once others settle: it waits
            self.waiting.remove(r)
        return decided

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


async def deliver(grants: list[tuple[str, Grant]]) -> None:
    """The parent's side: signal each decision to the child that asked (a child that has
    ended meanwhile waits for nothing)."""
    for holder, grant in grants:
        try:
            await workflow.get_external_workflow_handle(holder).signal(GRANT_SIGNAL, grant)
        except FailureError:
            pass


class LedgerClient:
    """The shard's side: reserve before a call, settle after."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        """Set when the job keeps a ledger; None: the shard checks its own budget."""
        self._next = 0
        self._grants: dict[int, Grant] = {}
        self._sent: list[asyncio.Future[None]] = []

    def granted(self, grant: Grant) -> None:
        """The shard's signal handler for :data:`GRANT_SIGNAL`."""
        self._grants[grant.id] = grant

    async def reserve(self, phase: str, tokens: int) -> int:
        """Wait until the parent grants ``tokens`` for a call in ``phase``; its reservation id.
        A refusal fails the shard with the budget reason (non-retryable)."""
        assert self.parent_id is not None
        self._next += 1
        rid = self._next
        holder = workflow.info().workflow_id
        parent = workflow.get_external_workflow_handle(self.parent_id)
        request = Reservation(holder=holder, id=rid, phase=phase, tokens=tokens)
        await parent.signal(RESERVE_SIGNAL, request)
        await workflow.wait_condition(lambda: rid in self._grants)
        grant = self._grants.pop(rid)
        if not grant.granted:
            raise ApplicationError(grant.reason, type=BUDGET_EXCEEDED, non_retryable=True)
        return rid

    def settle(self, rid: int, phase: str, tokens: int) -> None:
        """Tell the parent what the call used; sent without waiting (see :meth:`flush`)."""
        assert self.parent_id is not None
        parent = workflow.get_external_workflow_handle(self.parent_id)
        s = Settlement(holder=workflow.info().workflow_id, id=rid, phase=phase, tokens=tokens)
        self._sent.append(asyncio.ensure_future(parent.signal(SETTLE_SIGNAL, s)))

    async def flush(self) -> None:
        """Wait until the parent has received every settlement."""
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


__all__ = [
    "GRANT_SIGNAL",
    "JOB_LEDGER",
    "Ledger",
    "LedgerClient",
    "deliver",
    "RESERVE_SIGNAL",
    "SETTLE_SIGNAL",
]
