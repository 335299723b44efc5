"""Long agent sessions: a unit of hundreds of turns reading a large file keeps every run's
history bounded (claim check, compaction by the model, continue-as-new), and a context-length
error from the provider is answered by a model-written compaction and one more call.

Real dev server, real worker, real tools and git; the model is the scripted server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory

from agentparallels import worker
from agentparallels.callgraph import local_activity
from agentparallels.core import attributes
from agentparallels.core.agentjob import PLANNER_MARKER, AgentLimits, unit_marker
from agentparallels.core.llm import BudgetLimits
from agentparallels.testing.fake_llm import FakeLLM
from agentparallels.workflows.compaction import SUMMARISE_SYSTEM, SUMMARY_PREFIX
from tests.support.agent_script import CHECK, FILES, FINISH, edit, plan, tools, unit
from tests.support.repos import git, make_repo
from tests.test_agent import job, start

BIG_LINES = 2400
BIG = "".join(f"# line {n:05d}: {'lorem ipsum dolor sit amet ' * 2}\n" for n in range(BIG_LINES))
"""About 150 KB of valid Python (comments), read in chunks over and over."""
SUMMARY = {"content": "Read pkg/big.py in chunks of 100 lines; nothing edited yet."}
SUMMARISER = SUMMARISE_SYSTEM[:60]
CHUNK = 100
PLAN = plan(unit("long", ["pkg/a.py"]))
"""Answered by match, not a script: a planner call retried on a loaded machine asks again."""


def read(start: int) -> tuple[str, dict[str, Any]]:
    first = start % BIG_LINES + 1
    return "read_file", {"path": "pkg/big.py", "start": first, "end": first + CHUNK - 1}


def session(turns: int, per_turn: int) -> tuple[list[dict[str, Any]], int]:
    """``turns`` model answers of ``per_turn`` calls each, reading the big file round and
    round, every fourth turn editing ``pkg/a.py`` (``return 1`` and ``return 2`` in turn)
    and every fourth checking it, as a unit does between reads; then ``return 2``, a check,
    finish. With the tool calls they make."""
    answers, value, calls = [], 1, 0
    for t in range(turns - 3):
        reads = [read((t * per_turn + i) * CHUNK) for i in range(per_turn)]
        if t % 4 == 0:
            reads[-1] = edit("pkg/a.py", f"return {value}", f"return {3 - value}")
            value = 3 - value
        elif t % 4 == 2:
            reads[-1] = CHECK
        answers.append(tools(*reads))
        calls += per_turn
    last = edit("pkg/a.py", f"return {value}", "return 2") if value == 1 else CHECK
    return [*answers, tools(last), tools(CHECK), tools(FINISH)], calls + 2


async def unit_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of the workflow, oldest first."""
    runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    histories = [
        await client.get_workflow_handle(workflow_id, run_id=run).fetch_history() for run in runs
    ]
    return sorted(histories, key=lambda h: h.events[0].event_time.ToNanoseconds())


LEDGER_EVENTS = (
    "signal_external_workflow_execution_initiated_event_attributes",
    "external_workflow_execution_signaled_event_attributes",
    "workflow_execution_signaled_event_attributes",
)
"""The budget ledger's reserve, grant and settle signals (three per model call)."""


def measure(histories: list[WorkflowHistory]) -> tuple[int, int, int]:
    """(bytes of history, bytes of it the ledger's signals take, tool steps) over all runs."""
    events = [e for h in histories for e in h.events]
    size = sum(e.ByteSize() for e in events)
    ledger = sum(e.ByteSize() for e in events if e.WhichOneof("attributes") in LEDGER_EVENTS)
    return size, ledger, sum(tool_steps(e) for e in events)


def tool_steps(e: HistoryEvent) -> int:
    """1 if ``e`` records a tool step: its activity scheduled, or its local activity's marker
    (read, search, list and edit run as local activities)."""
    if e.HasField("activity_task_scheduled_event_attributes"):
        return e.activity_task_scheduled_event_attributes.activity_type.name == "agent.tool"
    local = local_activity(e)
    return local is not None and local.activity == "agent.tool"


@pytest.mark.slow
@pytest.mark.fake_llm(match={SUMMARISER: SUMMARY, PLANNER_MARKER: PLAN})
async def test_a_300_turn_unit_keeps_every_run_bounded_and_succeeds(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """310 turns of four calls, mostly reads of a 150 KB file: the model compacts the
    conversation (requests stay under the threshold), the unit continues as new (no run passes
    its event bound), a tool call costs at most 2 KB of history over all runs, the job
    publishes the unit's edit, and the parent's ledger counted what the unit reports."""
    turns, per_turn = 310, 4
    repo_files = {**FILES, "pkg/big.py": BIG}
    repo = make_repo(tmp_path / "repo", repo_files)
    answers, tool_calls = session(turns, per_turn)
    fake.push_thread(unit_marker("long"), *answers)
    limits = AgentLimits(
        parallel=1, turns=turns + 5, context_window=96_000, context_threshold=0.5, run_events=2000
    )
    inp = job(repo, fake, test_cmd=None, limits=limits, budget=BudgetLimits(total=50_000_000))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, inp)
        result = await asyncio.wait_for(handle.result(), 540)
        described = await handle.describe()
    assert result.outcome == "succeeded"
    assert result.files_changed == ("pkg/a.py",)
    assert "return 2" in git(repo, "show", f"{result.branch}:pkg/a.py")
    [u] = result.units
    assert (u.turns, u.tool_calls) == (turns, tool_calls)
    assert sum(s.calls for s in u.tools) == tool_calls  # the stats went on across the runs
    # The parent's ledger saw every settlement of every run once, nothing held back or doubled.
    assert described.typed_search_attributes.get(attributes.TOKENS) == result.usage.total

    histories = await unit_histories(client, f"{handle.id}/unit-long-1")
    assert len(histories) >= 2, "the unit never continued as new"
    for h in histories:
        assert len(h.events) <= limits.run_events + 60, len(h.events)
    size, ledger, calls = measure(histories)
    assert calls == u.tool_calls
    print(
        f"\n{len(histories)} runs, {size} bytes of history, {size / calls:.0f} per tool call, "
        f"{(size - ledger) / calls:.0f} without the ledger's signals"
    )
    assert size / calls <= 2048, f"{size / calls:.0f} bytes per tool call"

    unit_requests = [r for r in fake.requests if unit_marker("long") in json.dumps(r.body)]
    summaries = [r for r in fake.requests if SUMMARISER in json.dumps(r.body)]
    assert len(summaries) >= 5
    limit_chars = 4 * 96_000 // 2
    longest = max(len(json.dumps(r.body["messages"])) for r in unit_requests)
    assert longest <= limit_chars + 4 * CHUNK * 80, longest
    assert any(SUMMARY_PREFIX in json.dumps(r.body) for r in unit_requests)


@pytest.mark.fake_llm(match={SUMMARISER: SUMMARY, PLANNER_MARKER: PLAN})
async def test_a_context_length_error_is_compacted_by_the_model_and_called_again(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The provider refuses the fifth turn as too long: the unit has the model summarise its
    oldest turns (their tool calls with their results) and asks again once, with the summary
    in place of them; the job succeeds."""
    repo = make_repo(tmp_path / "repo", {**FILES, "pkg/big.py": BIG})
    fake.push_thread(
        unit_marker("long"),
        *(tools(read(i * CHUNK)) for i in range(4)),
        {"error": "context_length"},
        tools(edit("pkg/a.py", "return 1", "return 2")),
        tools(CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None))
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "succeeded"
    unit_requests = [r for r in fake.requests if unit_marker("long") in json.dumps(r.body)]
    refused, retried = unit_requests[4], unit_requests[5]
    assert len(json.dumps(retried.body["messages"])) < len(json.dumps(refused.body["messages"]))
    assert SUMMARY_PREFIX in json.dumps(retried.body["messages"])
    assert SUMMARY["content"] in json.dumps(retried.body["messages"])
    assert sum(SUMMARISER in json.dumps(r.body) for r in fake.requests) == 1
    # Every tool result still follows the call it answers.
    messages = retried.body["messages"]
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            callers = [x for x in messages[:i] if x.get("tool_calls")]
            ids = {c["id"] for x in callers for c in x["tool_calls"]}
            assert m["tool_call_id"] in ids
