"""The call graph of a real job, read back from its histories: every workflow and activity
it called, repeated calls counted, retries and failures marked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from agentparallels import callgraph, worker
from agentparallels.core.models import Limits, ModelEdit, RefactorInput, RenameEdit
from agentparallels.testing.fake_llm import FakeLLM
from tests.looping_workflow import LoopingWorkflow, step
from tests.support.cli import run_cli_async
from tests.support.repos import make_repo, src_layout_repo, start_job
from tests.test_model_refactor import FILES


async def test_graph_of_a_finished_job(client: Client, task_queue: str, tmp_path: Path) -> None:
    """A rename over three modules: the graph has the plan, one child per shard with its edit
    steps, the merge, the test run and the publish step, numbered in the order they ran;
    `agentparallels graph` prints it and `status --graph` adds it to the report."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
        test_cmd="test -f pyproject.toml",
        limits=Limits(max_files_per_shard=2),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(handle.result(), 60)

    flow = await callgraph.load(client, handle.id)
    assert (flow.workflow_type, flow.status) == ("RefactorWorkflow", "completed")
    calls = [(c.activity, c.summary, c.count) for c in flow.calls]
    assert calls[0] == ("refactor.plan", "plan: list the files to change", 1)
    assert calls[1][0] == "progress.open"
    logged = [c for c in calls[2:] if c[0] == "progress.shard_done"]  # one per finished shard
    assert len(logged) == 3
    steps = [c for c in calls[2:] if c not in logged]
    # A rename's checks that read only its tree vote on the plan's change set at once (in any
    # order); then the merge; the conflicts vote and the result check on it; publish (which
    # also cleans up).
    assert sorted(c[1] for c in steps[:3]) == [
        "vote: diff-size",
        "vote: lint",
        "vote: tests `test -f pyproject.toml`",
    ]
    assert steps[3][0] == "git.merge"
    assert sorted(c[1] for c in steps[4:6]) == [
        "check the result against every shard's verified head and the change set the checks "
        "voted on",
        "vote: conflicts",
    ]
    assert [c[0] for c in steps[6:]] == ["git.publish"]
    shards = [child for _, child in flow.children]
    assert len(shards) == 3
    assert {s.workflow_id.split("/", 1)[1] for s in shards} == {
        "00-src-pkg",
        "01-src-pkg-shop",
        "02-tests",
    }
    assert all(s.workflow_type == "ShardWorkflow" and s.status == "completed" for s in shards)
    assert all(
        [c.activity for c in s.calls] == ["refactor.edit_files"] and not s.calls[0].failed
        for s in shards
    )
    orders = [o for o, _ in flow.children]
    merge = next(c for c in flow.calls if c.activity == "git.merge")
    # plan, log, three early votes, shards, their records, merge
    assert orders == [6, 7, 8] and merge.order == 12

    text = callgraph.mermaid(flow)
    assert text.startswith("flowchart TD\n")
    assert '"refactor.plan<br/>plan: list the files to change"' in text
    assert "class" in text and "failed" not in text.split("classDef retried")[1]

    printed = await run_cli_async("graph", handle.id, address=client, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == text
    report = await run_cli_async("status", handle.id, "--graph", address=client, timeout=60)
    assert report.returncode == 0, report.stderr
    assert f"job {handle.id} succeeded" in report.stdout
    assert (
        f"Call graph of {handle.id} (completed): 3 child workflows, 15 activity calls, 0 failed"
        in report.stdout
    )
    assert "```mermaid\nflowchart TD\n" in report.stdout

    missing = await run_cli_async("graph", "no-such-job", address=client, timeout=60)
    assert missing.returncode == 2 and "no job no-such-job" in missing.stderr


@pytest.mark.fake_llm([{"status": 500, "retry_after_ms": 10}, {"error": "unauthorized"}])
async def test_failed_and_retried_calls_are_marked(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """A model call retried after a 500 and then refused (401): the call is drawn failed, with
    its error and the retry; the shard and the job are marked failed; the rollback is shown."""
    repo = make_repo(tmp_path / "repo", FILES)
    job = RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="rename",
            files=("pkg/a.py",),
            model="openai:fake-coder",
            base_url=fake.openai_base_url,
        ),
        limits=Limits(parallel=1),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)

    flow = await callgraph.load(client, handle.id)
    assert flow.status == "failed" and "401" in flow.error
    (shard,) = [child for _, child in flow.children]
    assert shard.status == "failed"
    llm = next(c for c in shard.calls if c.activity == "llm.call")
    assert (llm.count, llm.failed, llm.retries) == (1, 1, 1)
    assert llm.summary == "edit pkg/a.py · openai:fake-coder"
    assert "401 from the model provider" in llm.error
    assert {"git.set_ref", "git.remove_worktree"} <= {c.activity for c in shard.calls}  # undo
    assert [c.activity for c in flow.calls] == ["refactor.plan", "progress.open", "git.cleanup"]

    text = callgraph.mermaid(flow)
    llm_line = next(line for line in text.splitlines() if "llm.call" in line)
    node = llm_line.split("[", 1)[0].strip()
    assert "✗ 1 failed: 401 from the model provider" in llm_line
    assert "↻ 1 retried" in llm_line
    assert f"  class {node} failed" in text.splitlines()
    summary = callgraph.markdown(flow).splitlines()[0]
    assert summary.endswith("1 child workflow, 6 activity calls, 2 failed"), summary


async def test_runs_of_a_continued_workflow_are_one_node(client: Client, task_queue: str) -> None:
    """A workflow that continued as new twice: its graph, loaded from any of its runs, counts
    the calls of all three runs and says so."""
    async with Worker(
        client, task_queue=task_queue, workflows=[LoopingWorkflow], activities=[step]
    ):
        handle = await client.start_workflow(
            LoopingWorkflow.run, 0, id=f"loop-{task_queue}", task_queue=task_queue
        )
        assert await asyncio.wait_for(handle.result(), 30) == 2
    first_run = handle.first_execution_run_id
    for run_id in (None, first_run):
        flow = await callgraph.load(client, handle.id, run_id)
        assert (flow.runs, flow.status) == (3, "completed")
        assert [(c.activity, c.summary, c.count) for c in flow.calls] == [
            ("test.step", "one step", 3)
        ]
    assert '<br/>3 runs, completed"]]' in callgraph.mermaid(flow)
    assert '-->|"1 ×3"|' in callgraph.mermaid(flow)


def test_labels_are_escaped() -> None:
    """Quotes, angle brackets and hashes in summaries cannot break the Mermaid source."""
    flow = callgraph.Flow(workflow_id="j", workflow_type="W", status="completed")
    flow.calls.append(callgraph.Call("x", 'run "a" <b> #1', order=1, count=1))
    text = callgraph.mermaid(flow)
    assert "run #quot;a#quot; #lt;b#gt; #35;1" in text
