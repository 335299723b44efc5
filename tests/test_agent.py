"""The coding agent's job against a scripted model server on loopback: planning, units with
tools, the breaker, loop detection, scope, the JSON fallback, cancel and rollback.

The model server speaks the providers' real tool-calling wire formats; every tool is a real
step on a real worker (git, ruff, the sandbox)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from agentparallels import worker
from agentparallels.core import names
from agentparallels.core.agentjob import (
    PLANNER_MARKER,
    AgentInput,
    AgentLimits,
    AgentResult,
    unit_marker,
)
from agentparallels.core.attributes import TOKENS
from agentparallels.core.errors import BREAKER_OPEN, ITERATION_CAP, LOOP_DETECTED, PLAN_INVALID
from agentparallels.core.llm import ModelAnswer
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import (
    CHECK,
    FILES,
    FINISH,
    MODEL,
    TESTS,
    edit,
    plan,
    rename_script,
    tools,
    unit,
)
from tests.support.repos import commits_touching, git, make_repo, snapshot
from tests.support.workers import WorkerProcess


def job(repo: Path, fake: FakeLLM, **overrides: Any) -> AgentInput:
    values: dict[str, Any] = {
        "repository": str(repo),
        "task": "rename old_name to new_name everywhere and add a test of use()",
        "model": MODEL,
        "base_url": fake.openai_base_url,
        "files": ("pkg/*.py", "tests/*.py"),
        "test_cmd": TESTS,
        "limits": AgentLimits(parallel=2, turns=12),
    }
    return AgentInput(**{**values, **overrides})


async def start(client: Client, task_queue: str, inp: AgentInput) -> WorkflowHandle:
    return await client.start_workflow(
        names.AGENT,
        inp,
        id=f"agent-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=AgentResult,
    )


async def test_a_three_unit_task_ends_with_a_tested_branch(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Plan, three units in dependency order with real tools, merge, checks, publish: the
    branch holds every edit and its tests pass; the user's checkout is untouched; no scratch
    ref is left; each edit is one checkpoint commit."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    rename_script(fake)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake))
        result = await asyncio.wait_for(handle.result(), 240)
    assert result.outcome == "succeeded"
    assert result.files_changed == ("pkg/a.py", "pkg/b.py", "tests/test_a.py", "tests/test_b.py")
    branch = result.branch
    assert branch and "def new_name()" in git(repo, "show", f"{branch}:pkg/a.py")
    assert "return new_name() + 1" in git(repo, "show", f"{branch}:pkg/b.py")
    assert [u.name for u in result.units] == ["rename", "callers", "new-test"]
    assert all(len(u.summary) <= 1000 for u in result.units)
    edits = git(repo, "log", "--format=%s", f"{result.base_commit}..{branch}", "--no-merges")
    assert len(edits.splitlines()) == 6, edits  # one checkpoint commit per edit, none twice
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    after = snapshot(repo)
    new_refs = set(after["refs"].splitlines()) - set(before["refs"].splitlines())
    assert new_refs == {f"refs/heads/{branch} {result.head}"}
    assert {k: v for k, v in after.items() if k != "refs"} == {
        k: v for k, v in before.items() if k != "refs"
    }
    assert any(c.passed and "pytest" in c.command for c in result.checks)


async def failure_of(handle: WorkflowHandle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(handle.result(), 240)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def test_an_invalid_plan_is_sent_back_with_its_errors_then_refused(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    outside = plan(unit("a", ["setup.py"]))
    fake.push_thread(PLANNER_MARKER, outside, outside, outside)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        error = await failure_of(await start(client, task_queue, job(repo, fake)))
    assert error.type == PLAN_INVALID
    assert "setup.py is outside the files the job may change" in error.message
    planner = [r for r in fake.requests if PLANNER_MARKER in json.dumps(r.body)]
    assert len(planner) == 3
    assert "The plan is invalid" in json.dumps(planner[1].body["messages"][-1])
    assert snapshot(repo) == before


async def test_a_unit_that_keeps_failing_its_check_trips_the_breaker_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "return 1", "return (1")),
        tools(CHECK),
        tools(edit("pkg/a.py", "return (1", "return ((1")),
        tools(CHECK),
        tools(edit("pkg/a.py", "return ((1", "return (((1")),
        tools(CHECK),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake))
        error = await failure_of(handle)
    assert error.type == BREAKER_OPEN
    assert "unit rename: 3 consecutive failed checks" in error.message
    assert "pkg/a.py" in error.message
    assert snapshot(repo) == before
    # The failed unit settled what its calls spent on its credit: the job counted them all.
    unit_handle = client.get_workflow_handle(f"{handle.id}/unit-rename-1")
    spent = await tokens_of(client, handle) + await tokens_of(client, unit_handle)
    described = await handle.describe()
    assert described.typed_search_attributes.get(TOKENS) == spent > 0


async def tokens_of(client: Client, handle: WorkflowHandle) -> int:
    """Tokens the model calls of one workflow used, from their recorded answers."""
    scheduled, total = set(), 0
    async for e in handle.fetch_history_events():
        if e.HasField("activity_task_scheduled_event_attributes"):
            if e.activity_task_scheduled_event_attributes.activity_type.name == "llm.call":
                scheduled.add(e.event_id)
        elif e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                [answer] = await client.data_converter.decode(done.result.payloads, [ModelAnswer])
                total += answer.usage.total
    return total


async def test_repeating_one_call_with_no_change_warns_once_then_stops_the_unit(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    same = tools(("read_file", {"path": "pkg/a.py", "start": 1, "end": 2}))
    fake.push_thread(unit_marker("rename"), *[same] * 4)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        error = await failure_of(await start(client, task_queue, job(repo, fake)))
    assert error.type == LOOP_DETECTED
    assert "read_file" in error.message
    unit_calls = [r for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert "Loop warning" in json.dumps(unit_calls[3].body["messages"][-1])
    assert snapshot(repo) == before


async def test_an_edit_outside_the_units_scope_is_refused_to_the_model(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/b.py", "old_name() + 1", "old_name() + 2")),
        tools(edit("pkg/a.py", "return 1", "return 1  # same")),
        tools(CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None))
        result = await asyncio.wait_for(handle.result(), 240)
    assert result.files_changed == ("pkg/a.py",)
    assert git(repo, "show", f"{result.branch}:pkg/b.py") == FILES["pkg/b.py"].rstrip("\n")
    replies = [r for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    refusal = json.dumps(replies[1].body["messages"][-1])
    assert "scope" in refusal and "pkg/b.py" in refusal


async def test_a_model_without_tool_calling_works_through_json_actions(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """``tool_format=json``: no tools are sent; the model answers with a JSON action in its
    text, a malformed one gets its error back, and the job still succeeds."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))

    def action(name: str, **arguments: Any) -> dict[str, Any]:
        return {
            "content": "```json\n" + json.dumps({"tool": name, "arguments": arguments}) + "\n```"
        }

    fake.push_thread(
        unit_marker("rename"),
        {"content": "I will now edit the file."},
        action("edit_file", path="pkg/a.py", old="return 1", new="return 1  # renamed"),
        action("run_check"),
        action("finish", summary="edited"),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, tool_format="json")
        result = await asyncio.wait_for((await start(client, task_queue, inp)).result(), 240)
    assert result.files_changed == ("pkg/a.py",)
    unit_calls = [r.body for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert all("tools" not in body for body in unit_calls)
    assert '{"tool": "<tool name>"' in unit_calls[0]["messages"][0]["content"]  # instructions
    assert "JSON object" in json.dumps(unit_calls[1]["messages"][-1])  # the prose's error


async def test_cancel_mid_run_leaves_the_repository_as_it_was(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "def old_name()", "def new_name()")),
        {"content": "thinking", "delay_ms": 60_000},
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake))
        async with asyncio.timeout(120):
            while "refs/agentparallels" not in git(repo, "for-each-ref"):  # noqa: ASYNC110 - the checkpoint commit, seen in the repository
                await asyncio.sleep(0.1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 120)
    assert snapshot(repo) == before


@pytest.mark.slow
async def test_a_unit_whose_worker_is_killed_finishes_on_a_worker_with_another_disk(
    client: Client, address: str, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """SIGKILL the worker while its unit waits for the model, after its first edit was
    committed; a worker with its own empty HOME and caches resumes the unit from that
    checkpoint (read from the job's repository) and the job succeeds with each edit committed
    once."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py", "pkg/b.py"])))
    second_edit = edit("pkg/b.py", "return old_name() + 1", "return old_name() + 2")
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "return 1", "return 1  # checked")),
        {**tools(second_edit), "delay_ms": 20_000},  # the killed worker's call
        tools(second_edit),  # its retry on the other worker
        tools(CHECK),
        tools(FINISH),
    )
    env = {**os.environ, "TEMPORAL_ADDRESS": address}
    first = await WorkerProcess.own_machine(tmp_path / "w1", task_queue, env).polling()
    second = None
    try:
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None))
        marker = unit_marker("rename")
        async with asyncio.timeout(120):
            while sum(marker in json.dumps(r.body) for r in fake.requests) < 2:  # noqa: ASYNC110 - the delayed call has reached the server
                await asyncio.sleep(0.05)
        first.kill()
        second = await WorkerProcess.own_machine(tmp_path / "w2", task_queue, env).polling()
        result = await asyncio.wait_for(handle.result(), 180)
    finally:
        first.stop()
        if second:
            second.stop()
    assert result.files_changed == ("pkg/a.py", "pkg/b.py")
    assert "old_name() + 2" in git(repo, "show", f"{result.branch}:pkg/b.py")
    for path in result.files_changed:
        assert commits_touching(repo, result.branch or "", path) == 1, path
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""


async def test_failing_tests_on_the_merge_get_one_repair_unit(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The units pass their own checks but forget a caller: the tests fail on the merged
    result, and a repair unit, given their output, fixes it before anything is published."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(
        PLANNER_MARKER,
        plan(unit("rename", ["pkg/a.py", "pkg/b.py"]), unit("tests", ["tests/test_a.py"])),
    )
    fake.push_thread(
        unit_marker("rename"),
        tools(
            edit("pkg/a.py", "def old_name()", "def new_name()"),
            edit("pkg/b.py", "import old_name", "import new_name"),
            edit("pkg/b.py", "return old_name()", "return new_name()"),
        ),
        tools(CHECK),
        tools(FINISH),
    )
    fake.push_thread(unit_marker("tests"), tools(FINISH))  # forgets its one job
    fake.push_thread(
        unit_marker("repair"),
        tools(edit("tests/test_a.py", "import old_name", "import new_name")),
        tools(edit("tests/test_a.py", "assert old_name()", "assert new_name()")),
        tools(("run_tests", {})),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake))
        result = await asyncio.wait_for(handle.result(), 240)
    assert [u.name for u in result.units] == ["rename", "tests", "repair"]
    assert "tests/test_a.py" in result.files_changed
    repair = [r for r in fake.requests if unit_marker("repair") in json.dumps(r.body)]
    assert "failed" in json.dumps(repair[0].body["messages"][1]).lower()
    assert "assert new_name()" in git(repo, "show", f"{result.branch}:tests/test_a.py")


async def test_units_run_on_the_queue_of_a_worker_advertising_their_capability(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """A docs unit goes to ``<queue>.docs``, which the worker polls as it advertises docs; a
    python unit, with no worker advertising python, runs on the job's own queue."""
    repo = make_repo(tmp_path / "repo", {**FILES, "README.md": "# pkg\n"})
    fake.push_thread(
        PLANNER_MARKER,
        plan(unit("code", ["pkg/a.py"]), {**unit("docs", ["README.md"]), "capability": "docs"}),
    )
    fake.push_thread(unit_marker("code"), tools(FINISH))
    fake.push_thread(unit_marker("docs"), tools(FINISH))
    docs = worker.WorkerOptions(task_queue=task_queue, capabilities=("docs",))
    async with worker.build_worker(client, docs):
        inp = job(repo, fake, test_cmd=None, files=("pkg/*.py", "README.md"))
        handle = await start(client, task_queue, inp)
        result = await asyncio.wait_for(handle.result(), 240)
    assert result.outcome == "no_changes"
    queues = {}
    for name in ("code", "docs"):
        child = client.get_workflow_handle(f"{handle.id}/unit-{name}-1")
        queues[name] = (await child.describe()).task_queue
    assert queues == {"code": task_queue, "docs": f"{task_queue}.docs"}


async def test_anthropic_tool_use_drives_a_unit(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "return 1", "return 1  # via tool_use")),
        tools(CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, model="anthropic:fake-claude", base_url=fake.url)
        result = await asyncio.wait_for((await start(client, task_queue, inp)).result(), 240)
    assert result.files_changed == ("pkg/a.py",)
    unit_calls = [r.body for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert unit_calls[0]["tools"][0]["input_schema"]["type"] == "object"
    assert any(b.get("type") == "tool_result" for b in unit_calls[1]["messages"][-1]["content"])


async def test_a_model_that_only_answers_malformed_calls_is_stopped_by_its_turn_limit(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Each malformed call gets its error back and costs a turn: the unit ends at its limit
    with a clear refusal, and the repository is as it was."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    garbled = {"tool_calls": [{"name": "edit_file", "arguments": '{"path": "pkg/a.py", '}]}
    fake.push_thread(unit_marker("rename"), *[garbled] * 3)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, limits=AgentLimits(turns=3))
        error = await failure_of(await start(client, task_queue, inp))
    assert error.type == ITERATION_CAP
    assert "unit rename used all its 3 turns" in error.message
    unit_calls = [r for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert len(unit_calls) == 3
    assert "not valid JSON" in json.dumps(unit_calls[1].body["messages"][-1])
    assert snapshot(repo) == before


async def test_budget_tokens_is_a_hard_cap_and_the_job_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The whole job's tokens, planner and units together, stop at the budget: the unit's
    next call is held, then refused at the budget timeout before it is made, and nothing is
    left behind."""
    from agentparallels.core.errors import BUDGET_EXCEEDED
    from agentparallels.core.llm import BudgetLimits

    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        *[tools(("read_file", {"path": "pkg/a.py", "start": n, "end": n})) for n in (1, 2)],
    )
    limits = AgentLimits(max_tokens=1000, budget_timeout_s=1)
    budget = BudgetLimits(total=1500, shares={})
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, limits=limits, budget=budget)
        error = await failure_of(await start(client, task_queue, inp))
    assert error.type == BUDGET_EXCEEDED
    assert snapshot(repo) == before
    assert sum(unit_marker("rename") in json.dumps(r.body) for r in fake.requests) < 2


async def test_finish_after_a_failed_call_in_the_same_answer_is_not_taken(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """[malformed edit, finish]: the finish is refused (the edit was lost), and the unit goes
    on until its edit is made and a finish comes alone."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    garbled = {"name": "edit_file", "arguments": '{"path": "pkg/a.py"'}
    fake.push_thread(
        unit_marker("rename"),
        {"tool_calls": [garbled, {"name": "finish", "arguments": {"summary": "too soon"}}]},
        tools(edit("pkg/a.py", "return 1", "return 1  # done"), CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None)
        result = await asyncio.wait_for((await start(client, task_queue, inp)).result(), 240)
    assert result.files_changed == ("pkg/a.py",)
    assert result.units[0].summary == "done"
    unit_calls = [r for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert "Not finished" in json.dumps(unit_calls[1].body["messages"][-1])


async def test_a_unit_whose_head_conflicts_runs_again_on_top_of_the_merged_work(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Two independent units with different files can still conflict: one makes a file
    where the other makes a folder. The later one runs again, once, from what merged before
    it, told why; here it then changes nothing, and the job publishes the first's work."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("a", ["pkg/util"]), unit("b", ["pkg/util/x.py"])))
    fake.push_thread(
        unit_marker("a"),
        tools(("write_file", {"path": "pkg/util", "content": "a file\n"})),
        tools(FINISH),
        tools(FINISH),  # after the nudge to run a check
    )
    fake.push_thread(
        unit_marker("b"),
        tools(("write_file", {"path": "pkg/util/x.py", "content": "X = 1\n"}), CHECK),
        tools(FINISH),
        # Its second attempt, on top of a's file:
        tools(("write_file", {"path": "pkg/util/x.py", "content": "X = 1\n"})),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, files=("pkg/**",))
        handle = await start(client, task_queue, inp)
        result = await asyncio.wait_for(handle.result(), 240)
    assert result.files_changed == ("pkg/util",)
    b_calls = [r for r in fake.requests if unit_marker("b") in json.dumps(r.body)]
    assert "conflicted with the other units' work" in json.dumps(b_calls[2].body["messages"])
    assert "a file stands where its folder would be" in json.dumps(b_calls[3].body["messages"])
    second = await client.get_workflow_handle(f"{handle.id}/unit-b-2").describe()
    assert second.status is not None


async def test_the_check_command_votes_on_the_merge_and_its_failure_gets_the_repair_unit(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "return 1", "return 1  # done")),
        tools(FINISH),
        tools(FINISH),  # after the nudge to run a check
    )
    fake.push_thread(
        unit_marker("repair"),
        tools(edit("pkg/a.py", "# done", "# done, checked")),
        tools(CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, check_cmd="grep -q checked {file}")
        result = await asyncio.wait_for((await start(client, task_queue, inp)).result(), 240)
    assert [u.name for u in result.units] == ["rename", "repair"]
    repair = [r for r in fake.requests if unit_marker("repair") in json.dumps(r.body)]
    assert "check command `grep -q checked ./pkg/a.py` failed" in json.dumps(repair[0].body)
    assert any(c.command == "check: grep -q checked ./pkg/a.py" for c in result.checks)
