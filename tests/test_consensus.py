"""Consensus building blocks on the real dev server, the models played by the loopback fake
server: evaluator-optimizer, committee review with a quorum, majority vote and its tie rule."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import ApplicationError
    from temporalio.worker import Worker

    from agentparallels.activities.llm import call_model
    from agentparallels.core.consensus import (
        CommitteeVerdict,
        EvaluatorOptions,
        EvaluatorResult,
        MajorityResult,
        VotingOptions,
    )
    from agentparallels.core.errors import BAD_INPUT
    from agentparallels.core.llm import Message, ModelRequest
    from agentparallels.testing.fake_llm import FakeLLM
    from agentparallels.workflows.consensus import committee, evaluator_optimizer, majority_vote
    from agentparallels.workflows.model_step import ModelSteps


class Probe(BaseModel):
    kind: str
    requests: list[ModelRequest]
    evaluator: EvaluatorOptions = EvaluatorOptions()
    quorum: int = 1
    voting: VotingOptions | None = None


class ProbeResult(BaseModel):
    evaluator: EvaluatorResult | None = None
    committee: CommitteeVerdict | None = None
    majority: MajorityResult | None = None


@workflow.defn(name="ConsensusProbe")
class ConsensusProbe:
    """Runs one building block on the requests it is given."""

    @workflow.run
    async def run(self, p: Probe) -> ProbeResult:
        steps = ModelSteps()
        if p.kind == "evaluator":
            return ProbeResult(evaluator=await evaluator_optimizer(steps, *p.requests, p.evaluator))
        if p.kind == "committee":
            return ProbeResult(committee=await committee(steps, p.requests, p.quorum))
        assert p.voting is not None
        return ProbeResult(majority=await majority_vote(steps, p.requests[0], p.voting))


def ask(fake: FakeLLM, text: str, model: str = "openai:fake") -> ModelRequest:
    return ModelRequest(
        model=model,
        base_url=fake.openai_base_url,
        messages=(Message(role="user", content=text),),
        max_tokens=64,
    )


def answer(**fields: object) -> dict:
    return {"content": json.dumps(fields)}


async def probe(client: Client, task_queue: str, p: Probe) -> ProbeResult:
    async with Worker(
        client, task_queue=task_queue, workflows=[ConsensusProbe], activities=[call_model]
    ):
        handle = await client.start_workflow(
            ConsensusProbe.run,
            p,
            id=f"probe-{task_queue}",
            task_queue=task_queue,
            result_type=ProbeResult,
        )
        return await asyncio.wait_for(handle.result(), 60)


async def test_evaluator_optimizer_stops_when_the_critic_accepts(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Round 1 is rejected and its critique goes back to the generator; round 2 is accepted,
    and no third round is asked for."""
    fake.push(
        {"content": "def f(): pass"},
        answer(accept=False, feedback="f needs a docstring"),
        {"content": 'def f():\n    """Do f."""'},
        answer(accept=True, feedback="good"),
    )
    p = Probe(kind="evaluator", requests=[ask(fake, "write f"), ask(fake, "judge this f")])
    result = (await probe(client, task_queue, p)).evaluator
    assert result == EvaluatorResult(
        accepted=True, rounds=2, draft='def f():\n    """Do f."""', critique="good"
    )
    bodies = [r.body for r in fake.requests]
    assert len(bodies) == 4
    assert bodies[1]["messages"][-1]["content"] == "The draft to judge:\n\ndef f(): pass"
    revise = bodies[2]["messages"]
    assert revise[-2] == {"role": "assistant", "content": "def f(): pass"}
    assert "f needs a docstring" in revise[-1]["content"]


async def test_evaluator_optimizer_stops_at_the_round_cap(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """A critic that never accepts: the loop ends after max_rounds, not accepted, with the last
    critique, after exactly two calls per round."""
    for n in (1, 2):
        fake.push({"content": f"draft {n}"}, answer(accept=False, feedback=f"still wrong {n}"))
    p = Probe(
        kind="evaluator",
        requests=[ask(fake, "write f"), ask(fake, "judge")],
        evaluator=EvaluatorOptions(max_rounds=2),
    )
    result = (await probe(client, task_queue, p)).evaluator
    assert result == EvaluatorResult(
        accepted=False, rounds=2, draft="draft 2", critique="still wrong 2"
    )
    assert len(fake.requests) == 4


async def test_committee_approves_by_quorum_and_records_the_dissent(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Two of three approve with quorum 2: approved; the one rejection is the dissent."""
    fake.push(
        answer(approve=True, reasons="fine"),
        answer(approve=False, reasons="breaks the API"),
        answer(approve=True, reasons="fine"),
    )
    p = Probe(kind="committee", requests=[ask(fake, "review")] * 3, quorum=2)
    verdict = (await probe(client, task_queue, p)).committee
    assert verdict is not None
    assert (verdict.approved, verdict.approvals, verdict.rejections) == (True, 2, 1)
    assert [(v.approve, v.reasons) for v in verdict.dissent] == [(False, "breaks the API")]
    assert {v.reviewer for v in verdict.votes} == {
        "1:openai:fake@0",
        "2:openai:fake@0",
        "3:openai:fake@0",
    }


async def test_committee_rejects_below_quorum(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Two of three approve but the quorum is 3: rejected, and both approvals are dissent."""
    fake.push(
        answer(approve=True, reasons="ok"),
        answer(approve=False, reasons="no tests"),
        answer(approve=True, reasons="ok"),
    )
    p = Probe(kind="committee", requests=[ask(fake, "review")] * 3, quorum=3)
    verdict = (await probe(client, task_queue, p)).committee
    assert verdict is not None and not verdict.approved
    assert [v.reasons for v in verdict.dissent] == ["ok", "ok"]


async def test_committee_refuses_a_quorum_it_cannot_reach(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Quorum 3 for two reviewers fails at once, before any model is called."""
    p = Probe(kind="committee", requests=[ask(fake, "review")] * 2, quorum=3)
    with pytest.raises(WorkflowFailureError) as failure:
        await probe(client, task_queue, p)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == BAD_INPUT
    assert "quorum 3 cannot be met by a committee of 2" in cause.message
    assert fake.requests == []


async def test_majority_vote_counts_and_ignores_spoiled_ballots(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Three of five samples say 'revert'; one names no option and counts for nothing. Each
    sample is its own call, with its own seed, told the options."""
    for choice in ("revert", "keep", "revert", "maybe", "revert"):
        fake.push(answer(choice=choice))
    options = VotingOptions(choices=("revert", "keep"), samples=5)
    p = Probe(kind="vote", requests=[ask(fake, "keep or revert?")], voting=options)
    result = (await probe(client, task_queue, p)).majority
    assert result == MajorityResult(
        choice="revert", counts={"revert": 3, "keep": 1}, tie=False, spoiled=1
    )
    seeds = sorted(r.body["seed"] for r in fake.requests)
    assert seeds == [0, 1, 2, 3, 4]
    assert (
        "Choose exactly one of: revert, keep." in fake.requests[0].body["messages"][-1]["content"]
    )


async def test_majority_vote_tie_goes_to_the_option_listed_first(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Two votes each: the tie goes to 'revert', listed first (the safer option), even though
    'keep' came first in the model's script."""
    for choice in ("keep", "keep", "revert", "revert"):
        fake.push(answer(choice=choice))
    options = VotingOptions(choices=("revert", "keep"), samples=4)
    p = Probe(kind="vote", requests=[ask(fake, "keep or revert?")], voting=options)
    result = (await probe(client, task_queue, p)).majority
    assert result == MajorityResult(choice="revert", counts={"revert": 2, "keep": 2}, tie=True)
