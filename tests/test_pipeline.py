"""Pipeline: stages (activities and child workflows) in order, gates that stop the chain."""

from __future__ import annotations

import asyncio

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import pytest
    from pydantic import ValidationError
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.worker import Worker

    from agentparallels.core.errors import STAGE_FAILED
    from agentparallels.workflows.pipeline import (
        Gate,
        GateInput,
        PipelineInput,
        PipelineResult,
        PipelineWorkflow,
        Stage,
        Verdict,
    )

RAN: list[str] = []


@activity.defn(name="test.pipe.draft")
async def draft(topic: str) -> str:
    RAN.append("draft")
    if topic == "crash":
        raise ApplicationError("no idea what to write", non_retryable=True)
    return f"notes on {topic}" + (" TODO" if topic == "unfinished" else "")


@activity.defn(name="test.pipe.no_todo")
async def no_todo(inp: GateInput) -> Verdict:
    RAN.append(f"gate {inp.stage}")
    if "TODO" in inp.output:
        return Verdict(passed=False, reason=f"{inp.stage} left a TODO: {inp.output!r}")
    return Verdict(passed=True)


@activity.defn(name="test.pipe.sign")
async def sign(text: str) -> str:
    RAN.append("sign")
    return f"{text} -- signed"


@workflow.defn(name="test.pipe.Polish")
class PolishWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return text.capitalize() + "."


def stages() -> tuple[Stage, ...]:
    return (
        Stage(
            name="draft",
            kind="activity",
            target="test.pipe.draft",
            gate=Gate(activity="test.pipe.no_todo"),
        ),
        Stage(name="polish", kind="workflow", target="test.pipe.Polish"),
        Stage(name="sign", kind="activity", target="test.pipe.sign"),
    )


async def run(client: Client, task_queue: str, topic: str) -> PipelineResult:
    RAN.clear()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[PipelineWorkflow, PolishWorkflow],
        activities=[draft, no_todo, sign],
    ):
        handle = await client.start_workflow(
            PipelineWorkflow.run,
            PipelineInput(stages=stages(), input=topic),
            id=f"{task_queue}-pipe",
            task_queue=task_queue,
        )
        return await asyncio.wait_for(handle.result(), 30)


async def test_stages_run_in_order_each_output_feeding_the_next(
    client: Client, task_queue: str
) -> None:
    """activity -> gate -> child workflow -> activity; the result is the last output."""
    result = await run(client, task_queue, "sagas")
    assert result == PipelineResult(
        completed=("draft", "polish", "sign"), output="Notes on sagas. -- signed"
    )
    assert RAN == ["draft", "gate draft", "sign"]
    child = client.get_workflow_handle(f"{task_queue}-pipe/01-polish")
    assert await child.result() == "Notes on sagas."


async def test_a_gate_stops_the_chain_and_says_which_and_why(
    client: Client, task_queue: str
) -> None:
    """A gate that fails ends the pipeline after its stage with its reason; later stages never
    run (no child workflow is started)."""
    result = await run(client, task_queue, "unfinished")
    assert result == PipelineResult(
        completed=("draft",),
        output="notes on unfinished TODO",
        stopped_after="draft",
        gate="test.pipe.no_todo",
        reason="draft left a TODO: 'notes on unfinished TODO'",
    )
    assert RAN == ["draft", "gate draft"]
    children = [
        w async for w in client.list_workflows(f"WorkflowId = '{task_queue}-pipe/01-polish'")
    ]
    assert children == []


async def test_a_failing_stage_fails_the_pipeline_naming_it(
    client: Client, task_queue: str
) -> None:
    """A stage's error fails the pipeline with a message naming the stage and the cause."""
    with pytest.raises(WorkflowFailureError) as failure:
        await run(client, task_queue, "crash")
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == STAGE_FAILED
    assert cause.message == "pipeline stage 'draft' failed: no idea what to write"
    assert RAN == ["draft"]


def test_a_pipeline_needs_a_stage() -> None:
    """An empty pipeline is refused when the input is built, before anything runs."""
    with pytest.raises(ValidationError, match="at least 1 item"):
        PipelineInput(stages=())
