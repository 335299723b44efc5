"""The coding agent's approval gates: a person approves the plan, or the result, or both.

Two-phase commit's second phase (``workflows/two_phase.py``'s :class:`ApprovalGate`, the
``approve`` and ``reject`` updates with their validators) at two points of the agent's job:

- ``plan`` (``--approve-plan``): after the planner, before any edit. The plan is shown in
  the UI's current details, in ``status`` and as an event; a rejection's comment goes back to
  the planner, which plans again (at most ``PlanApproval.replans`` times); a timeout denies.
- ``publish`` (``--require-approval``): after every check, the publish invariant and the
  reviewers have voted, before the point of no return; a rejection or a timeout denies, and
  the job rolls back.

Every decision becomes an :class:`ApprovalRecord` (gate, outcome, who, why, when), in the
job's events and result; a denial's error says which happened and who decided.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows.events import JobEvents
from agentparallels.workflows.two_phase import ApprovalGate

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.agentjob import AgentPlan
    from agentparallels.core.agentreview import ApprovalRecord, Gate
    from agentparallels.core.checklist import AWAITING_APPROVAL, Decision
    from agentparallels.core.errors import APPROVAL_DENIED
    from agentparallels.core.llm import Message


class Approvals:
    """The job's gate and every decision taken at it."""

    def __init__(self) -> None:
        self.gate = ApprovalGate()
        self.at: Gate = "plan"
        self.final = True
        """A rejection now ends the job (else, at the plan gate, it re-plans)."""
        self.records: list[ApprovalRecord] = []

    def validate(self, approve: bool, decision: Decision, phase: str) -> None:
        """The updates' validator: refuse a decision the job cannot take now."""
        self.gate.validate(approve, decision, phase)

    def decide(self, approve: bool, decision: Decision) -> str:
        """The updates' handler: ``plan approved``, ``plan rejected`` (it re-plans),
        ``approved`` or ``rejected`` (the job ends: the caller may wait for it)."""
        state = self.gate.decide(approve, decision)
        goes_on = approve or not self.final
        return f"{self.at} {state}" if self.at == "plan" and goes_on else state

    async def ask(
        self, gate: Gate, limit: timedelta, details: str, events: JobEvents, *, final: bool = True
    ) -> ApprovalRecord:
        """Show ``details``, wait for a decision at ``gate`` for at most ``limit``; the
        decision's record (approved, rejected or timed out), also recorded as an event."""
        self.at, self.final = gate, final
        self.gate.decision = None
        since = workflow.now().strftime("%Y-%m-%d %H:%M:%S UTC")
        workflow.set_current_details(
            f"**{AWAITING_APPROVAL}** ({gate}) since {since}, denied after "
            f"{limit.total_seconds():g}s\n\n{details}"
        )
        events.record("waiting_for_approval", detail=f"{gate}: {details}"[:2000])
        try:
            decision = await self.gate.wait(limit)
            outcome = "approved"
        except ApplicationError as e:
            if e.type != APPROVAL_DENIED:
                raise
            decision = self.gate.decision or Decision()
            outcome = "timed out" if self.gate.state == "timed out" else "rejected"
        record = ApprovalRecord(
            gate=gate,
            outcome=outcome,  # type: ignore[arg-type]
            by=decision.by,
            reason=decision.reason,
            time=workflow.now(),
        )
        self.records.append(record)
        events.record(
            "approved" if outcome == "approved" else "rejected", detail=said(record, limit)
        )
        return record


def said(record: ApprovalRecord, limit: timedelta | None = None) -> str:
    """A decision in words: ``the plan was rejected by ann: too broad``."""
    what = "the plan" if record.gate == "plan" else "the result"
    if record.outcome == "timed out":
        within = f" within {limit.total_seconds():g}s" if limit else ""
        return f"{what} got no decision{within}: denied"
    by = f" by {record.by}" if record.by else ""
    why = f": {record.reason}" if record.reason else ""
    return f"{what} was {record.outcome}{by}{why}"


def denied(record: ApprovalRecord, limit: timedelta) -> ApplicationError:
    """The job's error when a gate denies it."""
    return ApplicationError(said(record, limit), type=APPROVAL_DENIED, non_retryable=True)


def plan_text(plan: AgentPlan) -> str:
    """The plan as a person reads it before approving it."""
    lines = [f"The plan: {plan.summary}".rstrip(": ")]
    for u in plan.units:
        after = f" (after {', '.join(u.depends_on)})" if u.depends_on else ""
        lines.append(f"- {u.name} [{u.capability}]{after}: {u.goal}")
        lines.append(f"  writes: {', '.join(u.scope)}")
    return "\n".join(lines)


def decide_hint(job_id: str) -> str:
    return (
        f"Decide with `agentparallels approve {job_id}` or "
        f"`agentparallels reject {job_id} --comment '...'`."
    )


def replan_messages(plan: AgentPlan, record: ApprovalRecord) -> tuple[Message, ...]:
    """What the planner is told after a person rejected its plan: the plan, and why not."""
    by = f" ({record.by})" if record.by else ""
    return (
        Message(role="assistant", content=plan.model_dump_json()),
        Message(
            role="user",
            content=f"A person{by} rejected this plan: {record.reason}\nPlan again, "
            "addressing the comment; answer with JSON only.",
        ),
    )


__all__ = ["Approvals", "decide_hint", "denied", "plan_text", "replan_messages", "said"]
