"""Capability routing: sub-tasks go to the queue of the specialist that can do them; a sub-task
nobody can do fails at dispatch, not after a timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import ApplicationError
    from temporalio.worker import Worker

    from agentparallels import activities, worker
    from agentparallels.activities.llm import call_model
    from agentparallels.activities.routing import pollers
    from agentparallels.cli import build_parser, main
    from agentparallels.core.errors import NO_CAPABILITY
    from agentparallels.core.models import RenameEdit
    from agentparallels.testing.fake_llm import FakeLLM
    from agentparallels.workflows.routing import (
        ActivityPlanner,
        ModelPlanner,
        OrchestratorInput,
        OrchestratorResult,
        OrchestratorWorkflow,
        PlanRequest,
        Registry,
        Route,
        RoutePlan,
        SubTask,
    )
    from tests.support.repos import git, make_repo

REGISTRY = Registry(
    routes=(
        Route(kind="lint", workflow="test.route.Specialist", capability="python"),
        Route(kind="write-docs", workflow="test.route.Specialist", capability="docs"),
        Route(kind="translate", workflow="test.route.Specialist", capability="i18n"),
    )
)
STARTED: list[str] = []


@activity.defn(name="test.route.plan")
async def plan_from_goal(req: PlanRequest) -> RoutePlan:
    """The goal is a comma-separated list of kinds: one sub-task each."""
    kinds = req.goal.split(",")
    return RoutePlan(tasks=tuple(SubTask(kind=k, title=f"{k} {i}") for i, k in enumerate(kinds)))


@workflow.defn(name="test.route.Specialist")
class SpecialistWorkflow:
    @workflow.run
    async def run(self, inp: dict) -> str:
        return f"done on {workflow.info().task_queue}"


def orchestrator(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[OrchestratorWorkflow],
        activities=[plan_from_goal, pollers],
    )


def specialist(client: Client, queue: str) -> Worker:
    return Worker(client, task_queue=queue, workflows=[SpecialistWorkflow])


async def orchestrate(
    client: Client, task_queue: str, goal: str, **fields: object
) -> OrchestratorResult:
    handle = await client.start_workflow(
        OrchestratorWorkflow.run,
        OrchestratorInput(goal=goal, planner=ActivityPlanner(activity="test.route.plan"), **fields),
        id=f"{task_queue}-orch",
        task_queue=task_queue,
    )
    return await asyncio.wait_for(handle.result(), 30)


async def children_started(client: Client, task_queue: str) -> int:
    """Child workflows the orchestrator started, from its history."""
    history = await client.get_workflow_handle(f"{task_queue}-orch").fetch_history()
    kind = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    return sum(e.event_type == kind for e in history.events)


async def test_sub_tasks_run_on_their_capability_queues(client: Client, task_queue: str) -> None:
    """Two workers advertise python and docs; each sub-task runs on its capability's queue."""
    async with (
        orchestrator(client, task_queue),
        specialist(client, f"{task_queue}.python"),
        specialist(client, f"{task_queue}.docs"),
    ):
        result = await orchestrate(client, task_queue, "lint,write-docs,lint", registry=REGISTRY)
    assert [(t.kind, t.result) for t in result.tasks] == [
        ("lint", f"done on {task_queue}.python"),
        ("write-docs", f"done on {task_queue}.docs"),
        ("lint", f"done on {task_queue}.python"),
    ]
    assert await children_started(client, task_queue) == 3
    assert [t.workflow_id for t in result.tasks] == [
        f"{task_queue}-orch/00-lint-0",
        f"{task_queue}-orch/01-write-docs-1",
        f"{task_queue}-orch/02-lint-2",
    ]


async def test_a_model_can_plan_and_its_call_runs_on_the_model_queue(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a model planner the plan is one recorded model call (on <queue>.model), told the
    registry's kinds; its JSON answer is dispatched like any plan."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-routing")
    plan = {"tasks": [{"kind": "write-docs", "title": "readme", "input": {}}]}
    with FakeLLM([{"content": json.dumps(plan)}]) as fake:
        async with (
            orchestrator(client, task_queue),
            Worker(client, task_queue=f"{task_queue}.model", activities=[call_model]),
            specialist(client, f"{task_queue}.docs"),
        ):
            planner = ModelPlanner(model="openai:fake-planner", base_url=fake.openai_base_url)
            handle = await client.start_workflow(
                OrchestratorWorkflow.run,
                OrchestratorInput(goal="document it", planner=planner, registry=REGISTRY),
                id=f"{task_queue}-orch",
                task_queue=task_queue,
            )
            result = await asyncio.wait_for(handle.result(), 30)
        prompt = fake.requests[0].body["messages"][-1]["content"]
    assert [(t.title, t.result) for t in result.tasks] == [("readme", f"done on {task_queue}.docs")]
    assert "- write-docs:" in prompt and prompt.endswith("Goal: document it")


async def test_an_unknown_kind_is_refused_before_anything_is_dispatched(
    client: Client, task_queue: str
) -> None:
    """A plan with a kind the registry lacks fails naming it and the known kinds; its other
    sub-tasks are not started either."""
    async with orchestrator(client, task_queue), specialist(client, f"{task_queue}.python"):
        with pytest.raises(WorkflowFailureError) as failure:
            await orchestrate(client, task_queue, "lint,paint", registry=REGISTRY)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == NO_CAPABILITY
    assert cause.message == (
        "no specialist for sub-task kind 'paint': the registry knows lint, write-docs, translate"
    )
    assert await children_started(client, task_queue) == 0


async def test_a_known_kind_without_workers_fails_fast(client: Client, task_queue: str) -> None:
    """Nobody polls the i18n queue: the job fails within the half-second grace (plus overhead),
    naming the queue and how to serve it, instead of waiting for a child that never runs."""
    async with orchestrator(client, task_queue), specialist(client, f"{task_queue}.python"):
        began = time.monotonic()
        with pytest.raises(WorkflowFailureError) as failure:
            await orchestrate(
                client, task_queue, "lint,translate", registry=REGISTRY, poller_grace_s=0.5
            )
        took = time.monotonic() - began
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == NO_CAPABILITY
    assert cause.message.startswith(
        f"no worker polls {task_queue}.i18n: start one with "
        "`agentparallels worker --capability i18n`"
    )
    assert took < 10, took
    assert await children_started(client, task_queue) == 0


async def test_a_capability_worker_runs_the_shipped_refactor_specialist(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """With the shipped registry, a `refactor` sub-task runs RefactorWorkflow on
    <queue>.python, served by a worker started with the python capability."""
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    pass\n"})
    job = {"repository": str(repo), "edit": RenameEdit(old="pkg.a.f", new="g").model_dump()}

    @activity.defn(name="test.route.plan_refactor")
    async def plan_refactor(req: PlanRequest) -> RoutePlan:
        return RoutePlan(tasks=(SubTask(kind="refactor", title="rename f", input=job),))

    options = worker.WorkerOptions(task_queue=task_queue, capabilities=("python",))
    acts = [*activities.ALL, plan_refactor]
    async with worker.build_worker(client, options, activity_fns=acts):
        handle = await client.start_workflow(
            OrchestratorWorkflow.run,
            OrchestratorInput(
                goal="rename f to g",
                planner=ActivityPlanner(activity="test.route.plan_refactor"),
            ),
            id=f"{task_queue}-orch",
            task_queue=task_queue,
        )
        result = await asyncio.wait_for(handle.result(), 60)
    (task,) = result.tasks
    assert (task.kind, task.task_queue) == ("refactor", f"{task_queue}.python")
    assert task.result["files_changed"] == ["pkg/a.py"]
    assert "def g():" in git(repo, "show", f"{task.result['head_commit']}:pkg/a.py")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--capability", "nope"],
            "unknown capability 'nope': --capability takes one of docs, python, tests",
        ),
        (["--model-calls-per-second", "0"], "--model-calls-per-second must be above 0, got 0"),
    ],
)
def test_worker_refuses_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown capabilities and a rate of 0 are usage errors: one line, exit 2, nothing runs."""
    assert main(["worker", *args]) == 2
    assert capsys.readouterr().err == f"agentparallels: error: {message}\n"


async def test_worker_options_from_the_command_line(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--capability is repeatable (duplicates dropped) and --model-calls-per-second a float;
    a worker polls a provider's model queues only if that provider's key is in its
    environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    args = build_parser().parse_args(
        ["worker", "--capability", "python", "--capability", "python"]
        + ["--model-calls-per-second", "2.5", "--task-queue", "q"]
    )
    options = worker.options_from(args)
    assert (options.task_queue, options.capabilities) == ("q", ("python",))
    assert options.model_calls_per_second == 2.5
    queues = worker.build_worker(client, options).task_queues
    assert queues == ("q", "q.model", "q.python", "q.python.model")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-routing")
    keyed = dataclasses.replace(options, task_queue="k")
    queues = worker.build_worker(client, keyed).task_queues
    assert queues == (
        "k",
        "k.model",
        "k.model.anthropic",
        "k.python",
        "k.python.model",
        "k.python.model.anthropic",
    )


def test_worker_script_refuses_an_unknown_capability() -> None:
    """`python worker.py --capability nope` exits 2 with one line, before connecting."""
    done = subprocess.run(
        [sys.executable, "worker.py", "--capability", "nope"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "agentparallels: error: unknown capability 'nope': --capability takes one of "
        "docs, python, tests\n"
    )
