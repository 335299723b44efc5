"""A resumed agent job's side in the workflow: take over the plan and the units of the run it
resumes (``agentparallels resume``; see ``core/agentresume.py``).

The new run plans nothing: it has the earlier run's plan and base commit. Its first step,
``agent.recover_units``, finds which of that run's unit commits are still in reach and pins
them as the units' branches. A finished unit found there is not run again (its head and
summary are reused, with no model call); an unfinished one goes on from its last checkpoint
commit, told what it did and why it stopped; every other unit runs from its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

from agentparallels.workflows._call import call
from agentparallels.workflows.events import JobEvents

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.agentjob import Resumed, UnitCheckpoint, UnitResult
    from agentparallels.core.agentresume import RecoverInput
    from agentparallels.core.models import JobRef

__all__ = ["RESUMED_PLAN_GATE", "STOPPED_CHARS", "Takeover", "checkpoint_note", "take_over"]

RESUMED_PLAN_GATE = "agent-resumed-plan-gate"
"""Resumed jobs with ``--approve-plan`` since this patch show their kept plan at the gate
before taking anything over (earlier ones took the plan over unasked)."""

STOPPED_CHARS = 1500
"""Most of an earlier run's failure a unit going on from its checkpoint is told."""


@dataclass
class Takeover:
    """What a resumed run takes over, by unit name (empty for a job that is no resumption)."""

    previous: str = ""
    kept: dict[str, UnitResult] = field(default_factory=dict)
    checkpoints: dict[str, UnitCheckpoint] = field(default_factory=dict)


async def take_over(job: JobRef, resumed: Resumed, events: JobEvents) -> Takeover:
    """Recover the earlier run's units that are still in reach; say which in an event."""
    found = await call(
        steps.RECOVER_UNITS,
        RecoverInput(job=job, resumed=resumed),
        summary=f"take over the units of {resumed.previous}",
    )
    previous = resumed.previous
    taken = Takeover(
        previous=previous,
        kept={
            u.name: u.model_copy(update={"kept_from": u.kept_from or previous})
            for u in resumed.kept
            if u.name in found.kept
        },
        checkpoints={c.name: c for c in resumed.checkpoints if c.name in found.checkpoints},
    )
    parts = [
        f"kept (no model call): {', '.join(found.kept) or 'none'}",
        f"from their last checkpoint: {', '.join(found.checkpoints) or 'none'}",
    ]
    if found.lost:
        parts.append(f"run again, their commits gone: {', '.join(found.lost)}")
    if resumed.redo:
        parts.append(f"redone as asked: {', '.join(resumed.redo)}")
    events.record("resumed", detail=f"resumes job {previous}; " + "; ".join(parts))
    return taken


def checkpoint_note(cp: UnitCheckpoint, previous: str) -> str:
    """The first message's note for a unit that goes on from its checkpoint."""
    stopped = cp.stopped.strip()[-STOPPED_CHARS:]
    why = f" It stopped: {stopped}" if stopped else ""
    return (
        f"This unit ran before, in job {previous}, and did not finish.{why}\n"
        f"Its edits so far are in your copy (checkpoint {cp.head[:12]}), in "
        f"{', '.join(cp.changed)}. Read them, check them, and go on with your goal from there."
    )
