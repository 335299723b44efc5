"""A workflow that continues as new, for the call-graph tests (its own module, so that the
workflow sandbox imports nothing else)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="test.step")
async def step(n: int) -> int:
    return n


@workflow.defn(name="LoopingWorkflow")
class LoopingWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        await workflow.execute_activity(
            step, n, start_to_close_timeout=timedelta(seconds=10), summary="one step"
        )
        if n < 2:
            workflow.continue_as_new(n + 1)
        return n
