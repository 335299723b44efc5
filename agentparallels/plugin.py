"""One Temporal plugin that configures every client, worker and replayer of Agent Parallels.

A worker, the client that starts jobs, the replayer that checks recorded histories and the test
suite must agree on how payloads are converted (pydantic, encryption, external storage), which
interceptors run (tracing), how the workflow sandbox is set up and which workflows and
activities exist. Assembled in several places, they drifted: replay ran without the sandbox
runner and the interceptors the worker used. :class:`AgentParallelsPlugin` holds all of it, so
each of them says only ``plugins=[AgentParallelsPlugin()]``.

Put it on the client: every worker built from that client inherits it (the SDK passes a
client's plugins on to its workers), so a worker needs no other configuration::

    client = await Client.connect("localhost:7233", plugins=[AgentParallelsPlugin()])
    worker = Worker(client, task_queue="agentparallels", workflows=[MyWorkflow])

The plugin adds its workflows and activities to those the worker is given. A workflow or
activity the worker is given under the same name as one of the plugin's wins, so a test can
stand in for one activity and keep the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agentparallels import activities as project_activities
from agentparallels import tracing
from agentparallels.codec import data_converter as build_converter
from agentparallels.core.errors import UsageError
from agentparallels.encryption import Keyring
from agentparallels.timeouts import TaskTimeouts
from agentparallels.workflows import shipped

__all__ = ["NAME", "PASSTHROUGH_MODULES", "AgentParallelsPlugin", "plugin_of", "sandboxed_runner"]

NAME = "agentparallels.AgentParallelsPlugin"
PASSTHROUGH_MODULES = ("opentelemetry", "agentparallels.core")
"""Modules the workflow sandbox shares with the worker instead of re-importing them for each
workflow run. Safe:

* ``opentelemetry``: workflow code makes no spans itself; the tracing interceptor's workflow
  side only moves trace contexts, and its spans are made outside the sandbox and skipped during
  replay.
* ``agentparallels.core``: the floor both sides share, values (pydantic models), names, errors
  and step specs, which Temporal's own guidance passes through. Importing it does no I/O and
  reads no clock or environment, and no workflow changes its module state (its one registry,
  the model outputs of ``core.llm``, keeps the first class registered under a name: the
  worker's own, not a copy a workflow run's sandbox makes). Re-imported, its pydantic
  models cost each run's first workflow task about 25 ms (a shard's child workflow: 28 ms
  against 4 ms passed through), and every replay on another worker as much."""
ACTIVITY_THREADS = 8
"""Threads for the plugin's blocking activities on a worker given no executor of its own."""


def sandboxed_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with :data:`PASSTHROUGH_MODULES` passed through."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def _runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    """Our sandbox in place of the SDK's default one; a runner chosen on purpose (a test that
    turns the sandbox off) is kept."""
    if existing is None or isinstance(existing, SandboxedWorkflowRunner):
        return sandboxed_runner()
    return existing


def _workflow_name(cls: type) -> str:
    defn = workflow._Definition.from_class(cls)
    return defn.name if defn and defn.name else cls.__name__


def _activity_name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.from_callable(fn)
    return defn.name if defn and defn.name else getattr(fn, "__name__", repr(fn))


def _merged(ours: Sequence[Any], name: Callable[[Any], str]) -> Callable[[Any], list[Any]]:
    """A plugin parameter: the component's own items, then ours not named like one of them
    (a stand-in under a shipped name replaces the shipped one instead of clashing with it)."""

    def merge(existing: Sequence[Any] | None) -> list[Any]:
        own = list(existing or [])
        taken = {name(item) for item in own}
        return own + [item for item in ours if name(item) not in taken]

    return merge


class AgentParallelsPlugin(SimplePlugin):
    """The data converter, the tracing interceptor, the sandbox and the project's workflows and
    activities, for a client (converter, interceptor), a worker (all of it) and a replayer
    (converter, interceptor, sandbox, workflows).

    ``store_dir``, ``blob_url``, ``threshold`` and ``keyring`` configure the converter as
    :func:`agentparallels.codec.data_converter` does (default: from the environment), or
    ``data_converter`` replaces it. ``workflows`` and ``activities`` default to everything the
    project ships; pass a test's own to register only those."""

    def __init__(
        self,
        *,
        workflows: Sequence[type] | None = None,
        activities: Sequence[Callable[..., Any]] | None = None,
        store_dir: Path | None = None,
        blob_url: str | None = None,
        threshold: int | None = None,
        keyring: Keyring | None = None,
        data_converter: DataConverter | None = None,
    ) -> None:
        if data_converter is None:
            data_converter = build_converter(store_dir, threshold, keyring, blob_url=blob_url)
        self.workflow_classes = tuple(shipped.ALL if workflows is None else workflows)
        self.activity_fns = tuple(project_activities.ALL if activities is None else activities)
        super().__init__(
            NAME,
            data_converter=data_converter,
            interceptors=[*tracing.interceptors(), TaskTimeouts()],
            workflows=_merged(self.workflow_classes, _workflow_name),
            activities=_merged(self.activity_fns, _activity_name),
            workflow_runner=_runner,
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        """As the base class; and a thread pool for blocking activities when the worker was
        given none (every shipped activity blocks: it runs git and tools)."""
        config = super().configure_worker(config)
        if config.get("activities") and config.get("activity_executor") is None:
            config["activity_executor"] = ThreadPoolExecutor(
                max_workers=ACTIVITY_THREADS, thread_name_prefix="activity"
            )
        return config


def plugin_of(client: Client) -> AgentParallelsPlugin:
    """The plugin ``client`` carries: a replayer or a second client configured like it. A
    client without one would read payloads with another converter than the one that wrote
    them, so it is refused."""
    for plugin in client.config()["plugins"]:
        if isinstance(plugin, AgentParallelsPlugin):
            return plugin
    raise UsageError(
        "the client has no AgentParallelsPlugin: connect with agentparallels.client.connect() "
        "or Client.connect(..., plugins=[AgentParallelsPlugin()])"
    )
