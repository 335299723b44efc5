"""The coding agent's review: a committee of models reads the verified change and votes.

The catalogue's evaluator-optimizer and committee (``workflows/consensus.py``), shipped on
``agentparallels agent --reviewers N``. Each reviewer is a tool-using loop in the job's own
workflow, built like a unit's (``workflows/agent_unit.py``): one recorded model call per turn,
offered ``agentreview.REVIEW_TOOLS``, and one read-only ``agent.tool`` step per call
(``changed_files``, ``file_diff``, ``read_file``, ``search``) against the merged commit, so a
reviewer reads the change file by file and never gets the whole diff in a prompt. It ends with
one ``vote`` call, alone and last (as a unit's ``finish``): approve or not, its reasons, and
comments on files. The reviewers of a round run at once; the change passes with ``quorum``
approvals. A reviewer that has not voted within its turns counts as a rejection.

A rejected round's comments go to the units that own the commented files (a rejection with
no comment on a file goes to every unit that changed one) as the note of a new run of that
unit on top of the merged work; the parent merges, verifies and asks the committee again, at
most ``rework_rounds`` times, then refuses with the dissent.

Budget: every reviewer call is phase ``review`` and counts against the job's tokens: a round's
calls may spend what the job's budget has left when the round starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows._call import call
from agentparallels.workflows.agent_unit import tool_summary
from agentparallels.workflows.events import JobEvents
from agentparallels.workflows.ledger import LedgerClient
from agentparallels.workflows.model_step import ModelSteps
from agentparallels.workflows.routing import MODEL_CAPABILITY, capability_queue

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.agentjob import (
        AgentInput,
        AgentPlan,
        ToolOutcome,
        ToolRequest,
        UnitResult,
        topological,
    )
    from agentparallels.core.agentreview import (
        REVIEW_TOOLS,
        VOTE_TOOL,
        ReviewComment,
        ReviewerVote,
        ReviewRound,
        dissent_text,
        reviewer_marker,
    )
    from agentparallels.core.errors import REVIEW_REJECTED
    from agentparallels.core.llm import BudgetLimits, Message, ModelRequest, Usage
    from agentparallels.core.models import JobRef, ShardRef
    from agentparallels.core.tools import ToolCall

NO_VOTE = "Call a tool. When you have read enough to judge, call vote (alone, last)."


def reviewer_system(inp: AgentInput, n: int, reviewers: int) -> str:
    tests = f" Its tests (`{inp.test_cmd}`) pass on it." if inp.test_cmd else ""
    return (
        f"{reviewer_marker(n)}, one of {reviewers} reviewers deciding together whether a "
        f"change made by other models is merged.{tests}\nThe task the change was made for: "
        f"{inp.task}\nRead the change with the tools: changed_files first, then file_diff for "
        "each file, read_file or search where you need context. Judge whether it does the "
        "task, correctly and completely, and nothing else. Then call vote once, alone: "
        "approve true or false, your reasons, and for a rejection a comment on each file "
        "that must change (path and what to change)."
    )


def reviewer_messages(
    inp: AgentInput, n: int, changed: Sequence[str], before: ReviewerVote | None = None
) -> tuple[Message, ...]:
    """The reviewer's first messages: the files the change touches (never their diff) and,
    after a rework, what this reviewer said of the change before (evaluator-optimizer)."""
    assert inp.review is not None
    more = f" and {len(changed) - 50} more" if len(changed) > 50 else ""
    text = f"The change touches {len(changed)} files: {', '.join(changed[:50])}{more}."
    if before is not None:
        said = "approved" if before.approve else "rejected"
        notes = "".join(f"\n- {c.path}: {c.comment}" for c in before.comments)
        text += (
            f"\nYou {said} an earlier version of it: {before.reasons}{notes}\nIt has been "
            "reworked since: read it again and judge it as it is now."
        )
    return (
        Message(role="system", content=reviewer_system(inp, n, inp.review.reviewers)),
        Message(role="user", content=text),
    )


def vote_of(reviewer: str, tc: ToolCall) -> ReviewerVote:
    """The vote a ``vote`` call casts (its arguments were checked against the tool's schema)."""
    comments = tuple(
        ReviewComment(path=str(c.get("path", "")), comment=str(c.get("comment", "")))
        for c in tc.arguments.get("comments") or ()
        if isinstance(c, dict)
    )
    return ReviewerVote(
        reviewer=reviewer,
        approve=tc.arguments.get("approve") is True,
        reasons=str(tc.arguments.get("reasons", "")),
        comments=comments,
    )


class _Reviewer:
    """One reviewer's conversation in one round."""

    def __init__(self, inp: AgentInput, job: JobRef, commit: str, n: int, round_: int) -> None:
        assert inp.review is not None
        self.inp, self.job, self.commit, self.n, self.round = inp, job, commit, n, round_
        self.model = inp.review.model or inp.model
        self.name = f"reviewer-{n}"
        self.ref = ShardRef(job=job, name=f"review-{round_}-{n}")
        self.calls = 0
        self.conversation: tuple[Message, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.model})"

    async def run(
        self, model_steps: ModelSteps, changed: Sequence[str], before: ReviewerVote | None
    ) -> ReviewerVote:
        """Turns until the reviewer votes, or its turns run out (a rejection)."""
        assert self.inp.review is not None
        self.conversation = reviewer_messages(self.inp, self.n, changed, before)
        turns = self.inp.review.turns
        for turn in range(1, turns + 1):
            vote = await self._turn(model_steps, turn)
            if vote is not None:
                return vote.model_copy(update={"turns": turn, "tool_calls": self.calls})
        return ReviewerVote(
            reviewer=self.label,
            approve=False,
            voted=False,
            reasons=f"gave no vote within its {turns} turns",
            turns=turns,
            tool_calls=self.calls,
        )

    async def _turn(self, model_steps: ModelSteps, turn: int) -> ReviewerVote | None:
        """One model call and the tool calls it made; the vote when it voted."""
        inp = self.inp
        answer = await model_steps.ask(
            ModelRequest(
                model=self.model,
                base_url=inp.base_url,
                messages=self.conversation,
                max_tokens=inp.limits.max_tokens,
                tools=REVIEW_TOOLS,
                tool_format="native" if inp.tool_format == "auto" else inp.tool_format,
                step=f"{self.name}: round {self.round}, turn {turn}",
            ),
            phase="review",
        )
        said = Message(role="assistant", content=answer.text, tool_calls=answer.tool_calls)
        self.conversation = (*self.conversation, said)
        if not answer.tool_calls:
            self.conversation = (*self.conversation, Message(role="user", content=NO_VOTE))
            return None
        vote, last = None, len(answer.tool_calls) - 1
        for i, tc in enumerate(answer.tool_calls):
            if vote is not None:
                reply = "Not run: it came after vote."
            elif tc.error is not None:
                reply = f"Error: {tc.error}"
            elif tc.name != VOTE_TOOL:
                reply = await self._read(tc)
            elif i < last:
                reply = "Not counted: call vote alone, after your other calls."
            else:
                vote, reply = vote_of(self.label, tc), "Your vote is recorded."
            reply_msg = Message(role="tool", content=reply, tool_call_id=tc.id)
            self.conversation = (*self.conversation, reply_msg)
        return vote

    async def _read(self, tc: ToolCall) -> str:
        """One read-only tool call on the merged commit, as an ``agent.tool`` step."""
        inp = self.inp
        self.calls += 1
        path = tc.arguments.get("path")
        shown = f"diff {path}" if tc.name == "file_diff" else tool_summary(tc)
        outcome: ToolOutcome = await call(
            steps.AGENT_TOOL,
            ToolRequest(
                unit=self.ref,
                checkpoint=self.commit,
                start=self.job.base_commit,
                call=tc,
                key=f"{self.job.job_id}/{self.ref.name}/{self.calls}",
                scope=(),
                files=inp.files,
                timeout_s=inp.limits.command_timeout_s,
                sandbox=inp.limits.sandbox,
                output_chars=inp.limits.output_chars,
                read_lines=inp.limits.read_lines,
            ),
            summary=f"{self.name}: {shown}",
        )
        return outcome.output


class Committee:
    """The job's reviews: every round's votes, and what the reviewers spent."""

    def __init__(self) -> None:
        self.rounds: list[ReviewRound] = []
        self.usage = Usage()
        self.cost_usd: float | None = 0.0

    async def vote(
        self,
        inp: AgentInput,
        job: JobRef,
        commit: str,
        changed: Sequence[str],
        remaining: int | None,
        events: JobEvents,
        ledger: LedgerClient | None = None,
        attempts: int = 0,
    ) -> ReviewRound:
        """One round: every reviewer reads ``commit`` and votes; the quorum decides. With the
        job's ``ledger`` every call reserves from it (the budget's pause, the provider
        breaker, ``attempts`` per call); without (jobs from before it), ``remaining`` tokens
        of the job's budget cap the round (None: no budget)."""
        opts = inp.review
        assert opts is not None
        number = len(self.rounds) + 1
        queue = capability_queue(workflow.info().task_queue, MODEL_CAPABILITY)
        if ledger is not None:
            model_steps = ModelSteps(
                inp.budget, inp.prices, task_queue=queue, ledger=ledger, attempts=attempts
            )
        else:
            budget = BudgetLimits() if remaining is None else BudgetLimits(total=max(1, remaining))
            model_steps = ModelSteps(
                budget.model_copy(update={"shares": {}}), inp.prices, task_queue=queue
            )
        reviewers = [_Reviewer(inp, job, commit, n, number) for n in range(1, opts.reviewers + 1)]
        before = self.rounds[-1].votes if self.rounds else [None] * len(reviewers)
        try:
            votes = await asyncio.gather(
                *(r.run(model_steps, changed, b) for r, b in zip(reviewers, before, strict=True))
            )
        finally:
            self._spent(model_steps)
        approvals = sum(v.approve for v in votes)
        verdict = ReviewRound(
            round=number,
            commit=commit,
            approved=approvals >= opts.quorum,
            quorum=opts.quorum,
            votes=tuple(votes),
        )
        self.rounds.append(verdict)
        for v in votes:
            said = "approves" if v.approve else "rejects"
            events.record("reviewed", shard=v.reviewer.split(" ")[0],
                          detail=f"round {number}: {said}: {v.reasons}"[:1000])  # fmt: skip
        events.record("reviewed", detail=f"round {number}: {self.verdict_line()}")
        return verdict

    def _spent(self, model_steps: ModelSteps) -> None:
        self.usage = self.usage + model_steps.total
        cost = model_steps.cost_usd
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost

    def verdict_line(self) -> str:
        """The last round in a line: approved or rejected, by how many votes."""
        if not self.rounds:
            return "no review yet"
        r = self.rounds[-1]
        approvals = sum(v.approve for v in r.votes)
        return (
            f"{'approved' if r.approved else 'rejected'} ({approvals} of {len(r.votes)} "
            f"approve, quorum {r.quorum})"
        )

    def refusal(self, reworked: int) -> ApplicationError:
        """The job's error when the committee still rejects: the dissent, reviewer by
        reviewer."""
        after = f" after {reworked} rework round{'s' if reworked != 1 else ''}" if reworked else ""
        return ApplicationError(
            f"the reviewers rejected the change{after}: {self.verdict_line()}; the dissent:\n"
            + dissent_text(self.rounds),
            type=REVIEW_REJECTED,
            non_retryable=True,
        )


def owners(
    results: Sequence[UnitResult], plan: AgentPlan, changed: Sequence[str]
) -> dict[str, str]:
    """Each changed file's owner among the plan's units: the last (in merge order) that
    changed it; for a file only the repair unit changed, the last unit whose scope has it."""
    units = {u.name for u in plan.units}
    owner: dict[str, str] = {}
    for path in changed:
        for r in results:
            if r.name in units and path in r.files_changed:
                owner[path] = r.name
        if path not in owner:
            for u in topological(plan):
                if path in u.scope:
                    owner[path] = u.name
    return owner


def rework_notes(verdict: ReviewRound, owner: dict[str, str], plan: AgentPlan) -> dict[str, str]:
    """Unit -> the note of its rework run: the rejecting reviewers' comments on its files (a
    rejection without a comment on a changed file: its reasons, to every owner). In plan
    order; empty when no comment reaches a unit."""
    said: dict[str, list[str]] = {}
    for v in verdict.dissent:
        if not v.voted:
            continue
        routed = [c for c in v.comments if c.path in owner]
        for c in routed:
            said.setdefault(owner[c.path], []).append(f"- {v.reviewer} on {c.path}: {c.comment}")
        if not routed:
            for unit in dict.fromkeys(owner.values()):
                said.setdefault(unit, []).append(f"- {v.reviewer}: {v.reasons}")
    return {
        u.name: "Reviewers rejected the merged change; your copy holds all of it. Their "
        "comments for you:\n" + "\n".join(said[u.name]) + "\nAddress each comment in your "
        "files, run the checks, then finish."
        for u in plan.units
        if u.name in said
    }


__all__ = [
    "Committee",
    "owners",
    "reviewer_messages",
    "reviewer_system",
    "rework_notes",
    "vote_of",
]
