"""Replaying recorded histories against the current code, to catch non-determinism.

A change to workflow code that running jobs cannot replay (an activity added, removed or moved
without ``workflow.patched``) would make them fail when their worker restarts. Replaying their
histories first says so, with the event where replay diverged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from agentparallels.plugin import AgentParallelsPlugin


@dataclass(frozen=True, slots=True)
class Replayed:
    workflow_id: str
    events: int
    failure: str | None
    """What diverged (the SDK's message names the event), or None when replay succeeded."""


def load(path: Path) -> WorkflowHistory:
    """A history saved as JSON (``temporal workflow show -o json`` or ``to_json()``); the file's
    name, without ``.json`` and with ``__`` read as ``/``, is taken as the workflow id (a child's
    id contains ``/``; workflows that derive their children's ids from it need the real one)."""
    return WorkflowHistory.from_json(path.stem.replace("__", "/"), path.read_text())


async def histories_of(client: Client, job_id: str) -> list[WorkflowHistory]:
    """A job's history and its children's (ids ``<job>/...``)."""
    found = [await client.get_workflow_handle(job_id).fetch_history()]
    query = f"WorkflowId STARTS_WITH '{job_id}/'"
    async for child in client.list_workflows(query):
        found.append(
            await client.get_workflow_handle(child.id, run_id=child.run_id).fetch_history()
        )
    return found


def replayer_for(
    plugin: AgentParallelsPlugin | None = None, *, workflows: Sequence[type] = ()
) -> Replayer:
    """A replayer configured by ``plugin`` (default: the project's, from the environment), as
    the workers are: converter, interceptors, sandbox and the plugin's workflows, beside
    ``workflows`` (which replace the plugin's of the same name)."""
    # Deadlock detection off: a replay checks determinism, and on a busy machine an activation
    # can take longer than the SDK's 2 s deadlock bound without anything being wrong.
    return Replayer(
        workflows=workflows, plugins=[plugin or AgentParallelsPlugin()], debug_mode=True
    )


async def replay(
    histories: list[WorkflowHistory], plugin: AgentParallelsPlugin | None = None
) -> list[Replayed]:
    """Replay each history as a worker runs it: through ``plugin`` (default: the project's,
    configured from the environment), so with the same converter, interceptors, sandbox and
    workflows."""
    replayer = replayer_for(plugin)
    results = []
    for history in histories:
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = outcome.replay_failure
        results.append(
            Replayed(
                workflow_id=history.workflow_id,
                events=len(history.events),
                failure=f"{type(failure).__name__}: {failure}" if failure else None,
            )
        )
    return results


__all__ = ["Replayed", "histories_of", "load", "replay", "replayer_for"]
