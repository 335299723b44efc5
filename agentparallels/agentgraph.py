"""The call graph of an agent job: its units, their tool calls by tool, reviews and retries.

A unit makes hundreds of tool calls, each with its own summary (``read src/a.py:1-80``);
drawn one node per summary the graph would bury the job. Here each unit's tool steps are
counted per tool (``read_file ×12``) and its model calls as one node, with retried attempts
and failed steps marked as in every graph (:mod:`agentparallels.callgraph`). What the steps'
history does not say comes from the results, when there are any: a unit's result gives, per
tool, how many calls were not ok (a failed test run, a refused edit) and their 95th percentile
duration, and the calls flagged against the repository's baseline (drawn in amber); the job's
result gives tokens, cost, the baseline and the reviews (when the job had reviewers). A unit
that failed has no result: its node shows what its history shows.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from agentparallels import callgraph
from agentparallels.core import names
from agentparallels.core.agentjob import AgentResult, UnitResult
from agentparallels.core.baseline import ToolStats, percentile

__all__ = ["TOOL_WORDS", "annotate", "group", "load", "tool_counts"]

TOOL_WORDS = {
    "read": "read_file",
    "edit": "edit_file",
    "write": "write_file",
    "search": "search",
    "list": "list_files",
    "check": "run_check",
    "tests": "run_tests",
}
"""The first word of a tool step's summary (``workflows.agent_unit.tool_summary``) -> tool."""


def group(workflow_type: str, activity: str, summary: str) -> str:
    """A unit's tool steps counted per tool, its model calls as one node."""
    if workflow_type != names.AGENT_UNIT:
        return summary
    said = summary.partition(": ")[2] or summary
    if activity == names.AGENT_TOOL:
        word = said.split(" ", 1)[0]
        return TOOL_WORDS.get(word, word)
    if activity == names.CALL_MODEL:
        return "model turns · " + said.rpartition(" · ")[2]
    return summary


async def load(client: Client, job_id: str) -> callgraph.Flow:
    """The agent job's graph, annotated from its results."""
    flow = await callgraph.load(client, job_id, group=group)
    await annotate(client, flow)
    return flow


async def _decoded(client: Client, flow: callgraph.Flow, kind: type[Any]) -> Any:
    if flow.result is None:
        return None
    try:
        (value,) = await client.data_converter.decode([flow.result], [kind])
    except Exception:  # a result of another shape: draw what the history says
        return None
    return value


async def annotate(client: Client, flow: callgraph.Flow) -> None:
    """Add the results' notes to an agent job's graph (a graph of another kind is left)."""
    if flow.workflow_type != names.AGENT:
        return
    result = await _decoded(client, flow, AgentResult)
    if isinstance(result, AgentResult):
        flow.notes += _job_notes(result)
    for _, child in flow.children:
        if child.workflow_type == names.AGENT_UNIT:
            unit = await _decoded(client, child, UnitResult)
            if isinstance(unit, UnitResult):
                _unit_notes(child, unit)


def _job_notes(r: AgentResult) -> list[str]:
    cost = f", ${r.cost_usd:.4f}" if r.cost_usd else ""
    notes = [f"{r.usage.total} tokens{cost}, {len(r.units)} units"]
    if r.baseline_jobs:
        notes.append(f"baseline of {r.baseline_jobs} past jobs: {r.flagged} calls flagged")
    else:
        notes.append("no baseline (first agent job on this repository)")
    notes += [f"review {line}" for line in _reviews(r)]
    return notes


def _reviews(r: AgentResult) -> list[str]:
    """One line per review round of the result (none when the job had no reviewers): its
    verdict, the approvals against the quorum, and who rejected."""
    lines = []
    for rnd in r.reviews:
        approvals = sum(v.approve for v in rnd.votes)
        verdict = "approved" if rnd.approved else "rejected"
        line = f"round {rnd.round} {verdict}, {approvals}/{len(rnd.votes)} (quorum {rnd.quorum})"
        if rnd.dissent:
            line += "; rejected by " + ", ".join(v.reviewer for v in rnd.dissent)
        lines.append(line)
    return lines


def _unit_notes(flow: callgraph.Flow, u: UnitResult) -> None:
    flow.notes.append(f"{u.turns} turns, {u.tool_calls} tool calls, {u.usage.total} tokens")
    by_tool: dict[str, list[ToolStats]] = {}
    for s in u.tools:
        by_tool.setdefault(s.tool, []).append(s)
    for call in flow.calls:
        if call.activity != names.AGENT_TOOL:
            continue
        stats = by_tool.get(call.summary, [])
        failures = sum(s.failures for s in stats)
        durations = tuple(sorted(d for s in stats for d in s.durations_ms))
        if failures:
            call.notes.append(f"{failures} not ok")
        if durations:
            call.notes.append(f"p95 {percentile(durations, 0.95) / 1000:.2f} s")
        for f in u.flags:
            if f.tool == call.summary:
                call.flagged = True
                call.notes.append(f"⚠ {f.kind}: {f.line()}")


def tool_counts(flow: callgraph.Flow) -> dict[str, int]:
    """Tool calls per tool over every unit of the graph."""
    counts: dict[str, int] = {}
    for f in flow.walk():
        if f.workflow_type == names.AGENT_UNIT:
            for c in f.calls:
                if c.activity == names.AGENT_TOOL:
                    counts[c.summary] = counts.get(c.summary, 0) + c.count
    return counts
