"""Resuming an agent job that failed or was cancelled: a new job, with an id derived from the
old one's, that keeps its plan, its finished units and every unit's checkpoints.

Everything is read from the old run's history (and, for a job resumed before, from what its
own input kept): the plan (the last planner answer that passed ``plan_errors``: with
``--approve-plan`` the ones before it were rejected), the base
commit, each finished unit's result (its head and summary, from its child workflow's result),
and for each unit that did not finish its last checkpoint commit and the files it changed (from
its child's ``agent.tool`` results). The new run's ``agent.recover_units`` step decides which of
those commits are still in reach (see ``core/agentresume.py``). ``--from-unit U`` drops U and
every unit depending on it from what is kept: they run again from their start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import callgraph, resume
from agentparallels.core import names
from agentparallels.core.agentjob import (
    REPAIR_UNIT,
    AgentInput,
    AgentPlan,
    RepoMap,
    Resumed,
    ToolOutcome,
    UnitCheckpoint,
    UnitInput,
    UnitResult,
    dependants,
    plan_errors,
)
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import ModelAnswer, ModelRequest

__all__ = ["AgentResumption", "derived_id", "prepare", "read_run"]

SUFFIX = re.compile(r"-resume-\d+$")


@dataclass(frozen=True, slots=True)
class AgentResumption:
    job_id: str
    """The new job's id (``derived_id``)."""
    old: WorkflowExecutionDescription
    input: AgentInput


@dataclass
class _Run:
    """What one run's history says (see ``read_run``)."""

    inp: AgentInput
    the_map: RepoMap | None = None
    plans: list[dict[str, Any]] = field(default_factory=list)
    units: dict[int, UnitInput] = field(default_factory=dict)
    """Unit children by the id of the event that started them, in order."""
    runs: dict[int, str] = field(default_factory=dict)
    results: dict[int, UnitResult] = field(default_factory=dict)


async def prepare(
    client: Client, job_id: str, overrides: resume.Overrides, from_unit: str | None = None
) -> AgentResumption:
    """The new job's id and input, or a UsageError naming the fix."""
    old = await resume.describe(client, job_id)
    history = await client.get_workflow_handle(job_id, run_id=old.run_id).fetch_history()
    run = await read_run(client, history)
    resumed = await _resumed(client, job_id, run)
    if from_unit is not None:
        resumed = _redo(resumed, from_unit, job_id)
    inp = run.inp.model_copy(update={"resumed": resumed, **_replaced(run.inp, overrides)})
    return AgentResumption(job_id=await derived_id(client, job_id), old=old, input=inp)


def _replaced(inp: AgentInput, overrides: resume.Overrides) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if overrides.timeout_s is not None:
        limits = inp.limits.model_copy(update={"command_timeout_s": overrides.timeout_s})
        update["limits"] = limits
    if overrides.test_cmd is not None:
        update["test_cmd"] = overrides.test_cmd or None
    if overrides.check_cmd is not None:
        update["check_cmd"] = overrides.check_cmd or None
    return update


async def derived_id(client: Client, job_id: str) -> str:
    """``<job>-resume-<n>``, the first n free (a resumed job's own suffix is replaced, so
    resuming it again gives ``<job>-resume-2``)."""
    root = SUFFIX.sub("", job_id)
    n = 1
    while True:
        candidate = f"{root}-resume-{n}"
        try:
            await client.get_workflow_handle(candidate).describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return candidate
            raise
        n += 1


async def read_run(client: Client, history: WorkflowHistory) -> _Run:
    """The job's input, repository map, planner answers and unit children, from its history."""
    decode = client.data_converter.decode
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await decode(started.input.payloads, [AgentInput])
    run = _Run(inp=inp)
    scheduled: dict[int, HistoryEvent] = {}
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e
        elif e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes
            await _activity(run, scheduled[done.scheduled_event_id], done.result.payloads, decode)
        elif e.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = e.start_child_workflow_execution_initiated_event_attributes
            if child.workflow_type.name == names.AGENT_UNIT:
                [run.units[e.event_id]] = await decode(child.input.payloads, [UnitInput])
        elif e.HasField("child_workflow_execution_started_event_attributes"):
            began = e.child_workflow_execution_started_event_attributes
            run.runs[began.initiated_event_id] = began.workflow_execution.run_id
        elif e.HasField("child_workflow_execution_completed_event_attributes"):
            ended = e.child_workflow_execution_completed_event_attributes
            if ended.initiated_event_id in run.units:
                [result] = await decode(ended.result.payloads, [UnitResult])
                run.results[ended.initiated_event_id] = result
    return run


async def _activity(run: _Run, scheduled: HistoryEvent, result: Sequence[Any], decode: Any) -> None:
    """Keep the repository map and the planner's answers."""
    attrs = scheduled.activity_task_scheduled_event_attributes
    if attrs.activity_type.name == names.REPO_MAP:
        [run.the_map] = await decode(result, [RepoMap])
    elif attrs.activity_type.name == names.CALL_MODEL:
        [request] = await decode(attrs.input.payloads, [ModelRequest])
        if request.output == "AgentPlan":
            [answer] = await decode(result, [ModelAnswer])
            if answer.parsed is not None:
                run.plans.append(answer.parsed)


def _plan(run: _Run) -> tuple[AgentPlan, str] | None:
    """The plan the run worked to and its base commit; None if it never had a valid one."""
    earlier = run.inp.resumed
    if earlier is not None and earlier.plan is not None:
        return earlier.plan, earlier.base_commit
    if run.the_map is None:
        return None
    limits = run.inp.limits
    for parsed in reversed(run.plans):  # the last: earlier ones may have been rejected
        try:
            plan = AgentPlan.model_validate(parsed)
        except ValidationError:
            continue
        if not plan_errors(plan, run.the_map.files, run.inp.files, limits.max_units):
            return plan, run.the_map.base_commit
    return None


async def _resumed(client: Client, job_id: str, run: _Run) -> Resumed:
    """What the new run may keep: for each unit of the plan, the latest child's result if it
    finished, else its last checkpoint (first attempts only: a unit run again after a conflict
    started from other units' work); units the run never started keep what an earlier run left."""
    planned = _plan(run)
    if planned is None:
        return Resumed(previous=job_id)
    plan, base = planned
    earlier = run.inp.resumed or Resumed(previous=job_id)
    kept = {u.name: u for u in earlier.kept}
    checkpoints = {c.name: c for c in earlier.checkpoints}
    latest = {u.unit.name: event for event, u in run.units.items() if u.unit.name != REPAIR_UNIT}
    for name, event in latest.items():
        kept.pop(name, None)
        checkpoints.pop(name, None)
        if event in run.results:
            kept[name] = run.results[event]
        elif run.units[event].attempt == 1 and event in run.runs:
            cp = await _checkpoint(client, run.units[event], run.runs[event])
            if cp is not None:
                checkpoints[name] = cp
    names_ = {u.name for u in plan.units}
    return Resumed(
        previous=job_id,
        base_commit=base,
        plan=plan,
        kept=tuple(u for n, u in kept.items() if n in names_),
        checkpoints=tuple(c for n, c in checkpoints.items() if n in names_),
    )


async def _checkpoint(client: Client, unit: UnitInput, run_id: str) -> UnitCheckpoint | None:
    """Where an unfinished unit's edits got to: its last ``agent.tool`` result's head, the
    files its edits changed, and why it stopped; None when it committed nothing. A unit that
    continued as new is read in its last run, which goes on from its input's carry."""
    wid = f"{unit.job.job_id}/{unit.ref.name}"
    history = await _last_run(client, wid, run_id)
    started = history.events[0].workflow_execution_started_event_attributes
    [last] = await client.data_converter.decode(started.input.payloads, [UnitInput])
    seed = last.carry or unit.resume_from
    head = seed.head if seed else unit.start
    changed = list(dict.fromkeys(seed.changed)) if seed else []  # each file once
    tools: set[int] = set()
    for e in history.events:
        result: Sequence[Payload] = ()
        if e.HasField("activity_task_scheduled_event_attributes"):
            if e.activity_task_scheduled_event_attributes.activity_type.name == names.AGENT_TOOL:
                tools.add(e.event_id)
        elif e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes
            if done.scheduled_event_id in tools:
                result = done.result.payloads
        elif (local := callgraph.local_activity(e)) and local.activity == names.AGENT_TOOL:
            result = local.result  # a short tool step, run as a local activity
        if result:
            [outcome] = await client.data_converter.decode(result, [ToolOutcome])
            head = outcome.head
            changed += [p for p in outcome.changed if p not in changed]
    if head == unit.start or not changed:
        return None
    return UnitCheckpoint(
        name=unit.unit.name,
        start=unit.start,
        head=head,
        changed=tuple(sorted(changed)),
        stopped=_stopped(history.events[-1]),
    )


async def _last_run(client: Client, wid: str, run_id: str) -> WorkflowHistory:
    """The history of the last run of a chain that starts at ``run_id`` and continues as new."""
    while True:
        history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        end = history.events[-1]
        if not end.HasField("workflow_execution_continued_as_new_event_attributes"):
            return history
        run_id = end.workflow_execution_continued_as_new_event_attributes.new_execution_run_id


def _stopped(last: HistoryEvent) -> str:
    """Why a unit's run ended, from its last event."""
    if last.HasField("workflow_execution_failed_event_attributes"):
        failure = last.workflow_execution_failed_event_attributes.failure
        return failure.message or "it failed"
    if last.HasField("workflow_execution_canceled_event_attributes"):
        return "the job was cancelled"
    if last.HasField("workflow_execution_terminated_event_attributes"):
        return "it was terminated"
    if last.HasField("workflow_execution_timed_out_event_attributes"):
        return "it timed out"
    return ""


def _redo(resumed: Resumed, unit: str, job_id: str) -> Resumed:
    """``--from-unit``: the unit and every unit depending on it run again from their start."""
    if resumed.plan is None:
        raise UsageError(
            f"--from-unit {unit}: job {job_id} never made a valid plan, so it has no units; "
            "resume it without --from-unit and it plans again"
        )
    known = [u.name for u in resumed.plan.units]
    if unit not in known:
        raise UsageError(
            f"--from-unit {unit}: job {job_id} has no such unit; its units: {', '.join(known)}"
        )
    redo = dependants({unit}, resumed.plan)
    return resumed.model_copy(
        update={
            "kept": tuple(u for u in resumed.kept if u.name not in redo),
            "checkpoints": tuple(c for c in resumed.checkpoints if c.name not in redo),
            "redo": tuple(n for n in known if n in redo),
        }
    )
