"""A cancel request reaches a paused job: pausing holds new steps, never the rollback.

A job paused before its shards start, or while they run, and then cancelled must roll back at
once (its saga's compensations, then the cleanup step), end cancelled, and leave the user's
repository exactly as it was, without anyone unpausing it. That holds too when the step in
flight learns of the cancel too late and finishes anyway (a step hears of a cancel only with its
next heartbeat): the job must not take the step's success for a reason to go on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

from agentparallels import activities, worker
from agentparallels.activities._defn import defn
from agentparallels.activities.refactor import edit_files, plan
from agentparallels.core.checklist import AWAITING_APPROVAL, ApprovalOptions
from agentparallels.core.events import EVENTS_QUERY, EventPage
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    EditBatchResult,
    Limits,
    Plan,
    PlanInput,
    Progress,
    RefactorInput,
    RefactorResult,
)
from tests.support import waits
from tests.support.repos import make_repo, snapshot, start_job
from tests.support.rollback_audit import Audit
from tests.support.waits import progress

APPEND = CommandEdit(command="echo '# edited' >> {file}")
TIMEOUT = 60
T = TypeVar("T")

HOLD = threading.Event()
HELD = threading.Event()
"""The stand-in steps below wait on ``HOLD`` (setting ``HELD``) before they do their work."""


def finished_anyway(work: Callable[[], T], *, held: bool = True) -> T:
    """``work()`` once the test sets ``HOLD`` (if ``held``), to its end and returned even when
    the step was told to cancel meanwhile (the heartbeat that brings the news raises in the
    step's thread: here it is ignored, as a step that ends before that heartbeat)."""
    result: list[T] = []
    try:
        with activity.shield_thread_cancel_exception():
            if held:
                HELD.set()
                HOLD.wait(TIMEOUT)
            result.append(work())
    except CancelledError:
        if not result:
            raise
    return result[0]


@defn("refactor.edit_files", start_to_close=timedelta(minutes=5))
def held_edit_files(inp: EditBatchInput) -> EditBatchResult:
    """The real edit step, held before a.py until the test lets it go; it finishes although
    the job was cancelled meanwhile, as a step does that ends before its next heartbeat."""
    return finished_anyway(lambda: edit_files(inp), held=inp.paths[0] == "a.py")


@defn("refactor.plan", start_to_close=timedelta(minutes=5))
def held_plan(inp: PlanInput) -> Plan:
    """The real plan step, held until the test lets it go (and, like the one above, finishing
    although the job was cancelled meanwhile)."""
    return finished_anyway(lambda: plan(inp))


@pytest.fixture
def held() -> Iterator[None]:
    """Edits of a.py wait until the test sets ``HOLD``."""
    HOLD.clear()
    HELD.clear()
    yield None
    HOLD.set()  # never leave a worker thread waiting


def build(client: Client, task_queue: str, audit: Audit, *, hold: Any = None) -> Worker:
    """A worker watched by ``audit`` (whose step ``hold``, plan or edit_files, is held)."""
    held_step = {plan: held_plan, edit_files: held_edit_files}
    acts = [held_step[a] if a is hold else a for a in activities.ALL] if hold else None
    return worker.build_worker(
        client, worker.WorkerOptions(task_queue=task_queue), activity_fns=audit.activities(acts)
    )


async def until(check: Callable[[], Any], what: str) -> Any:
    return await waits.until(check, what, TIMEOUT)


async def idle(handle: WorkflowHandle[Any, Any]) -> bool:
    """No activity of the workflow is running or scheduled."""
    return not (await handle.describe()).raw_description.pending_activities


async def cancelled_and_rolled_back(
    handle: WorkflowHandle[Any, RefactorResult], audit: Audit
) -> list[str]:
    """Cancel the paused ``handle``; see :func:`ended_cancelled`."""
    await handle.cancel()
    return await ended_cancelled(handle, audit)


async def ended_cancelled(handle: WorkflowHandle[Any, RefactorResult], audit: Audit) -> list[str]:
    """``handle``, asked to cancel, must end cancelled, its saga having undone its own steps
    before the cleanup step, without being unpaused. Its events' kinds."""
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), TIMEOUT)
    assert isinstance(failure.value.cause, CancelledError)
    assert audit.left_by_saga() == []
    assert (await progress(handle)).phase == "cancelled"
    events = (await handle.query(EVENTS_QUERY, 0, result_type=EventPage)).events
    kinds = [e.kind for e in events]
    assert "unpaused" not in kinds
    assert kinds[-1] == "cancelled"
    return kinds


async def test_cancel_a_job_paused_before_its_shards_start(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Paused before any worker picked it up, the job plans and holds before its first shard;
    cancelled there, it rolls back (the plan's scratch refs go) and ends cancelled."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    before = snapshot(repo)
    audit = Audit()
    handle = await start_job(client, task_queue, RefactorInput(repository=str(repo), edit=APPEND))
    await handle.signal("pause")
    async with build(client, task_queue, audit):
        await until(lambda: _planned(handle), "the plan, with the job paused")
        await until(lambda: idle(handle), "the plan's steps to end")
        assert list((await handle.describe()).raw_description.pending_children) == []
        kinds = await cancelled_and_rolled_back(handle, audit)
    assert "file_edited" not in kinds
    assert audit.shards() == set()  # no shard was started
    assert snapshot(repo) == before


async def test_cancel_a_job_paused_while_its_shards_edit(
    client: Client, task_queue: str, tmp_path: Path, held: None
) -> None:
    """Paused while a.py is being edited, the shard finishes that step and holds; cancelled
    there, the shard undoes its edit and the job rolls back and ends cancelled."""
    files = {"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"}
    repo = make_repo(tmp_path / "repo", files)
    before = snapshot(repo)
    audit = Audit()
    job = RefactorInput(repository=str(repo), edit=APPEND, limits=Limits(batch_files=1))
    async with build(client, task_queue, audit, hold=edit_files):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(asyncio.to_thread(HELD.wait, TIMEOUT), TIMEOUT)
        await handle.signal("pause")
        name = (await progress(handle)).shards[0].name
        shard = client.get_workflow_handle(f"{handle.id}/{name}")
        await until(lambda: shard.query("paused"), "the shard to be paused")
        HOLD.set()  # the step in flight finishes, and nothing follows it
        await until(lambda: _files_done(handle, 1), "a.py to be done")
        await until(lambda: idle(shard), "the shard's steps to end")
        assert (await progress(handle)).phase == "paused"
        kinds = await cancelled_and_rolled_back(handle, audit)
    assert kinds.count("file_edited") == 1
    # The shard's saga: its edit undone, its worktree removed, then its branch deleted.
    assert audit.shards() == {name}
    assert audit.targets(f"shards/{name}")[-1] is None
    assert audit.tree_at_delete == {name: False}
    assert snapshot(repo) == before


async def step_told_to_cancel(handle: WorkflowHandle[Any, Any]) -> bool:
    """The workflow has asked its running step to cancel (it took up the cancel request)."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
            return True
    return False


@pytest.mark.parametrize("pause", [True, False], ids=["paused", "running"])
async def test_a_cancel_the_plan_step_outlives_is_not_lost(
    client: Client, task_queue: str, tmp_path: Path, held: None, pause: bool
) -> None:
    """Cancelled while its plan step runs (paused first, or not), the job asks the step to
    cancel; the step finishes anyway. The job still rolls back and ends cancelled: paused, it
    does not wait before its first shard for an unpause; running, it edits nothing, and its
    result is not applied to the user's branch."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    before = snapshot(repo)
    audit = Audit()
    job = RefactorInput(repository=str(repo), edit=APPEND, apply=True)
    async with build(client, task_queue, audit, hold=plan):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(asyncio.to_thread(HELD.wait, TIMEOUT), TIMEOUT)
        if pause:
            await handle.signal("pause")
            await until(lambda: _phase(handle, "paused"), "the job to show paused")
        await handle.cancel()
        await until(lambda: step_told_to_cancel(handle), "the plan step to be told to cancel")
        HOLD.set()  # the plan step finishes: its result arrives after the cancel
        kinds = await ended_cancelled(handle, audit)
    assert "file_edited" not in kinds
    assert audit.shards() == set()  # no shard was started
    assert snapshot(repo) == before


async def test_a_cancel_an_edit_step_outlives_rolls_a_paused_job_back(
    client: Client, task_queue: str, tmp_path: Path, held: None
) -> None:
    """Paused, then cancelled, while a.py is being edited: the edit step finishes anyway (its
    commit is made). The shard does not hold at its next step for an unpause: it undoes the
    edit, and the job rolls back and ends cancelled."""
    files = {"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"}
    repo = make_repo(tmp_path / "repo", files)
    before = snapshot(repo)
    audit = Audit()
    job = RefactorInput(repository=str(repo), edit=APPEND, limits=Limits(batch_files=1))
    async with build(client, task_queue, audit, hold=edit_files):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(asyncio.to_thread(HELD.wait, TIMEOUT), TIMEOUT)
        await handle.signal("pause")
        name = (await progress(handle)).shards[0].name
        shard = client.get_workflow_handle(f"{handle.id}/{name}")
        await until(lambda: shard.query("paused"), "the shard to be paused")
        await handle.cancel()
        await until(lambda: step_told_to_cancel(shard), "the edit step to be told to cancel")
        HOLD.set()  # the edit of a.py finishes and commits
        await ended_cancelled(handle, audit)
    assert audit.shards() == {name}
    assert audit.targets(f"shards/{name}")[-1] is None  # the shard's branch, deleted
    assert audit.tree_at_delete == {name: False}  # after its worktree was removed
    assert snapshot(repo) == before


async def test_cancel_a_paused_job_awaiting_approval(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A job waiting for a person's decision, paused, then cancelled: it does not wait for
    the decision (nor for an unpause); the merged result and the shards' branches are undone."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    before = snapshot(repo)
    audit = Audit()
    job = RefactorInput(repository=str(repo), edit=APPEND, approval=ApprovalOptions(timeout_s=3600))
    async with build(client, task_queue, audit):
        handle = await start_job(client, task_queue, job)
        await until(lambda: _phase(handle, AWAITING_APPROVAL), "the job to await approval")
        await handle.signal("pause")
        await until(lambda: handle.query("paused"), "the job to be paused")
        await cancelled_and_rolled_back(handle, audit)
    assert ("merged", None) in audit.moves
    assert snapshot(repo) == before


async def _phase(handle: WorkflowHandle[Any, RefactorResult], phase: str) -> bool:
    return (await progress(handle)).phase == phase


async def _planned(handle: WorkflowHandle[Any, RefactorResult]) -> Progress | None:
    p = await progress(handle)
    return p if p.files_total and p.phase == "paused" else None


async def _files_done(handle: WorkflowHandle[Any, RefactorResult], n: int) -> bool:
    return (await progress(handle)).files_done == n
