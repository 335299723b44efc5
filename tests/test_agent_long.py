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
from temporalio.client import Client, WorkflowHistory

from agentparallels import worker
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


def session(turns: int, per_turn: int) -> list[dict[str, Any]]:
    """``turns`` model answers: read the big file ``per_turn`` chunks at a time, round and
    round; then edit, check, finish."""
    answers = [
        tools(*(read((t * per_turn + i) * CHUNK) for i in range(per_turn)))
        for t in range(turns - 3)
    ]
    return [*answers, tools(edit("pkg/a.py", "return 1", "return 2")), tools(CHECK), tools(FINISH)]


async def unit_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of the workflow, oldest first."""
    runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    histories = [
        await client.get_workflow_handle(workflow_id, run_id=run).fetch_history() for run in runs
    ]
    return sorted(histories, key=lambda h: h.events[0].event_time.ToNanoseconds())


def measure(histories: list[WorkflowHistory]) -> tuple[int, int]:
    """(bytes of history, tool steps) over all runs."""
    size = sum(e.ByteSize() for h in histories for e in h.events)
    calls = sum(
        1
        for h in histories
        for e in h.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "agent.tool"
    )
    return size, calls


@pytest.mark.slow
@pytest.mark.fake_llm(match={SUMMARISER: SUMMARY, PLANNER_MARKER: PLAN})
async def test_a_300_turn_unit_keeps_every_run_bounded_and_succeeds(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """310 turns of three reads of a 150 KB file: the conversation is compacted by the model
    (requests stay under the threshold), the unit continues as new (no run passes its event
    bound), every tool call costs at most 2 KB of history across all runs, the job publishes
    the unit's edit, and the parent's ledger counted exactly what the unit reports."""
    turns, per_turn = 310, 3
    repo_files = {**FILES, "pkg/big.py": BIG}
    repo = make_repo(tmp_path / "repo", repo_files)
    fake.push_thread(unit_marker("long"), *session(turns, per_turn))
    limits = AgentLimits(
        parallel=1, turns=turns + 5, context_window=48_000, context_threshold=0.5, run_events=2000
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
    assert (u.turns, u.tool_calls) == (turns, (turns - 3) * per_turn + 2)
    # The parent's ledger saw every settlement of every run once, nothing held back or doubled.
    assert described.typed_search_attributes.get(attributes.TOKENS) == result.usage.total

    histories = await unit_histories(client, f"{handle.id}/unit-long-1")
    assert len(histories) >= 2, "the unit never continued as new"
    for h in histories:
        assert len(h.events) <= limits.run_events + 60, len(h.events)
    size, calls = measure(histories)
    assert calls == u.tool_calls
    print(f"\n{len(histories)} runs, {size} bytes of history, {size / calls:.0f} per tool call")
    assert size / calls <= 2048, f"{size / calls:.0f} bytes of history per tool call"

    unit_requests = [r for r in fake.requests if unit_marker("long") in json.dumps(r.body)]
    summaries = [r for r in fake.requests if SUMMARISER in json.dumps(r.body)]
    assert len(summaries) >= 5
    limit_chars = 4 * 48_000 // 2
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
