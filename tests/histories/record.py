"""Record the histories that tests/test_replay.py replays: run from the project root with
``.venv/bin/python -m tests.histories.record [GROUP ...]`` after an intended change to workflow
code (and add ``workflow.patched`` where running jobs must keep replaying). Groups: refactor,
ledger, agent-loop, review, orchestrator, pipeline (default: all). Recording a group overwrites
its files; keep older recordings that exercise a ``workflow.patched`` branch by leaving it out."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentparallels import (
    attributes,
    worker,
)
from agentparallels.agent import AgentLoopInput
from agentparallels.checklist import ApprovalOptions, Decision
from agentparallels.codec import data_converter
from agentparallels.consensus import ReviewInput
from agentparallels.events import Hook
from agentparallels.fake_llm import FakeLLM
from agentparallels.llm import BudgetLimits, Compaction
from agentparallels.models import (
    CommandEdit,
    Limits,
    ModelEdit,
    Progress,
    RefactorInput,
    RenameEdit,
)
from agentparallels.replay import histories_of
from agentparallels.workflows.pipeline import (
    Gate,
    GateInput,
    PipelineInput,
    PipelineWorkflow,
    Stage,
    Verdict,
)
from agentparallels.workflows.routing import ModelPlanner, OrchestratorInput
from tests.support.repos import git, make_repo, src_layout_repo

HERE = Path(__file__).resolve().parent


async def approve_when_waiting(handle: Any) -> None:
    phase = "awaiting-approval"  # workflow state, seen by query
    while (await handle.query("progress", result_type=Progress)).phase != phase:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await handle.execute_update("approve", Decision(reason="recorded", by="record.py"))


async def pause_then_unpause(handle: Any) -> None:
    """Pause the job as soon as it runs, and let it go once it shows it is paused."""
    await handle.signal("pause")
    while (await handle.query("progress", result_type=Progress)).phase != "paused":  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await handle.signal("unpause")


async def record_review(client: Any, work: Path) -> None:
    """A committee of two reviews a branch."""
    repo = make_repo(work / "e", {"m.py": "X = 1\n"})
    git(repo, "switch", "--quiet", "-c", "feature")
    (repo / "m.py").write_text("X = 2\n")
    git(repo, "commit", "--quiet", "-am", "two")
    vote = '{"approve": true, "reasons": "fine"}'
    with FakeLLM([{"content": vote}] * 2) as fake:
        inp = ReviewInput(repository=str(repo), ref="feature", base="main",
                          models=("openai:fake",), base_url=fake.openai_base_url,
                          reviewers=2, quorum=2)  # fmt: skip
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
            handle = await client.start_workflow(
                "ReviewWorkflow", inp, id="recorded-review", task_queue="record"
            )
            await handle.result()
    history = await handle.fetch_history()
    (HERE / "recorded-review.json").write_text(history.to_json())
    print(f"wrote recorded-review.json ({len(history.events)} events)")


async def save(client: Any, workflow_id: str) -> None:
    """Write the history of ``workflow_id`` and of its children."""
    for history in await histories_of(client, workflow_id):
        target = HERE / f"{history.workflow_id.replace('/', '__')}.json"
        target.write_text(history.to_json())
        print(f"wrote {target.name} ({len(history.events)} events)")


async def record_refactor(client: Any, work: Path) -> None:
    """Refactor jobs: rename, a codemod stopped by the breaker, an approved job, hooks and a
    pause, a model editor."""
    with FakeLLM(
        [{"content": "```python\ndef broken(:\n```"}, {"content": "```python\nX = 2\n```"}]
    ) as fake:
        jobs = {
            "rename": RefactorInput(
                repository=str(src_layout_repo(work / "a")),
                edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
                test_cmd="true",
                limits=Limits(max_files_per_shard=2),
            ),
            "codemod-breaker": RefactorInput(
                repository=str(src_layout_repo(work / "b")),
                edit=CommandEdit(command="exit 1; {file}"),
            ),
            "approved": RefactorInput(
                repository=str(src_layout_repo(work / "d")),
                edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
                test_cmd="true",
                approval=ApprovalOptions(timeout_s=600),
            ),
            "choreography": RefactorInput(
                repository=str(make_repo(work / "f", {"a.py": "A = 1\n", "pkg/b.py": ""})),
                edit=CommandEdit(command="echo '# edited' >> {file}"),
                hooks=(
                    Hook(point="pre-edit", command="true"),
                    Hook(point="post-edit", command='test -n "$AGENTPARALLELS_FILES"'),
                    Hook(point="pre-merge", command="true"),
                ),
                subscribers=("recorded-nobody-listens",),
            ),
            "model": RefactorInput(
                repository=str(make_repo(work / "c", {"m.py": "X = 1\n"})),
                edit=ModelEdit(
                    instruct="make X 2", model="openai:fake", base_url=fake.openai_base_url
                ),
            ),
        }
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
            for name, job in jobs.items():
                handle = await client.start_workflow(
                    "RefactorWorkflow", job, id=f"recorded-{name}", task_queue="record"
                )
                if job.approval is not None:
                    await approve_when_waiting(handle)
                if job.hooks:
                    await pause_then_unpause(handle)
                try:
                    await handle.result()
                except Exception as e:  # the breaker job fails on purpose
                    print(f"{name}: {type(e).__name__}")
                await save(client, handle.id)


async def record_agent_loop(client: Any, work: Path) -> None:
    """An agent loop long enough to compact its conversation (summary calls)."""
    with FakeLLM([], default={"content": "ok " * 20}) as fake:
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
            # An agent loop long enough to compact its conversation (summary calls).
            loop = AgentLoopInput(
                task="say ok",
                model="openai:fake",
                base_url=fake.openai_base_url,
                turns=10,
                compaction=Compaction(window_tokens=300, keep_turns=2, summary_tokens=16),
            )
            handle = await client.start_workflow(
                "AgentLoopWorkflow", loop, id="recorded-agent-loop", task_queue="record"
            )
            await handle.result()
            (HERE / "recorded-agent-loop.json").write_text((await handle.fetch_history()).to_json())
            print("wrote recorded-agent-loop.json")


async def record_orchestrator(client: Any, work: Path) -> None:
    """A model plans two sub-tasks; each runs on the worker advertising its capability."""
    repo = make_repo(work / "g", {"a.py": "A = 1\n", "docs/guide.md": "# Guide\n"})
    plan = {"tasks": [
        {"kind": "refactor", "title": "constants", "input": {
            "repository": str(repo), "edit": {"kind": "command", "command": "sed -i s/A/B/ {file}",
                                               "files": ["a.py"]}}},
        {"kind": "docs", "title": "guide", "input": {
            "repository": str(repo), "edit": {"kind": "command", "command": "echo ok >> {file}",
                                               "files": ["docs/*.md"]}}},
    ]}  # fmt: skip
    with FakeLLM([{"content": json.dumps(plan)}]) as fake:
        options = worker.WorkerOptions(task_queue="record", capabilities=("python", "docs"))
        async with worker.build_worker(client, options):
            inp = OrchestratorInput(
                goal="rename A to B and touch the guide",
                planner=ModelPlanner(model="openai:fake", base_url=fake.openai_base_url),
            )
            handle = await client.start_workflow(
                "OrchestratorWorkflow", inp, id="recorded-orchestrator", task_queue="record"
            )
            await handle.result()
    await save(client, handle.id)


@activity.defn(name="record.shout")
async def shout(text: str) -> str:
    return text.upper()


@activity.defn(name="record.not_empty")
async def not_empty(inp: GateInput) -> Verdict:
    return Verdict(passed=bool(inp.output), reason="" if inp.output else "nothing came out")


async def record_pipeline(client: Any, work: Path) -> None:
    """Two activity stages, each judged by a gate."""
    stages = (
        Stage(name="shout", kind="activity", target="record.shout",
              gate=Gate(activity="record.not_empty")),
        Stage(name="again", kind="activity", target="record.shout",
              gate=Gate(activity="record.not_empty")),
    )  # fmt: skip
    async with Worker(
        client,
        task_queue="record-pipeline",
        workflows=[PipelineWorkflow],
        activities=[shout, not_empty],
    ):
        handle = await client.start_workflow(
            "PipelineWorkflow",
            PipelineInput(stages=stages, input="hello"),
            id="recorded-pipeline",
            task_queue="record-pipeline",
        )
        await handle.result()
    await save(client, handle.id)


async def record_ledger(client: Any, work: Path) -> None:
    """A budgeted model job of two shards: each call reserved from the job's ledger (signals
    both ways) and settled after."""
    files = {"a/x.py": "X = 1\n", "b/y.py": "Y = 1\n"}
    with FakeLLM(default={"content": "```python\nZ = 2\n```"}) as fake:
        job = RefactorInput(
            repository=str(make_repo(work / "ledger", files)),
            edit=ModelEdit(instruct="make it 2", model="openai:fake", base_url=fake.openai_base_url,
                           max_tokens=100, related_tokens=0),
            limits=Limits(max_files_per_shard=1),
            budget=BudgetLimits(total=10_000),
        )  # fmt: skip
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record-ledger")):
            handle = await client.start_workflow(
                "RefactorWorkflow", job, id="recorded-ledger", task_queue="record-ledger"
            )
            await handle.result()
            await save(client, handle.id)


GROUPS = {
    "refactor": record_refactor,
    "ledger": record_ledger,
    "agent-loop": record_agent_loop,
    "review": record_review,
    "orchestrator": record_orchestrator,
    "pipeline": record_pipeline,
}


async def main(groups: list[str]) -> None:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown group {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    work = Path(tempfile.mkdtemp(prefix="record-"))
    os.environ["AGENTPARALLELS_CACHE_DIR"] = str(work / "cache")
    os.environ["OPENAI_API_KEY"] = "sk-recording"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        data_converter=data_converter(work / "blobs"),
        search_attributes=attributes.ALL,
    )
    async with env:
        for group in groups or list(GROUPS):
            await GROUPS[group](env.client, work)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(0)
