"""Every workflow run of Agent Parallels gets the project's workflow task timeout.

A workflow task given to a worker that is then killed (or stopped) waits out its timeout
before another worker may take it; with the SDK's default (10 s) that was the largest part of
a job's recovery after a kill (`make chaos`). The timeout is set per run when the run starts,
by whoever starts it: a client (a job), a workflow (a child) or a run continuing as new. The
interceptor here, carried by the plugin to every client and worker, sets it on each of them
unless the starter chose one, so no code path that starts a workflow can forget it.
"""

from __future__ import annotations

from typing import Any

from temporalio import client, worker

from agentparallels.core.models import WORKFLOW_TASK_TIMEOUT

__all__ = ["TaskTimeouts"]


class TaskTimeouts(client.Interceptor, worker.Interceptor):
    """Sets :data:`WORKFLOW_TASK_TIMEOUT` on workflows started through a client, on child
    workflows and on runs that continue as new."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        return _ClientOutbound(next)

    def workflow_interceptor_class(
        self, input: worker.WorkflowInterceptorClassInput
    ) -> type[worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(client.OutboundInterceptor):
    async def start_workflow(self, input: client.StartWorkflowInput) -> Any:
        if input.task_timeout is None:
            input.task_timeout = WORKFLOW_TASK_TIMEOUT
        return await super().start_workflow(input)


class _WorkflowInbound(worker.WorkflowInboundInterceptor):
    def init(self, outbound: worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound))


class _WorkflowOutbound(worker.WorkflowOutboundInterceptor):
    async def start_child_workflow(self, input: worker.StartChildWorkflowInput) -> Any:
        if input.task_timeout is None:
            input.task_timeout = WORKFLOW_TASK_TIMEOUT
        return await super().start_child_workflow(input)

    def continue_as_new(self, input: worker.ContinueAsNewInput) -> Any:
        if input.task_timeout is None:
            input.task_timeout = WORKFLOW_TASK_TIMEOUT
        return super().continue_as_new(input)
