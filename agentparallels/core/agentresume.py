"""Resuming an agent job: which of an earlier run's units a new run can take over.

A failed or cancelled agent job is rolled back: its refs are deleted and the user's repository
is as it was. Its commits are not erased, though: they stay, unreferenced, in the object store
of the worker's clone cache that made them and of the job's repository, until git's garbage
collection prunes them. ``agentparallels resume`` reads from the run's history which units
finished (their heads and summaries) and how far the others got (their last checkpoint
commits); the resumed run's ``agent.recover_units`` step finds which of those commits are still
there and pins them under the new job's own scratch refs, which its cleanup removes.
"""

from __future__ import annotations

from collections.abc import Collection

from agentparallels.core._value import Value
from agentparallels.core.agentjob import AgentPlan, Resumed, dependants
from agentparallels.core.models import JobRef

__all__ = ["Pin", "RecoverInput", "Recovered", "recoverable", "unit_branch"]


class Pin(Value):
    name: str
    """The unit."""
    commit: str
    ref: str
    """Where the new job keeps it: the unit's first branch (``unit_branch``)."""


class RecoverInput(Value):
    job: JobRef
    resumed: Resumed


class Recovered(Value):
    kept: tuple[str, ...] = ()
    """Finished units taken over: no model call; their heads pinned as their branches."""
    checkpoints: tuple[str, ...] = ()
    """Unfinished units that go on from their last checkpoint, pinned as their branches."""
    lost: tuple[str, ...] = ()
    """Units whose commits are gone (or that build on one that is): they run again."""


def unit_branch(job: JobRef, name: str) -> str:
    """The branch of a unit's first attempt in ``job`` (``UnitInput.ref``)."""
    return f"{job.scratch}/shards/unit-{name}-1"


def recoverable(resumed: Resumed, found: Collection[str]) -> Recovered:
    """Which units a run can take over, given the units whose commits were ``found``: a
    finished unit whose head is there; an unfinished one whose checkpoint is there and whose
    dependencies are all taken over (else it would start from other commits than its
    checkpoint built on). A unit that cannot be taken over runs again, and so does every unit
    that depends on it."""
    plan = resumed.plan
    if plan is None:
        return Recovered()
    kept = {u.name for u in resumed.kept}
    redo = dependants({u.name for u in plan.units if u.name in kept and u.name not in found}, plan)
    kept -= redo
    deps = {u.name: set(u.depends_on) for u in plan.units}
    checkpoints = {
        c.name
        for c in resumed.checkpoints
        if c.name in found and c.name not in redo and deps.get(c.name, {""}) <= kept
    }
    lost = {u.name for u in resumed.kept} | {c.name for c in resumed.checkpoints}
    return Recovered(
        kept=_ordered(plan, kept),
        checkpoints=_ordered(plan, checkpoints),
        lost=_ordered(plan, lost - kept - checkpoints),
    )


def _ordered(plan: AgentPlan, names: Collection[str]) -> tuple[str, ...]:
    return tuple(u.name for u in plan.units if u.name in names)
