"""Record the histories that tests/test_replay.py replays, from the current workflows run
through the project's plugin (as every worker runs them): ``make histories``, or
``.venv/bin/python -m tests.histories.record [GROUP ...]``, after an intended change to workflow
code (and add ``workflow.patched`` where running jobs must keep replaying). Groups: refactor
(rename, codemod, model edit, approval, hooks, cancellation; each also failing and rolled back),
ledger, review, orchestrator, pipeline, agent (default: all). Recording a group overwrites its
files in tests/histories/. Recordings made before a ``workflow.patched`` change, which exercise
its old branch, live in tests/histories/patched/ and are never overwritten."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentparallels import (
    worker,
)
from agentparallels.core import attributes
from agentparallels.core.checklist import ApprovalOptions, Decision
from agentparallels.core.consensus import ReviewInput
from agentparallels.core.events import Hook
from agentparallels.core.llm import BudgetLimits
from agentparallels.core.models import (
    CommandEdit,
    Limits,
    ModelEdit,
    Progress,
    RefactorInput,
    RenameEdit,
)
from agentparallels.plugin import AgentParallelsPlugin
from agentparallels.replay import histories_of
from agentparallels.testing.fake_llm import FakeLLM
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


async def wait_for_phase(handle: Any, phase: str) -> None:
    """Until the job's progress query shows ``phase``."""
    while (await handle.query("progress", result_type=Progress)).phase != phase:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def approve(handle: Any) -> None:
    await wait_for_phase(handle, "awaiting-approval")
    await handle.execute_update("approve", Decision(reason="recorded", by="record.py"))


async def reject(handle: Any) -> None:
    """Reject the job: it rolls back what it merged."""
    await wait_for_phase(handle, "awaiting-approval")
    await handle.execute_update("reject", Decision(reason="recorded", by="record.py"))


async def pause_then_unpause(handle: Any) -> None:
    """Pause the job as soon as it runs, and let it go once it shows it is paused."""
    await handle.signal("pause")
    await wait_for_phase(handle, "paused")
    await handle.signal("unpause")


async def cancel_while_editing(handle: Any) -> None:
    """Cancel the job once a file is edited: it rolls back what it did."""
    while (await handle.query("progress", result_type=Progress)).files_done < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await handle.cancel()


async def record_review(client: Any, work: Path) -> None:
    """A committee of two reviews a branch: approved; then rejected below its quorum."""
    repo = make_repo(work / "e", {"m.py": "X = 1\n"})
    git(repo, "switch", "--quiet", "-c", "feature")
    (repo / "m.py").write_text("X = 2\n")
    git(repo, "commit", "--quiet", "-am", "two")
    yes, no = '{"approve": true, "reasons": "fine"}', '{"approve": false, "reasons": "wrong"}'
    async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
        for name, votes in (("review", [yes, yes]), ("review-rejected", [no, yes])):
            with FakeLLM([{"content": v} for v in votes]) as fake:
                inp = ReviewInput(
                    repository=str(repo),
                    ref="feature",
                    base="main",
                    models=("openai:fake",),
                    base_url=fake.openai_base_url,
                    reviewers=2,
                    quorum=2,
                )
                handle = await client.start_workflow(
                    "ReviewWorkflow", inp, id=f"recorded-{name}", task_queue="record"
                )
                await handle.result()
            await save(client, handle.id)


async def save(client: Any, workflow_id: str) -> None:
    """Write the history of ``workflow_id`` and of its children."""
    for history in await histories_of(client, workflow_id):
        target = HERE / f"{history.workflow_id.replace('/', '__')}.json"
        target.write_text(history.to_json())
        print(f"wrote {target.name} ({len(history.events)} events)")


GOOD_MODEL = {"content": "```python\nX = 2\n```"}
BAD_MODEL = {"content": "```python\ndef broken(:\n```"}
Job = tuple[RefactorInput, Callable[[Any], Awaitable[None]] | None]


def refactor_jobs(work: Path, base_url: str) -> dict[str, Job]:
    """Each kind of edit, succeeding and failing (rolled back), and the ways a person steers a
    job: approve, reject, pause, cancel. ``base_url`` serves good model answers; the model
    job named ``model-breaker`` gets its own server that answers only bad ones."""
    rename = RenameEdit(old="pkg.money.to_cents", new="as_cents")
    one = {"m.py": "X = 1\n"}
    two = {"a.py": "A = 1\n", "pkg/b.py": ""}
    model = ModelEdit(instruct="make X 2", model="openai:fake", base_url=base_url)
    gate = ApprovalOptions(timeout_s=600)
    hooks = (
        Hook(point="pre-edit", command="true"),
        Hook(point="post-edit", command='test -n "$AGENTPARALLELS_FILES"'),
        Hook(point="pre-merge", command="true"),
    )
    src = lambda name: str(src_layout_repo(work / name))  # noqa: E731
    plain = lambda name, files: str(make_repo(work / name, files))  # noqa: E731
    return {
        "rename": (
            RefactorInput(
                repository=src("rename"),
                edit=rename,
                test_cmd="true",
                limits=Limits(max_files_per_shard=2),
            ),
            None,
        ),
        "rename-tests-fail": (
            RefactorInput(repository=src("rename-fail"), edit=rename, test_cmd="false"),
            None,
        ),
        "codemod": (
            RefactorInput(
                repository=plain("codemod", two),
                edit=CommandEdit(command="echo '# edited' >> {file}"),
            ),
            None,
        ),
        "codemod-breaker": (
            RefactorInput(repository=src("breaker"), edit=CommandEdit(command="exit 1; {file}")),
            None,
        ),
        "model": (RefactorInput(repository=plain("model", one), edit=model), None),
        "approved": (
            RefactorInput(repository=src("approved"), edit=rename, test_cmd="true", approval=gate),
            approve,
        ),
        "rejected": (RefactorInput(repository=src("rejected"), edit=rename, approval=gate), reject),
        "choreography": (
            RefactorInput(
                repository=plain("hooks", two),
                edit=CommandEdit(command="echo '# edited' >> {file}"),
                hooks=hooks,
                subscribers=("recorded-nobody-listens",),
            ),
            pause_then_unpause,
        ),
        "cancelled": (
            RefactorInput(
                repository=plain("cancelled", two),
                edit=CommandEdit(command="echo '# e' >> {file}; sleep 3"),
            ),
            cancel_while_editing,
        ),
    }


async def run_job(client: Any, name: str, job: Job, queue: str = "record") -> None:
    """Run one job to its end (steered by its driver), then save its histories."""
    inp, drive = job
    handle = await client.start_workflow(
        "RefactorWorkflow", inp, id=f"recorded-{name}", task_queue=queue
    )
    if drive is not None:
        await drive(handle)
    try:
        await handle.result()
    except Exception as e:  # the failing jobs fail on purpose, and roll back
        print(f"{name}: {type(e).__name__}")
    await save(client, handle.id)


async def record_refactor(client: Any, work: Path) -> None:
    """Refactor jobs of every edit kind, each also failing and rolling back (see
    :func:`refactor_jobs`); a model editor whose first answer is broken and is fed back."""
    with FakeLLM([BAD_MODEL], default=GOOD_MODEL) as fake:
        jobs = refactor_jobs(work, fake.openai_base_url)
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
            for name, job in jobs.items():
                await run_job(client, name, job)
    with FakeLLM([], default=BAD_MODEL) as bad:
        model = ModelEdit(instruct="make X 2", model="openai:fake", base_url=bad.openai_base_url)
        inp = RefactorInput(
            repository=str(make_repo(work / "model-bad", {"m.py": "X = 1\n"})), edit=model
        )
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record")):
            await run_job(client, "model-breaker", (inp, None))


async def record_orchestrator(client: Any, work: Path) -> None:
    """A model plans two sub-tasks; each runs on the worker advertising its capability."""
    repo = make_repo(work / "g", {"a.py": "A = 1\n", "docs/guide.md": "# Guide\n"})
    plan = {
        "tasks": [
            {
                "kind": "refactor",
                "title": "constants",
                "input": {
                    "repository": str(repo),
                    "edit": {
                        "kind": "command",
                        "command": "sed -i s/A/B/ {file}",
                        "files": ["a.py"],
                    },
                },
            },
            {
                "kind": "docs",
                "title": "guide",
                "input": {
                    "repository": str(repo),
                    "edit": {
                        "kind": "command",
                        "command": "echo ok >> {file}",
                        "files": ["docs/*.md"],
                    },
                },
            },
        ]
    }
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
        Stage(
            name="shout",
            kind="activity",
            target="record.shout",
            gate=Gate(activity="record.not_empty"),
        ),
        Stage(
            name="again",
            kind="activity",
            target="record.shout",
            gate=Gate(activity="record.not_empty"),
        ),
    )
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
            edit=ModelEdit(
                instruct="make it 2",
                model="openai:fake",
                base_url=fake.openai_base_url,
                max_tokens=100,
                related_tokens=0,
            ),
            limits=Limits(max_files_per_shard=1),
            budget=BudgetLimits(total=10_000),
        )
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record-ledger")):
            handle = await client.start_workflow(
                "RefactorWorkflow", job, id="recorded-ledger", task_queue="record-ledger"
            )
            await handle.result()
            await save(client, handle.id)


async def record_agent(client: Any, work: Path) -> None:
    """The coding agent: a three-unit task (plan, units with tools, merge, checks, publish),
    against a baseline that knows only reads and searches, so its units flag their other tool
    calls to the job; a unit whose checks keep failing, which trips its breaker and rolls the
    job back; and a reviewer that rejects once and approves the unit's rework."""
    from agentparallels.core.agentjob import PLANNER_MARKER, AgentInput, AgentLimits, unit_marker
    from agentparallels.core.agentreview import ReviewOptions
    from agentparallels.core.baseline import Baseline, ToolNorm
    from tests.support.agent_script import (
        CHECK,
        FILES,
        TESTS,
        edit,
        plan,
        rename_script,
        tools,
        unit,
    )

    with FakeLLM(default=None) as fake:
        rename_script(fake)
        fake.push_thread(PLANNER_MARKER, plan(unit("broken", ["pkg/a.py"])))
        fake.push_thread(
            unit_marker("broken"),
            *[tools(edit("pkg/a.py", f"return {'(' * n}1", f"return {'(' * (n + 1)}1"), CHECK)
              for n in range(3)],
        )  # fmt: skip
        _review_script(fake)
        known = Baseline(
            jobs=1,
            tools=tuple(
                ToolNorm(tool=t, jobs=1, calls=2, p50_ms=5, p95_ms=9, max_ms=9)
                for t in ("read_file", "search")
            ),
        )
        jobs = {
            name: AgentInput(
                repository=str(make_repo(work / name, FILES)),
                task="rename old_name to new_name everywhere and add a test of use()",
                model="openai:fake",
                base_url=fake.openai_base_url,
                files=("pkg/*.py", "tests/*.py"),
                test_cmd=TESTS if name == "agent" else None,
                limits=AgentLimits(parallel=1),
                baseline=known if name == "agent" else None,
            )
            for name in ("agent", "agent-breaker", "agent-reviewed")
        }
        jobs["agent-reviewed"] = jobs["agent-reviewed"].model_copy(
            update={"review": ReviewOptions(reviewers=1, quorum=1)}
        )
        async with worker.build_worker(client, worker.WorkerOptions(task_queue="record-agent")):
            for name, inp in jobs.items():
                handle = await client.start_workflow(
                    "AgentWorkflow", inp, id=f"recorded-{name}", task_queue="record-agent"
                )
                try:
                    await handle.result()
                except Exception as e:  # the breaker trips on purpose
                    print(f"{name}: {type(e).__name__}")
                await save(client, handle.id)


def _review_script(fake: FakeLLM) -> None:
    """A unit, a reviewer rejecting its work with a comment, the rework, the approval."""
    from agentparallels.core.agentjob import PLANNER_MARKER, unit_marker
    from agentparallels.core.agentreview import reviewer_marker
    from tests.support.agent_script import CHECK as check
    from tests.support.agent_script import FINISH as done
    from tests.support.agent_script import edit, plan, tools, unit

    fake.push_thread(PLANNER_MARKER, plan(unit("documented", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("documented"),
        tools(edit("pkg/a.py", "return 1", "return 1  # one")),
        tools(check),
        tools(done),
        tools(edit("pkg/a.py", "-> int:\n", '-> int:\n    """One."""\n')),
        tools(check),
        tools(done),
    )
    fake.push_thread(
        reviewer_marker(1),
        tools(("changed_files", {})), tools(("file_diff", {"path": "pkg/a.py"})),
        tools(("vote", {"approve": False, "reasons": "undocumented",
                        "comments": [{"path": "pkg/a.py", "comment": "add a docstring"}]})),
        tools(("vote", {"approve": True, "reasons": "documented"})),
    )  # fmt: skip


GROUPS = {
    "agent": record_agent,
    "refactor": record_refactor,
    "ledger": record_ledger,
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
    # The corpus is replayed from a fresh clone, without this run's blob store: agent units'
    # payloads stay inline here (tests/test_agent_long.py covers the claim check).
    os.environ["AGENTPARALLELS_UNIT_CLAIM_BYTES"] = "off"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        plugins=[AgentParallelsPlugin(store_dir=work / "blobs")],
        search_attributes=attributes.ALL,
    )
    async with env:
        for group in groups or list(GROUPS):
            await GROUPS[group](env.client, work)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(0)
