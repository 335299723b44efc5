"""Watching agent jobs: the call graph by unit and tool, and the per-repository baseline that
flags a tool call never seen before or far slower than the repository's past jobs made it.

Real jobs on a real worker against the scripted model server; the baseline is read through
visibility from the first job's result, as ``agentparallels agent`` reads it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle

from agentparallels import baselines, callgraph, ops, validate, worker
from agentparallels.core import attributes, names
from agentparallels.core.agentjob import PLANNER_MARKER, AgentInput, AgentResult, unit_marker
from agentparallels.core.baseline import Baseline
from agentparallels.core.events import EVENTS_QUERY, EventPage
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import CHECK, FILES, FINISH, edit, plan, tools, unit
from tests.support.cli import run_cli_async
from tests.support.repos import make_repo
from tests.test_agent import job

KIND = "agent"
SLOW = 8
"""Seconds the second job's tests sleep: past 3x the first job's p95 (a `sh` that does
nothing) even on a loaded machine."""
TESTS = f"sh -c 'if [ -f pkg/slow.py ]; then sleep {SLOW}; fi'"


async def start(client: Client, task_queue: str, inp: AgentInput) -> WorkflowHandle:
    """As ``agentparallels agent`` starts a job: with its kind and repository as search
    attributes, which is how the next job finds it."""
    shown = attributes.shown(inp.repository)
    return await client.start_workflow(
        names.AGENT,
        inp,
        id=f"agent-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=AgentResult,
        search_attributes=attributes.queued(KIND, shown),
    )


def first_job_script(fake: FakeLLM) -> None:
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(("read_file", {"path": "pkg/a.py"})),
        tools(edit("pkg/a.py", "return 1", "return 1  # checked")),
        tools(edit("pkg/a.py", "no such text", "x")),  # refused: a call that is not ok
        tools(CHECK, ("run_tests", {})),
        tools(FINISH),
    )


async def test_graph_of_a_finished_agent_job_shows_units_and_tool_calls(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """`agentparallels graph` of an agent job: the unit's child workflow, its tool steps
    counted per tool (the refused edit among the edits, marked not ok), its model turns as
    one node, and the job's tokens and baseline."""
    repo = Path(validate.repository(str(make_repo(tmp_path / "repo", FILES))))
    first_job_script(fake)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=TESTS))
        await asyncio.wait_for(handle.result(), 240)

    flow = await ops.graph_of(client, handle.id)
    (unit_flow,) = [f for _, f in flow.children]
    assert unit_flow.workflow_type == names.AGENT_UNIT
    tools_drawn = {c.summary: c for c in unit_flow.calls if c.activity == names.AGENT_TOOL}
    assert {k: c.count for k, c in tools_drawn.items()} == {
        "read_file": 1,
        "edit_file": 2,
        "run_check": 1,
        "run_tests": 1,
    }
    assert "1 not ok" in tools_drawn["edit_file"].notes
    assert any(n.startswith("p95 ") for n in tools_drawn["run_tests"].notes)
    (turns,) = [c for c in unit_flow.calls if c.activity == names.CALL_MODEL]
    assert turns.count == 5 and turns.summary.startswith("model turns")
    assert any("5 turns, 5 tool calls" in n for n in unit_flow.notes)
    assert "no baseline (first agent job on this repository)" in flow.notes

    text = callgraph.mermaid(flow)
    assert '"agent.tool<br/>edit_file<br/>1 not ok' in text
    printed = await run_cli_async("graph", handle.id, address=client, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == text


async def baseline_of(client: Client, repo: Path) -> Baseline:
    """The repository's baseline, once visibility lists the finished job."""
    async with asyncio.timeout(60):
        while True:
            found, _ = await baselines.of_repository(client, str(repo), kind=KIND)
            if found is not None:
                return found
            await asyncio.sleep(0.2)


async def test_a_second_job_flags_a_call_with_no_baseline_and_a_slow_one(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The first job's result carries its tool calls per (tool, command); the second job on
    the repository gets them as its baseline, and its events flag its `search` (never made
    there) and its test run that now sleeps (far past the first job's p95), as do its result
    and the UI's current details."""
    repo = Path(validate.repository(str(make_repo(tmp_path / "repo", FILES))))
    first_job_script(fake)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        first = await start(client, task_queue, job(repo, fake, test_cmd=TESTS))
        done = await asyncio.wait_for(first.result(), 240)
        assert done.baseline_jobs == 0 and done.flagged == 0
        assert {(s.tool, s.command) for s in done.tool_stats} >= {
            ("read_file", ""),
            ("run_tests", TESTS),
        }

        baseline = await baseline_of(client, repo)
        assert baseline.jobs == 1
        fake.push_thread(PLANNER_MARKER, plan(unit("slow", ["pkg/slow.py"])))
        fake.push_thread(
            unit_marker("slow"),
            tools(("search", {"pattern": "old_name"})),
            tools(("write_file", {"path": "pkg/slow.py", "content": "SLOW = True\n"})),
            tools(("run_tests", {})),
            tools(FINISH),
        )
        inp = job(repo, fake, test_cmd=TESTS, files=("pkg/*.py",), baseline=baseline)
        second = await start(client, task_queue, inp)
        result = await asyncio.wait_for(second.result(), 240)
        page = await second.query(EVENTS_QUERY, 0, result_type=EventPage)
        meta = await second.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)

    flagged = [e.detail for e in page.events if e.kind == "tool_flagged"]
    assert any(d.startswith("search: no baseline, first seen") for d in flagged), flagged
    slow = [d for d in flagged if d.startswith(f"run_tests `{TESTS}`")]
    assert len(slow) == 1 and "far outside its baseline" in slow[0], flagged
    assert not any(d.startswith("read_file") for d in flagged)  # not made: nothing to judge
    assert result.baseline_jobs == 1
    kinds = {(f.tool, f.kind) for f in result.flags}
    assert {("search", "new"), ("write_file", "new"), ("run_tests", "slow")} == kinds
    (tests_flag,) = [f for f in result.flags if f.tool == "run_tests"]
    assert tests_flag.duration_ms >= SLOW * 1000 > (tests_flag.limit_ms or 0)

    assert "baseline: 1 past jobs; 3 calls flagged" in meta.current_details
    assert "run_tests" in meta.current_details


def test_far_means_past_three_times_the_p95_and_a_second_more() -> None:
    """The judge's rule, on its own: no norm is new; a call is slow only past both
    3 x p95 and p95 + 1 s; thinning keeps the shortest, the longest and the percentiles."""
    from agentparallels.core.baseline import ToolStats, baseline_of, judge, percentile, thinned

    fast = ToolStats(tool="read_file", calls=100, durations_ms=tuple(range(1, 101)))
    tests = ToolStats(tool="run_tests", command="pytest", calls=20, durations_ms=(2000,) * 20)
    base = baseline_of([(fast, tests), (tests,)])
    assert base is not None and base.jobs == 2
    norm = base.norm("run_tests", "pytest")
    assert norm is not None and (norm.jobs, norm.calls, norm.p95_ms) == (2, 40, 2000)

    def kind(tool: str, command: str, ms: int) -> str | None:
        flag = judge(base, "u", 1, tool, command, ms, True)
        return flag.kind if flag else None

    assert kind("search", "", 1) == "new"
    assert kind("run_tests", "pytest -x", 1) == "new"  # another command: another baseline
    assert kind("read_file", "", 95 + 1000) is None  # 3 x 95 ms, but within p95 + 1 s
    assert kind("read_file", "", 95 + 1001) == "slow"
    assert kind("run_tests", "pytest", 6000) is None
    assert kind("run_tests", "pytest", 6001) == "slow"
    kept = thinned(range(1000), 16)
    assert len(kept) == 16 and kept[0] == 0 and kept[-1] == 999
    assert abs(percentile(kept, 0.95) - 950) < 70
