"""Orchestrator / worker with capability routing (a small service mesh for agents).

A planner step (an activity, or a model call with a structured answer) splits a goal into
sub-tasks, each of a *kind*. A :class:`Registry` maps every kind to the workflow that does it
and to the *capability* a worker needs to run it. Workers advertise capabilities by the task
queues they poll (``agentparallels worker --capability python`` polls
``<task-queue>.python``), and each sub-task is started as a child workflow on its
capability's queue.

A sub-task nobody can do fails at dispatch, before any child starts: an unknown kind is
refused by the registry, and a known kind whose queue has no worker polling it is refused
after one look at the queue's pollers (``describe_task_queue``, through an activity), instead
of waiting for a timeout that may never come.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from agentparallels.core import names
from agentparallels.core.names import capability_queue
from agentparallels.workflows._call import call
from agentparallels.workflows.credentials import MODEL_CAPABILITY
from agentparallels.workflows.fanout import gather_bounded
from agentparallels.workflows.model_step import ModelSteps

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core._value import Value
    from agentparallels.core.errors import NO_CAPABILITY
    from agentparallels.core.errors import NON_RETRYABLE_TYPES as NON_RETRYABLE
    from agentparallels.core.llm import Message, ModelRequest, output_model
    from agentparallels.core.messages import PollersInput, QueuePollers

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Route(Value):
    """Who does one kind of sub-task."""

    kind: str
    """The sub-task kind a planner names, e.g. ``refactor``."""
    workflow: str
    """Name of the workflow that does it (its ``@workflow.defn(name=...)``)."""
    capability: str
    """What a worker must advertise to run it; its queue is ``<task-queue>.<capability>``."""
    description: str = ""
    """One line for the planner: what this kind of sub-task is for."""

    @field_validator("capability")
    @classmethod
    def _queue_safe(cls, value: str) -> str:
        if not _NAME.match(value) or value == MODEL_CAPABILITY:
            raise ValueError(
                f"capability {value!r} must be lower-case letters, digits, '-' or '_' "
                f"(and not {MODEL_CAPABILITY!r}, reserved for model calls)"
            )
        return value


class Registry(Value):
    """Task kinds and the specialists that do them."""

    routes: tuple[Route, ...]
    """One route per kind; a kind appears once."""

    @field_validator("routes")
    @classmethod
    def _unique(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        kinds = [r.kind for r in routes]
        if dupes := sorted({k for k in kinds if kinds.count(k) > 1}):
            raise ValueError(f"kinds routed twice: {', '.join(dupes)}")
        return routes

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Every capability some route needs, sorted."""
        return tuple(sorted({r.capability for r in self.routes}))

    def route(self, kind: str) -> Route:
        """The route of ``kind``; a non-retryable error naming the known kinds otherwise."""
        for r in self.routes:
            if r.kind == kind:
                return r
        known = ", ".join(r.kind for r in self.routes) or "none"
        raise ApplicationError(
            f"no specialist for sub-task kind {kind!r}: the registry knows {known}",
            type=NO_CAPABILITY,
            non_retryable=True,
        )


REGISTRY = Registry(
    routes=(
        Route(
            kind="refactor",
            workflow=names.REFACTOR,
            capability="python",
            description="a multi-file refactor of a git repository (input: RefactorInput)",
        ),
        Route(
            kind="docs",
            workflow=names.REFACTOR,
            capability="docs",
            description="an edit of a repository's documentation files, e.g. a model rewriting "
            "every **/*.md (input: RefactorInput with its files globs)",
        ),
    )
)
"""The specialists this project ships; ``agentparallels worker --capability`` accepts these."""


@output_model
class SubTask(Value):
    """One piece of the plan."""

    kind: str
    """Which specialist does it (a kind of the registry)."""
    title: str
    """A short name, shown in the UI and used in the child's workflow id."""
    input: dict[str, Any] = {}
    """The specialist workflow's input."""


@output_model
class RoutePlan(Value):
    """A planner's answer."""

    tasks: tuple[SubTask, ...]


class PlanRequest(Value):
    """What a planner activity receives."""

    goal: str
    routes: tuple[Route, ...]
    """The kinds it may use."""


class ActivityPlanner(Value):
    """Plan with an activity: it gets a :class:`PlanRequest` and returns a :class:`RoutePlan`."""

    kind: Literal["activity"] = "activity"
    activity: str
    """Name of the registered activity."""
    timeout_s: float = Field(300.0, gt=0)
    """Longest one planning attempt may take, in seconds."""
    attempts: int = Field(3, ge=1)
    """Most attempts before the job fails."""


class ModelPlanner(Value):
    """Plan with one model call whose JSON answer must validate as a :class:`RoutePlan`."""

    kind: Literal["model"] = "model"
    model: str
    """``provider:model``."""
    base_url: str | None = None


Planner = Annotated[ActivityPlanner | ModelPlanner, Field(discriminator="kind")]


class OrchestratorInput(Value):
    goal: str
    """What to do, in words; the planner splits it."""
    planner: Planner
    registry: Registry = REGISTRY
    parallel: int = Field(4, ge=1, le=64)
    """Most sub-tasks running at once (bounded fan-out)."""
    poller_grace_s: float = Field(2.0, ge=0, le=60)
    """How long, in seconds, dispatch waits for a worker of a capability to show up before
    failing the job: covers a worker that is just starting."""


class Dispatched(Value):
    """One sub-task's outcome."""

    kind: str
    title: str
    workflow_id: str
    task_queue: str
    result: Any = None


class OrchestratorResult(Value):
    tasks: tuple[Dispatched, ...]


@workflow.defn(name=names.ORCHESTRATOR)
class OrchestratorWorkflow:
    @workflow.run
    async def run(self, inp: OrchestratorInput) -> OrchestratorResult:
        the_plan = await plan(inp)
        routes = [inp.registry.route(t.kind) for t in the_plan.tasks]  # unknown kinds: refused
        base = workflow.info().task_queue
        queues = tuple(sorted({capability_queue(base, r.capability) for r in routes}))
        await require_pollers(queues, inp.poller_grace_s)
        parent = workflow.info().workflow_id

        async def dispatch(i: int, task: SubTask, route: Route) -> Dispatched:
            queue = capability_queue(base, route.capability)
            child_id = f"{parent}/{i:02d}-{_slug(task.title)}"
            result = await workflow.execute_child_workflow(
                route.workflow,
                task.input,
                id=child_id,
                task_queue=queue,
                static_summary=f"{task.kind}: {task.title}",
            )
            return Dispatched(
                kind=task.kind,
                title=task.title,
                workflow_id=child_id,
                task_queue=queue,
                result=result,
            )

        work = [
            lambda i=i, t=t, r=r: dispatch(i, t, r)
            for i, (t, r) in enumerate(zip(the_plan.tasks, routes, strict=True))
        ]
        return OrchestratorResult(tasks=tuple(await gather_bounded(work, inp.parallel)))


async def plan(inp: OrchestratorInput) -> RoutePlan:
    """Ask the planner for sub-tasks (one recorded decision)."""
    request = PlanRequest(goal=inp.goal, routes=inp.registry.routes)
    if isinstance(inp.planner, ActivityPlanner):
        return await workflow.execute_activity(
            inp.planner.activity,
            request,
            result_type=RoutePlan,
            start_to_close_timeout=timedelta(seconds=inp.planner.timeout_s),
            retry_policy=RetryPolicy(
                maximum_attempts=inp.planner.attempts, non_retryable_error_types=NON_RETRYABLE
            ),
            summary="plan: split the goal into sub-tasks",
        )
    kinds = "\n".join(f"- {r.kind}: {r.description}" for r in inp.registry.routes)
    model_queue = capability_queue(workflow.info().task_queue, MODEL_CAPABILITY)
    answer = await ModelSteps(task_queue=model_queue).ask(
        ModelRequest(
            model=inp.planner.model,
            base_url=inp.planner.base_url,
            messages=(
                Message(role="system", content=PLAN_SYSTEM),
                Message(role="user", content=f"Kinds:\n{kinds}\n\nGoal: {inp.goal}"),
            ),
            output="RoutePlan",
            step="plan: split the goal into sub-tasks",
        ),
        phase="plan",
    )
    return RoutePlan.model_validate(answer.parsed)


PLAN_SYSTEM = (
    "You split a goal into independent sub-tasks. Use only the kinds listed. Answer with JSON "
    "only: an object with `tasks`, each task an object with `kind`, `title` and `input`."
)


async def require_pollers(queues: tuple[str, ...], grace_s: float) -> None:
    """Fail, naming them, if any of ``queues`` has no worker polling it."""
    if not queues:
        return
    found: tuple[QueuePollers, ...] = await call(
        steps.POLLERS,
        PollersInput(task_queues=queues, grace_s=grace_s),
        summary=f"check workers on {', '.join(queues)}",
    )
    idle = [q.task_queue for q in found if not q.workflow_pollers]
    if idle:
        raise ApplicationError(
            f"no worker polls {', '.join(idle)}: start one with "
            + " ".join(f"`agentparallels worker --capability {q.rsplit('.', 1)[1]}`" for q in idle)
            + " (workers advertise capabilities by the queues they poll)",
            type=NO_CAPABILITY,
            non_retryable=True,
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "task"


__all__ = [
    "ActivityPlanner",
    "Dispatched",
    "MODEL_CAPABILITY",
    "ModelPlanner",
    "OrchestratorInput",
    "OrchestratorResult",
    "OrchestratorWorkflow",
    "PLAN_SYSTEM",
    "PlanRequest",
    "Planner",
    "REGISTRY",
    "Registry",
    "Route",
    "RoutePlan",
    "SubTask",
    "capability_queue",
    "plan",
    "require_pollers",
]
