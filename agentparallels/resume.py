"""Resuming a job that failed, was cancelled or was terminated.

The new run has the same job id (Temporal allows it once the old run has closed), so it
publishes the same branch. It gets the old run's input, with the test command, check command
and time limit replaced when asked, its base pinned to the commit the old run started from,
and, in ``reuse``, the result of every shard the old run finished, read from the old run's
history (and from its own ``reuse``, for a job resumed before). The run takes a shard over
instead of running it again when its commits are still in reach; see
``activities/progress_log.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from agentparallels.errors import UsageError
from agentparallels.models import Plan, RefactorInput, ShardResult

WORKFLOW = "RefactorWorkflow"
RESUMABLE = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
}


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a resumed run may change; None keeps the old run's value ("" drops a command)."""

    test_cmd: str | None = None
    check_cmd: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Resumption:
    job_id: str
    old: WorkflowExecutionDescription
    """The run being resumed."""
    input: RefactorInput
    """The new run's input."""


async def describe(client: Client, job_id: str) -> WorkflowExecutionDescription:
    """The job's latest run; a usage error unless it is a refactor job that can be resumed."""
    try:
        desc = await client.get_workflow_handle(job_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no job {job_id}: see the Temporal UI for job ids") from None
        raise
    if desc.workflow_type != WORKFLOW:
        owner = desc.parent_id or "the job it belongs to"
        raise UsageError(f"{job_id} is a {desc.workflow_type}, not a job: resume {owner}")
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise UsageError(
            f"job {job_id} is still running: follow it with `agentparallels status {job_id} "
            "--follow`, or cancel it first"
        )
    if desc.status not in RESUMABLE:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise UsageError(f"job {job_id} has {state}: there is nothing to resume")
    return desc


async def prepare(client: Client, job_id: str, overrides: Overrides) -> Resumption:
    """The input of a new run of the failed job ``job_id``."""
    old = await describe(client, job_id)
    history = await client.get_workflow_handle(job_id, run_id=old.run_id).fetch_history()
    decode = client.data_converter.decode
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await decode(started.input.payloads, [RefactorInput])
    reuse: dict[str, ShardResult] = dict(inp.reuse)
    base: str | None = None
    for event, result in _completions(history.events):
        if event == "ShardWorkflow":
            [shard] = await decode(result, [ShardResult])
            reuse[shard.name] = shard
        elif event == "refactor.plan":
            [plan] = await decode(result, [Plan])
            base = plan.base_commit
    limits = inp.limits
    if overrides.timeout_s is not None:
        limits = limits.model_copy(update={"command_timeout_s": overrides.timeout_s})
    update: dict[str, Any] = {"reuse": reuse, "limits": limits}
    if base is not None:
        update["base_ref"] = base
    if overrides.test_cmd is not None:
        update["test_cmd"] = overrides.test_cmd or None
    if overrides.check_cmd is not None:
        update["check_cmd"] = overrides.check_cmd or None
    return Resumption(job_id=job_id, old=old, input=inp.model_copy(update=update))


def _completions(events: Iterable[HistoryEvent]) -> list[tuple[str, Any]]:
    """(workflow or activity type, result payloads) of each child workflow and activity that
    completed, in history order."""
    scheduled: dict[int, str] = {}
    found: list[tuple[str, Any]] = []
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            found.append((scheduled.get(done.scheduled_event_id, ""), done.result.payloads))
        elif event.HasField("child_workflow_execution_completed_event_attributes"):
            done = event.child_workflow_execution_completed_event_attributes
            found.append((done.workflow_type.name, done.result.payloads))
    return found
