"""Steps that run beside others: a rename's checklist votes on the plan's change set while the
shards commit it, and the publish check confirms that the result has the tree the checks voted
on (when it does not, the checks vote again on the result); the result check runs beside the
votes. Short steps that a job cannot move on without go first in a backlog."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from agentparallels import activities, worker
from agentparallels.activities.refactor import edit_files
from agentparallels.core import steps
from agentparallels.core.errors import CHECKED_TREE_DIFFERS
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    EditBatchResult,
    RefactorInput,
    RenameEdit,
)
from tests.support.repos import git, make_repo, snapshot, src_layout_repo, start_job

RENAME = RenameEdit(old="pkg.money.to_cents", new="as_cents")
TESTS = "grep -rq as_cents src"
"""The test command: passes only on a tree where the rename is done."""


async def history(handle: Any) -> list[Any]:
    return [e async for e in handle.fetch_history_events()]


def summary(event: Any) -> str:
    """The summary a step was scheduled with (what the Temporal UI shows for it)."""
    return str(json.loads(event.user_metadata.summary.data))


def scheduled(events: list[Any], name: str) -> list[Any]:
    return [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == name
    ]


async def test_a_renames_checks_vote_on_its_change_set_while_the_shards_commit_it(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The votes are scheduled before the shards are merged, see the renamed tree (the test
    command finds the new name), and the job publishes that tree after one result check."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(repository=str(repo), edit=RENAME, test_cmd=TESTS)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        result = await handle.result()
    assert result.outcome == "succeeded"
    assert [c.command for c in result.checks][:1] == [TESTS]
    (lint,) = [c for c in result.checks if c.command.startswith("lint:")]
    assert lint.output.endswith("(checked as the plan made them)")  # not ruff a second time
    events = await history(handle)
    votes = scheduled(events, steps.VOTE.name) + scheduled(events, steps.RUN_CHECK.name)
    (merge,) = scheduled(events, steps.MERGE.name)
    early = {summary(v) for v in votes if v.event_id < merge.event_id}
    assert early == {f"vote: tests `{TESTS}`", "vote: lint", "vote: diff-size"}
    # The conflicts check reads the base ref as it is now: it votes on the merge.
    assert [summary(v) for v in votes if v.event_id > merge.event_id] == ["vote: conflicts"]
    assert len(scheduled(events, steps.CHECK_RESULT.name)) == 1
    assert f"{result.branch}:src/pkg/money.py" in git(repo, "grep", "-l", "as_cents", result.branch)


async def test_the_checks_vote_again_when_the_result_is_not_the_change_set(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A shard whose edit step adds a line to one file after the honest edit (its branch moved
    to that commit): the merge is what the shards made, so the publish check passes it, but its
    tree is not the change set's the checks voted on. The check says so, the checks vote again
    on the result, and the job publishes what the shards made."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    altered: dict[str, str] = {}

    @activity.defn(name=steps.EDIT_FILES.name)
    def altering_edit(inp: EditBatchInput) -> EditBatchResult:
        honest = edit_files(inp)
        done = [o for o in honest.outcomes if o.status == "committed"]
        if altered or not done:
            return honest
        path = done[0].path
        tree = tmp_path / "alter"
        if not tree.exists():
            git(repo, "worktree", "add", "--quiet", "--detach", str(tree), honest.tip)
        git(tree, "checkout", "--quiet", "--detach", honest.tip)
        with (tree / path).open("a") as f:
            f.write("# altered after the edit\n")
        git(tree, "commit", "--quiet", "-am", f"alter\n\nAgentparallels-Edit: {path}")
        tip = git(tree, "rev-parse", "HEAD")
        git(repo, "update-ref", inp.shard.ref, tip)
        altered.update(path=path, tip=tip)
        return honest.model_copy(update={"tip": tip})

    acts = [a for a in activities.ALL if a is not edit_files] + [altering_edit]
    job = RefactorInput(repository=str(repo), edit=RENAME, test_cmd=TESTS)
    async with worker.build_worker(
        client, worker.WorkerOptions(task_queue=task_queue), activity_fns=acts
    ):
        handle = await start_job(client, task_queue, job)
        result = await handle.result()
        git(repo, "worktree", "remove", "--force", str(tmp_path / "alter"))
    assert result.outcome == "succeeded"
    events = await history(handle)
    failed = [
        e.activity_task_failed_event_attributes.failure.application_failure_info.type
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failed == [CHECKED_TREE_DIFFERS]
    (merge,) = scheduled(events, steps.MERGE.name)
    votes = scheduled(events, steps.VOTE.name) + scheduled(events, steps.RUN_CHECK.name)
    early = [v for v in votes if v.event_id < merge.event_id]
    again = [summary(v) for v in votes if v.event_id > merge.event_id]
    assert len(early) == 3  # tests, lint, diff size
    # On the merge: the conflicts vote (always there), then every check again.
    everything = [f"vote: tests `{TESTS}`", "vote: lint", "vote: diff-size", "vote: conflicts"]
    assert sorted(again) == sorted([*everything, "vote: conflicts"])
    (lint,) = [c for c in result.checks if c.command.startswith("lint:")]
    assert "checked as the plan made them" not in lint.output  # ruff ran on the merge
    # One result check: it found the result to be what the shards made, only not the tree
    # the checks had voted on.
    assert len(scheduled(events, steps.CHECK_RESULT.name)) == 1
    shown = git(repo, "show", f"{result.branch}:{altered['path']}")
    assert shown.endswith("# altered after the edit")
    git(repo, "branch", "-D", result.branch)
    assert snapshot(repo) == before


def by_task(event: Any) -> int:
    """The workflow task whose commands scheduled ``event``."""
    return int(event.activity_task_scheduled_event_attributes.workflow_task_completed_event_id)


async def test_the_result_check_runs_beside_the_votes_and_publishing_cleans_up(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """One workflow task schedules the votes and the result check: neither waits for the other
    (a codemod: no early votes). The job ends with publishing, which cleans up."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 1\n"})
    edit = CommandEdit(command="echo '# edited' >> {file}")
    job = RefactorInput(repository=str(repo), edit=edit, test_cmd="true")
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        assert (await handle.result()).outcome == "succeeded"
    events = await history(handle)
    (check,) = scheduled(events, steps.CHECK_RESULT.name)
    votes = scheduled(events, steps.VOTE.name) + scheduled(events, steps.RUN_CHECK.name)
    assert {by_task(v) for v in votes} == {by_task(check)}
    # Publishing cleaned up: no step of its own after it, and nothing of the job is left.
    assert not scheduled(events, steps.CLEANUP.name)
    assert git(repo, "for-each-ref", "refs/agentparallels/") == ""


async def test_bookkeeping_steps_go_first_in_a_backlog(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The steps a job cannot move on without (merge, result check, publish, progress log) are
    scheduled with priority 1; the work itself (plan, edits, votes) with the queue's
    default."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(repository=str(repo), edit=RENAME)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        await handle.result()
    events = await history(handle)

    def keys(name: str) -> set[int]:
        return {
            e.activity_task_scheduled_event_attributes.priority.priority_key
            for e in scheduled(events, name)
        }

    for step in (steps.MERGE, steps.CHECK_RESULT, steps.PUBLISH, steps.OPEN_LOG):
        assert keys(step.name) == {1}, step.name
    for step in (steps.PLAN, steps.VOTE):
        assert keys(step.name) == {0}, step.name  # unset: the queue's default (3)


async def test_a_rename_cancelled_while_its_early_votes_run_leaves_nothing(
    client: Client, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """Cancelled while the test command votes on the change set: the vote is stopped before
    the rollback, which then leaves the repository exactly as it was, and no worktree of the
    job in the worker's cache."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import CancelledError

    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    job = RefactorInput(repository=str(repo), edit=RENAME, test_cmd="sleep 8")
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)

        async def testing() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(
                a.activity_type.name == steps.RUN_CHECK.name
                and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for a in pending
            )

        async def until_testing() -> None:
            while not await testing():  # noqa: ASYNC110 - the server's state, not ours
                await asyncio.sleep(0.1)

        await asyncio.wait_for(until_testing(), 60)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    events = await history(handle)
    (test,) = scheduled(events, steps.RUN_CHECK.name)
    ended = next(
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED
        and e.activity_task_canceled_event_attributes.scheduled_event_id == test.event_id
    )
    (cleanup,) = scheduled(events, steps.CLEANUP.name)
    assert ended.event_id < cleanup.event_id  # the vote ended before the rollback cleaned up
    assert snapshot(repo) == before
    assert not [p for p in cache_dir.rglob("*") if handle.id in p.name and p.is_dir()]


def test_the_lint_vote_trusts_only_the_jobs_own_verified_change_set(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A commit on the base whose message claims the plan's check (the trailer) but that is
    not the job's change set: ruff runs, and finds the undefined name. The same commit named
    by the job's change ref: the plan checked it, the vote passes without ruff."""
    from temporalio.testing import ActivityEnvironment

    from agentparallels.activities.checklist import vote
    from agentparallels.activities.refactor import VERIFIED_TRAILER, change_ref
    from agentparallels.core.checklist import VoteInput

    repo = make_repo(tmp_path / "repo", {"m.py": "X = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    (repo / "m.py").write_text("X = undefined_name\n")
    rules = VoteInput.model_fields["rules"].default
    git(repo, "commit", "--quiet", "-am", f"claims a check\n\n{VERIFIED_TRAILER}: {rules}")
    claimed = git(repo, "rev-parse", "HEAD")
    ballot = VoteInput(
        check="lint", repository=str(repo), job_id="job-1", base_commit=base, commit=claimed
    )
    refused = ActivityEnvironment().run(vote, ballot)
    assert not refused.yes and "undefined_name" in refused.reason

    git(repo, "update-ref", change_ref("job-1"), claimed)
    trusted = ActivityEnvironment().run(vote, ballot)
    assert trusted.yes and trusted.reason.endswith("(checked as the plan made them)")
