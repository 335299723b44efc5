"""Pipes and filters (prompt chaining): stages in order, each one's output the next one's input.

Each stage is an activity or a child workflow, named (so any worker's registered step can be a
stage), and between stages a *gate* may look at the output and stop the chain: a check that
the draft compiles, that a plan names real files, that a review found nothing blocking. A gate
that says no ends the pipeline *successfully* with the output so far and the gate's reason, so
the caller decides what to do; a stage that fails fails the pipeline, naming the stage.

:func:`chain` runs stages given as callables (typed, for workflow code that composes its own);
:class:`PipelineWorkflow` runs stages described by :class:`PipelineInput` (names and queues).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError

from agentparallels.core import names

with workflow.unsafe.imports_passed_through():
    from agentparallels.core._value import Value
    from agentparallels.core.errors import NON_RETRYABLE_TYPES as NON_RETRYABLE
    from agentparallels.core.errors import STAGE_FAILED


class Verdict(Value):
    """A gate's decision."""

    passed: bool
    reason: str = ""
    """Why not, when it did not pass (shown in the result)."""


class GateInput(Value):
    """What a gate activity receives."""

    stage: str
    """The stage whose output it judges."""
    output: Any


class Gate(Value):
    """An activity that judges a stage's output: it gets a :class:`GateInput` and returns a
    :class:`Verdict`."""

    activity: str
    """Name of the registered activity."""
    timeout_s: float = Field(60.0, gt=0)
    """Longest one attempt may take, in seconds."""


class Stage(Value):
    """One step of the chain."""

    name: str
    """Shown in the UI and in the result."""
    kind: Literal["activity", "workflow"]
    target: str
    """Name of the activity, or of the workflow run as a child."""
    task_queue: str | None = None
    """Where it runs (default: the pipeline's queue)."""
    timeout_s: float = Field(300.0, gt=0)
    """For an activity: longest one attempt may take; for a child: longest the run may take."""
    attempts: int = Field(3, ge=1)
    """Most attempts of an activity stage (and of its gate) before the pipeline fails."""
    gate: Gate | None = None
    """Judges this stage's output before the next stage starts."""


class PipelineInput(Value):
    stages: tuple[Stage, ...] = Field(min_length=1)
    input: Any = None
    """The first stage's input."""


class PipelineResult(Value):
    completed: tuple[str, ...]
    """Stages that ran, in order."""
    output: Any
    """The last completed stage's output."""
    stopped_after: str | None = None
    """The stage whose gate stopped the chain; None when every stage ran and passed."""
    gate: str | None = None
    """That gate's name."""
    reason: str = ""
    """That gate's reason."""


@dataclass(frozen=True)
class Step:
    """A stage as workflow code: ``run`` maps the previous output to this one's; ``gate``, if
    any, judges it."""

    name: str
    run: Callable[[Any], Awaitable[Any]]
    gate: Callable[[Any], Awaitable[Verdict]] | None = None
    gate_name: str = "gate"


async def chain(steps: Sequence[Step], value: Any) -> PipelineResult:
    """Run ``steps`` in order on ``value``; stop at the first gate that does not pass. A step
    that raises fails the chain with an error naming the step."""
    completed: list[str] = []
    for step in steps:
        try:
            value = await step.run(value)
        except FailureError as e:
            raise ApplicationError(
                f"pipeline stage {step.name!r} failed: {_message(e)}",
                type=STAGE_FAILED,
                non_retryable=True,
            ) from e
        completed.append(step.name)
        if step.gate is not None:
            verdict = await step.gate(value)
            if not verdict.passed:
                return PipelineResult(
                    completed=tuple(completed),
                    output=value,
                    stopped_after=step.name,
                    gate=step.gate_name,
                    reason=verdict.reason,
                )
    return PipelineResult(completed=tuple(completed), output=value)


@workflow.defn(name=names.PIPELINE)
class PipelineWorkflow:
    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineResult:
        parent = workflow.info().workflow_id
        return await chain(
            [_step(parent, i, stage) for i, stage in enumerate(inp.stages)], inp.input
        )


def _step(parent: str, index: int, stage: Stage) -> Step:
    retry = RetryPolicy(maximum_attempts=stage.attempts, non_retryable_error_types=NON_RETRYABLE)

    async def run(value: Any) -> Any:
        if stage.kind == "activity":
            return await workflow.execute_activity(
                stage.target,
                value,
                start_to_close_timeout=timedelta(seconds=stage.timeout_s),
                retry_policy=retry,
                summary=stage.name,
                task_queue=stage.task_queue or None,
            )
        return await workflow.execute_child_workflow(
            stage.target,
            value,
            id=f"{parent}/{index:02d}-{stage.name}",
            execution_timeout=timedelta(seconds=stage.timeout_s),
            static_summary=stage.name,
            task_queue=stage.task_queue or None,
        )

    gate = None
    if stage.gate is not None:
        spec = stage.gate

        async def gate(value: Any) -> Verdict:
            return await workflow.execute_activity(
                spec.activity,
                GateInput(stage=stage.name, output=value),
                result_type=Verdict,
                start_to_close_timeout=timedelta(seconds=spec.timeout_s),
                retry_policy=retry,
                summary=f"gate after {stage.name}",
            )

    name = stage.gate.activity if stage.gate else "gate"
    return Step(name=stage.name, run=run, gate=gate, gate_name=name)


def _message(e: BaseException) -> str:
    """The innermost message under a child or activity error."""
    while e.__cause__ is not None:
        e = e.__cause__
    return e.message if isinstance(e, FailureError) else str(e)


__all__ = [
    "Gate",
    "GateInput",
    "PipelineInput",
    "PipelineResult",
    "PipelineWorkflow",
    "Stage",
    "Step",
    "Verdict",
    "chain",
]
