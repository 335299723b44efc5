"""Replaying recorded histories against the current code, to catch non-determinism.

A change to workflow code that running jobs cannot replay (an activity added, removed or moved
without ``workflow.patched``) would make them fail when their worker restarts. Replaying their
histories first says so, with the event where replay diverged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from agentparallels.codec import data_converter


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


async def replay(histories: list[WorkflowHistory]) -> list[Replayed]:
    """Replay each history with the project's workflows and data converter."""
    from agentparallels import workflows
    from agentparallels.core import tokens

    # Loaded here, as a worker does: loading it inside a workflow activation can take longer
    # than the SDK's 2 s deadlock timeout on a busy machine, and the replay would fail.
    tokens.encoding()
    # Deadlock detection off: a replay checks determinism, and on a busy machine an activation
    # can take longer than the SDK's 2 s deadlock bound without anything being wrong.
    replayer = Replayer(workflows=workflows.ALL, data_converter=data_converter(), debug_mode=True)
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
