"""Consensus: several model calls decide together what one call would decide alone.

Three building blocks, each a function of workflow code over :class:`ModelSteps` (so every call
is a recorded ``llm.call`` activity, counted against the workflow's budget), and one shipped job:

- :func:`evaluator_optimizer`: a generator drafts, a critic judges (a :class:`Critique`); a
  draft that is not accepted goes back to the generator with the critique, for at most
  ``max_rounds`` rounds. The result says whether it was accepted, after how many rounds, and
  the final critique.
- :func:`committee`: N reviewers (their requests may name different models and temperatures)
  vote in parallel (a :class:`ReviewVote` each); the change is approved when at least
  ``quorum`` approve. The votes against the verdict are kept as the dissent.
- :func:`majority_vote`: N samples of one question, each a :class:`Ballot`; the option with
  the most votes wins. **Tie rule:** a tie goes to the tied option listed first in
  ``VotingOptions.choices``, so list the safest option first.
- :class:`ReviewWorkflow` (``agentparallels review``): a committee reviews a branch's diff.
  The workflow carries refs; the diff is read from git by an activity when the review needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.core import names
from agentparallels.workflows._call import call
from agentparallels.workflows.model_step import ModelSteps
from agentparallels.workflows.shard import BUG_TYPES

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.consensus import (
        Ballot,
        CommitteeVerdict,
        Critique,
        DiffRequest,
        EvaluatorOptions,
        EvaluatorResult,
        MajorityResult,
        ReviewInput,
        ReviewResult,
        ReviewVote,
        Vote,
        VotingOptions,
    )
    from agentparallels.core.errors import BAD_INPUT, OUTPUT_INVALID
    from agentparallels.core.llm import Message, ModelRequest


def _with_turns(req: ModelRequest, *turns: Message, **update: object) -> ModelRequest:
    return req.model_copy(update={"messages": (*req.messages, *turns), **update})


async def evaluator_optimizer(
    model_steps: ModelSteps,
    generator: ModelRequest,
    critic: ModelRequest,
    options: EvaluatorOptions = EvaluatorOptions(),
) -> EvaluatorResult:
    """Draft with ``generator``, judge with ``critic`` (the draft is appended to its messages as
    a user turn), revise with the critique, until the critic accepts or the rounds run out."""
    request = generator
    draft, critique = "", Critique(accept=False)
    for round_ in range(1, options.max_rounds + 1):
        draft = (await model_steps.ask(_with_turns(request, step=f"draft {round_}"))).text
        judged = await model_steps.ask(
            _with_turns(
                critic,
                Message(role="user", content=f"The draft to judge:\n\n{draft}"),
                output=Critique.__name__,
                step=f"critique {round_}",
            ),
            phase="verify",
        )
        critique = Critique.model_validate(judged.parsed)
        if critique.accept:
            return EvaluatorResult(
                accepted=True, rounds=round_, draft=draft, critique=critique.feedback
            )
        request = _with_turns(
            request,
            Message(role="assistant", content=draft),
            Message(
                role="user",
                content=f"A reviewer did not accept this draft:\n{critique.feedback}\n"
                "Write it again, addressing every point.",
            ),
        )
    return EvaluatorResult(
        accepted=False, rounds=options.max_rounds, draft=draft, critique=critique.feedback
    )


async def committee(
    model_steps: ModelSteps, reviewers: Sequence[ModelRequest], quorum: int
) -> CommitteeVerdict:
    """Ask every reviewer at once; approved when at least ``quorum`` approve."""
    if not 1 <= quorum <= len(reviewers):
        raise ApplicationError(
            f"quorum {quorum} cannot be met by a committee of {len(reviewers)}: "
            "choose a quorum from 1 to the number of reviewers",
            type=BAD_INPUT,
            non_retryable=True,
        )
    answers = await asyncio.gather(
        *(
            model_steps.ask(r.model_copy(update={"output": ReviewVote.__name__}), phase="verify")
            for r in reviewers
        )
    )
    votes = []
    for i, (req, answer) in enumerate(zip(reviewers, answers, strict=True), start=1):
        said = ReviewVote.model_validate(answer.parsed)
        votes.append(
            Vote(
                reviewer=f"{i}:{req.model}@{req.temperature:g}",
                approve=said.approve,
                reasons=said.reasons,
            )
        )
    approvals = sum(v.approve for v in votes)
    approved = approvals >= quorum
    return CommitteeVerdict(
        approved=approved,
        quorum=quorum,
        approvals=approvals,
        rejections=len(votes) - approvals,
        votes=tuple(votes),
        dissent=tuple(v for v in votes if v.approve != approved),
    )


async def majority_vote(
    model_steps: ModelSteps, question: ModelRequest, options: VotingOptions
) -> MajorityResult:
    """Draw ``options.samples`` answers to ``question`` and count them (see the tie rule)."""
    offer = Message(
        role="user", content="Choose exactly one of: " + ", ".join(options.choices) + "."
    )
    samples = [
        _with_turns(
            question,
            offer,
            output=Ballot.__name__,
            temperature=options.temperature,
            seed=i,
            step=f"{question.step} · sample {i + 1}/{options.samples}",
        )
        for i in range(options.samples)
    ]
    answers = await asyncio.gather(*(model_steps.ask(s) for s in samples))
    counts = dict.fromkeys(options.choices, 0)
    spoiled = 0
    for answer in answers:
        choice = Ballot.model_validate(answer.parsed).choice.strip()
        if choice in counts:
            counts[choice] += 1
        else:
            spoiled += 1
    top = max(counts.values())
    if top == 0:
        raise ApplicationError(
            f"none of the {options.samples} samples chose one of {list(options.choices)}",
            type=OUTPUT_INVALID,
            non_retryable=True,
        )
    leaders = [c for c in options.choices if counts[c] == top]  # in the stated order
    return MajorityResult(choice=leaders[0], counts=counts, tie=len(leaders) > 1, spoiled=spoiled)


REVIEW_SYSTEM = (
    "You review a change to a code base, as one member of a review committee. Judge whether "
    "it is correct, safe and complete; approve only a change you would merge as it is."
)


@workflow.defn(name=names.REVIEW, failure_exception_types=BUG_TYPES)
class ReviewWorkflow:
    """A committee of models reviews the diff of a branch against its base."""

    @workflow.run
    async def run(self, inp: ReviewInput) -> ReviewResult:
        diff = await call(
            steps.READ_DIFF,
            DiffRequest(
                repository=inp.repository, ref=inp.ref, base=inp.base, max_chars=inp.max_diff_chars
            ),
            summary=f"read the diff of {inp.ref} against {inp.base}",
        )
        cut = "\n\n(The diff was cut here: it is longer.)" if diff.truncated else ""
        prompt = (
            f"The change `{inp.ref}` touches {len(diff.files)} files: {', '.join(diff.files)}."
            f"\n\n```diff\n{diff.text}\n```{cut}"
        )
        reviewers = [
            ModelRequest(
                model=inp.models[i % len(inp.models)],
                base_url=inp.base_url,
                messages=(
                    Message(role="system", content=REVIEW_SYSTEM),
                    Message(role="user", content=prompt),
                ),
                temperature=inp.temperatures[i % len(inp.temperatures)],
                seed=i,
                max_tokens=1024,
                step=f"review {i + 1}/{inp.reviewers}",
            )
            for i in range(inp.reviewers)
        ]
        verdict = await committee(ModelSteps(), reviewers, inp.quorum)
        return ReviewResult(
            verdict="approve" if verdict.approved else "reject",
            ref=inp.ref,
            base_commit=diff.base_commit,
            head_commit=diff.head_commit,
            files=diff.files,
            committee=verdict,
        )


__all__ = ["REVIEW_SYSTEM", "ReviewWorkflow", "committee", "evaluator_optimizer", "majority_vote"]
