"""A deliberately non-deterministic change to ``RefactorWorkflow``, registered under its name:
tests/test_replay.py shows that replaying a recorded refactor job with it fails, so a real
change of that kind fails CI. Its own module, free of test-only imports, because the workflow
sandbox re-imports the module a workflow is defined in."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.models import RefactorInput, RefactorResult
    from agentparallels.workflows.refactor import RefactorWorkflow


@workflow.defn(name="RefactorWorkflow")
class TimerFirstRefactorWorkflow(RefactorWorkflow):
    """The shipped job, but starting a timer first: a command no recorded job issued, added
    without ``workflow.patched``."""

    @workflow.run
    async def run(self, inp: RefactorInput) -> RefactorResult:
        await workflow.sleep(timedelta(milliseconds=1))
        return await super().run(inp)
