"""Resuming a job that failed, was cancelled or was terminated.

The new run has the same job id (Temporal allows it once the old run has closed), so it
publishes the same branch. It gets the old run's input, with the test command, check command
and time limit replaced when asked, and, in ``reuse``, the result of every shard the old run
finished, read from the old run's history (and from its own ``reuse``, for a job resumed
before). The run takes a shard over instead of running it again when its commits are still in
reach and still fit the plan (same base commit, same files); see
``activities/progress_log.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus

from agentparallels.core import names
from agentparallels.core.errors import UsageError
from agentparallels.core.models import RefactorInput, ShardResult
from agentparallels.ops import existing

__all__ = ["RESUMABLE", "WORKFLOW", "Overrides", "Resumption", "describe", "prepare"]

WORKFLOW = names.REFACTOR
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
    """The job's latest run; a usage error unless it is a refactor or agent job that can be
    resumed (an agent job: see ``agentparallels.resume_agent``)."""
    _, desc = await existing(client, job_id)
    if desc.workflow_type not in (WORKFLOW, names.AGENT):
        owner = desc.parent_id or "the job it belongs to"
        raise UsageError(f"{job_id} is a {desc.workflow_type}, not a job: resume {owner}")
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise UsageError(
            f"job {job_id} is still running: follow it with `agentparallels status {job_id} "
            "--follow`, or cancel it first"
        )
    if desc.status not in RESUMABLE:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise UsageError(
            f"job {job_id} has {state}: there is nothing to resume; start a new job instead"
        )
    return desc


async def prepare(client: Client, job_id: str, overrides: Overrides) -> Resumption:
    """The input of a new run of the failed refactor job ``job_id``."""
    old = await describe(client, job_id)
    if old.workflow_type != WORKFLOW:
        raise UsageError(f"job {job_id} is an agent job: see agentparallels.resume_agent")
    history = await client.get_workflow_handle(job_id, run_id=old.run_id).fetch_history()
    decode = client.data_converter.decode
    started = history.events[0].workflow_execution_started_event_attributes
    try:
        [inp] = await decode(started.input.payloads, [RefactorInput])
    except ValidationError as e:  # e.g. a job started before its model endpoint was checked
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        raise UsageError(
            f"job {job_id} cannot run again as it was asked: {where}: {reason}"
        ) from None
    reuse: dict[str, ShardResult] = dict(inp.reuse)
    for event in history.events:
        if event.HasField("child_workflow_execution_completed_event_attributes"):
            done = event.child_workflow_execution_completed_event_attributes
            if done.workflow_type.name == names.SHARD:
                [shard] = await decode(done.result.payloads, [ShardResult])
                reuse[shard.name] = shard
    limits = inp.limits
    if overrides.timeout_s is not None:
        limits = limits.model_copy(update={"command_timeout_s": overrides.timeout_s})
    update: dict[str, Any] = {"reuse": reuse, "limits": limits}
    if overrides.test_cmd is not None:
        update["test_cmd"] = overrides.test_cmd or None
    if overrides.check_cmd is not None:
        update["check_cmd"] = overrides.check_cmd or None
    return Resumption(job_id=job_id, old=old, input=inp.model_copy(update=update))
