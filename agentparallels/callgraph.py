"""The call graph a job actually took, read from its history and its children's, as Mermaid.

An agent's call graph is built at run time, so there is no baseline to compare it with; what
can be shown is what happened. Each workflow (the job, each shard) is a node; each activity it
called is a node under it with the activity's summary, calls with the same activity and summary
are counted once (``×3``), edges are numbered in the order of the first call, retried attempts
and failures are marked, and a failed call or child is drawn in red.

``agentparallels graph JOB`` prints it; ``agentparallels status JOB --graph`` adds it to the
job's report. Mermaid renders in GitHub, GitLab and most Markdown viewers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

MAX_RUNS = 1000
"""Runs of one workflow's continue-as-new chain read at most."""
SUMMARY_CHARS = 60
ERROR_CHARS = 80

_ACTIVITY_END = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("completed", "activity_task_completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("failed", "activity_task_failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("timed out", "activity_task_timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("cancelled", "activity_task_canceled"),
}
_CHILD_END = {
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: (
        "completed",
        "child_workflow_execution_completed",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: (
        "failed",
        "child_workflow_execution_failed",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: (
        "cancelled",
        "child_workflow_execution_canceled",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: (
        "timed out",
        "child_workflow_execution_timed_out",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: (
        "terminated",
        "child_workflow_execution_terminated",
    ),
}
_WORKFLOW_END = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "completed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "cancelled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued as new",
}
_BAD = {"failed", "timed out", "cancelled", "terminated"}
LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker the SDK records for each local activity (a unit's short tool steps)."""


@dataclass(frozen=True)
class LocalActivity:
    """What the marker of a local activity records."""

    activity: str
    attempt: int
    result: Sequence[Payload]
    """Its result, still encoded (empty when it failed)."""


def local_activity(e: HistoryEvent) -> LocalActivity | None:
    """The local activity event ``e`` records, or None when it is not such a marker. The
    marker's data is the SDK's own JSON, never encoded; its result is a payload like any."""
    if not e.HasField("marker_recorded_event_attributes"):
        return None
    marker = e.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    data = marker.details["data"].payloads
    try:
        info = json.loads(data[0].data) if data else {}
    except ValueError:
        return None
    result = marker.details["result"].payloads if "result" in marker.details else ()
    return LocalActivity(
        activity=str(info.get("activity_type") or "local activity"),
        attempt=max(int(info.get("attempt") or 1), 1),
        result=tuple(result),
    )


_ACTIVITY_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
    *_ACTIVITY_END,
}
_CHILD_EVENTS = {
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
    *_CHILD_END,
}


Group = Callable[[str, str, str], str]
"""``(workflow type, activity, summary) -> the summary its calls are counted under``: lets a
kind of job count, say, every tool call of one tool as one node."""


def _ungrouped(workflow_type: str, activity: str, summary: str) -> str:
    return summary


@dataclass
class Call:
    """Calls of one activity with one summary, from one workflow."""

    activity: str
    summary: str
    order: int
    """1 for the workflow's first call, and so on."""
    count: int = 0
    failed: int = 0
    retries: int = 0
    """Attempts beyond the first, over all the calls."""
    error: str = ""
    """The last failure's message (of a failed call, or of an attempt that was retried)."""
    notes: list[str] = field(default_factory=list)
    """More lines for its node (durations, outcomes, flags), added by a kind of job."""
    flagged: bool = False
    """Drawn as a warning (a call outside its baseline)."""


@dataclass
class Flow:
    """One workflow run and what it called."""

    workflow_id: str
    workflow_type: str
    summary: str = ""
    status: str = "running"
    error: str = ""
    runs: int = 1
    """Runs in its chain of continue-as-new."""
    calls: list[Call] = field(default_factory=list)
    children: list[tuple[int, Flow]] = field(default_factory=list)
    """Child workflows with the order of their start among the workflow's calls."""
    result: Payload | None = None
    """What it returned, still encoded (a kind of job decodes its own)."""
    notes: list[str] = field(default_factory=list)
    """More lines for its node, added by a kind of job."""

    @property
    def failed(self) -> bool:
        return self.status in _BAD

    def walk(self) -> list[Flow]:
        return [self, *(f for _, child in self.children for f in child.walk())]


async def load(
    client: Client, workflow_id: str, run_id: str | None = None, group: Group = _ungrouped
) -> Flow:
    """The job ``workflow_id``'s call graph, its child workflows' included (recursively); a
    workflow that continued as new is drawn once, with the calls of all its runs."""
    return await _flow(client, workflow_id, await _runs(client, workflow_id, run_id), group)


async def _runs(client: Client, workflow_id: str, run_id: str | None) -> list[list[HistoryEvent]]:
    """The events of the run ``run_id`` (default: the latest) and of every run before and after
    it in its chain of continue-as-new, oldest first."""

    async def events(run: str | None) -> list[HistoryEvent]:
        history = await client.get_workflow_handle(workflow_id, run_id=run).fetch_history()
        return list(history.events)

    runs = [await events(run_id)]
    while len(runs) < MAX_RUNS and runs[0]:
        first = runs[0][0].workflow_execution_started_event_attributes
        if not first.continued_execution_run_id:
            break
        runs.insert(0, await events(first.continued_execution_run_id))
    while len(runs) < MAX_RUNS and runs[-1]:
        last = runs[-1][-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            break
        runs.append(
            await events(
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            )
        )
    return runs


async def _flow(
    client: Client, workflow_id: str, runs: list[list[HistoryEvent]], group: Group
) -> Flow:
    flow = Flow(workflow_id=workflow_id, workflow_type="", runs=len(runs))
    reader = _Reader(client, flow, group)
    for run, e in ((i, e) for i, events in enumerate(runs) for e in events):
        await reader.read(run, e)
    for initiated, (child_id, child_type, summary, child_order) in reader.started_children.items():
        run_id = reader.child_runs.get(initiated)
        if run_id:
            child = await load(client, child_id, run_id, group)
        else:  # never started
            child = Flow(workflow_id=child_id, workflow_type=child_type)
        child.summary = child.summary or summary
        if initiated in reader.child_status and child.status == "running":
            child.status = reader.child_status[initiated]
        flow.children.append((child_order, child))
    return flow


@dataclass
class _Reader:
    """What reading one workflow's events (of all its runs) carries from event to event: the
    calls by activity and summary, and the children started, keyed by ``(run, event id)``
    because event ids restart in each run of a continue-as-new chain."""

    client: Client
    flow: Flow
    group: Group
    by_key: dict[tuple[str, str], Call] = field(default_factory=dict)
    scheduled: dict[tuple[int, int], Call] = field(default_factory=dict)
    started_children: dict[tuple[int, int], tuple[str, str, str, int]] = field(default_factory=dict)
    child_runs: dict[tuple[int, int], str] = field(default_factory=dict)
    child_status: dict[tuple[int, int], str] = field(default_factory=dict)
    order: int = 0

    async def read(self, run: int, e: HistoryEvent) -> None:
        """Adds event ``e`` of run ``run`` (0 for the first of the chain) to the flow."""
        flow, t = self.flow, e.event_type
        if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and run == 0:
            flow.workflow_type = e.workflow_execution_started_event_attributes.workflow_type.name
            flow.summary = await _text(self.client, e.user_metadata.summary)
        elif t in _ACTIVITY_EVENTS:
            await self._activity(run, e)
        elif t in _CHILD_EVENTS:
            await self._child(run, e)
        elif t == EventType.EVENT_TYPE_MARKER_RECORDED:
            await self._local(e)
        elif t in _WORKFLOW_END:
            flow.status = _WORKFLOW_END[t]
            if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                flow.error = e.workflow_execution_failed_event_attributes.failure.message
            if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                payloads = e.workflow_execution_completed_event_attributes.result.payloads
                flow.result = payloads[0] if payloads else None

    async def _call(self, name: str, e: HistoryEvent) -> Call:
        """The node of a call of ``name`` with the summary of event ``e``, counted once more."""
        summary = await _text(self.client, e.user_metadata.summary)
        summary = self.group(self.flow.workflow_type, name, summary)
        call = self.by_key.get((name, summary))
        if call is None:
            self.order += 1
            call = self.by_key[(name, summary)] = Call(name, summary, self.order)
            self.flow.calls.append(call)
        call.count += 1
        return call

    async def _local(self, e: HistoryEvent) -> None:
        """A local activity: one marker says what ran, how many attempts it took and how it
        ended."""
        local = local_activity(e)
        if local is None:
            return
        call = await self._call(local.activity, e)
        call.retries += local.attempt - 1
        marker = e.marker_recorded_event_attributes
        if marker.HasField("failure"):
            call.failed += 1
            call.error = marker.failure.message

    async def _activity(self, run: int, e: HistoryEvent) -> None:
        t = e.event_type
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            self.scheduled[run, e.event_id] = await self._call(name, e)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            call = self.scheduled[run, a.scheduled_event_id]
            call.retries += max(a.attempt - 1, 0)
            if a.HasField("last_failure"):
                call.error = a.last_failure.message
        else:
            status, attr = _ACTIVITY_END[t]
            a = getattr(e, f"{attr}_event_attributes")
            call = self.scheduled[run, a.scheduled_event_id]
            if status != "completed":
                call.failed += 1
                call.error = a.failure.message if a.HasField("failure") else status

    async def _child(self, run: int, e: HistoryEvent) -> None:
        t = e.event_type
        if t == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            start = e.start_child_workflow_execution_initiated_event_attributes
            self.order += 1
            summary = await _text(self.client, e.user_metadata.summary)
            self.started_children[run, e.event_id] = (
                start.workflow_id,
                start.workflow_type.name,
                summary,
                self.order,
            )
        elif t == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            started = e.child_workflow_execution_started_event_attributes
            self.child_runs[run, started.initiated_event_id] = started.workflow_execution.run_id
        elif t == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED:
            refused = e.start_child_workflow_execution_failed_event_attributes
            self.child_status[run, refused.initiated_event_id] = "failed"
        else:
            status, attr = _CHILD_END[t]
            initiated = getattr(e, f"{attr}_event_attributes").initiated_event_id
            self.child_status[run, initiated] = status


async def _text(client: Client, payload: Payload) -> str:
    if not payload.data and not payload.metadata:
        return ""
    (value,) = await client.data_converter.decode([payload], [str])
    return str(value)


# --- Mermaid ---------------------------------------------------------------------------------


def _escape(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def _label(*lines: str) -> str:
    return '"' + "<br/>".join(line for line in lines if line) + '"'


def mermaid(flow: Flow) -> str:
    """The graph as a Mermaid flowchart (top to bottom)."""
    lines = [
        "flowchart TD",
        "  classDef workflow fill:#e8f0fe,stroke:#1a73e8",
        "  classDef failed fill:#fde2e2,stroke:#c62828,color:#5f0000",
        "  classDef retried stroke:#ef6c00,stroke-width:2px",
        "  classDef flagged fill:#fff4e0,stroke:#ef6c00,stroke-width:2px",
    ]
    counter = iter(range(1_000_000))

    def node_id(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def draw(f: Flow) -> str:
        me = node_id("w")
        status = f.status + (f": {_escape(f.error, ERROR_CHARS)}" if f.error else "")
        if f.runs > 1:
            status = f"{f.runs} runs, {status}"
        summary = _escape(f.summary, SUMMARY_CHARS)
        label = _label(
            f.workflow_type,
            _escape(f.workflow_id, 80),
            summary,
            status,
            *(_escape(n, ERROR_CHARS) for n in f.notes),
        )
        lines.append(f"  {me}[[{label}]]")
        lines.append(f"  class {me} {'failed' if f.failed else 'workflow'}")
        edges: list[tuple[int, str, int]] = []
        for call in f.calls:
            node = node_id("a")
            notes = []
            if call.failed:
                notes.append(f"✗ {call.failed} failed: {_escape(call.error, ERROR_CHARS)}")
            if call.retries:
                retried = f"↻ {call.retries} retried"
                if not call.failed and call.error:
                    retried += f" after: {_escape(call.error, ERROR_CHARS)}"
                notes.append(retried)
            notes += [_escape(n, ERROR_CHARS) for n in call.notes]
            label = _label(call.activity, _escape(call.summary, SUMMARY_CHARS), *notes)
            lines.append(f"  {node}[{label}]")
            if call.failed:
                lines.append(f"  class {node} failed")
            elif call.flagged:
                lines.append(f"  class {node} flagged")
            elif call.retries:
                lines.append(f"  class {node} retried")
            edges.append((call.order, node, call.count))
        for order, child in f.children:
            edges.append((order, draw(child), 1))
        for order, node, count in sorted(edges):
            text = f"{order}" + (f" ×{count}" if count > 1 else "")
            lines.append(f'  {me} -->|"{text}"| {node}')
        return me

    draw(flow)
    return "\n".join(lines) + "\n"


def markdown(flow: Flow) -> str:
    """The graph in a fenced ``mermaid`` block, with a one-line summary above it."""
    flows = flow.walk()
    calls = sum(c.count for f in flows for c in f.calls)
    failed = sum(c.failed for f in flows for c in f.calls) + sum(1 for f in flows[1:] if f.failed)
    head = (
        f"Call graph of {flow.workflow_id} ({flow.status}): "
        f"{_count(len(flows) - 1, 'child workflow')}, {_count(calls, 'activity call')}, "
        f"{failed} failed"
    )
    return f"{head}\n\n```mermaid\n{mermaid(flow)}```\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


__all__ = [
    "Call",
    "ERROR_CHARS",
    "Flow",
    "Group",
    "LOCAL_ACTIVITY_MARKER",
    "LocalActivity",
    "MAX_RUNS",
    "SUMMARY_CHARS",
    "load",
    "local_activity",
    "markdown",
    "mermaid",
]
