"""Calling a step by its spec, with the settings declared in the spec."""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.steps import Step

__all__ = ["call"]

In = TypeVar("In")
Out = TypeVar("Out")


async def call(
    step: Step[In, Out], arg: In, *, summary: str | None = None, **overrides: Any
) -> Out:
    """Run ``step`` on ``arg`` with its declared timeouts and retry policy; ``overrides``
    replace single options (e.g. a longer ``start_to_close_timeout``). The activity is named,
    not imported: workflow code never loads the activities floor."""
    options = step.settings.options() | overrides
    return await workflow.execute_activity(
        step.name, arg, result_type=step.output, summary=summary, **options
    )
