"""A failure at any stage, or a cancellation, leaves the repository exactly as it was, and it is
the saga that undoes each step: the audit shows what the compensations left for the final
cleanup step (nothing of theirs) and each move of a shard's branch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from agentparallels import activities, worker
from agentparallels.activities.refactor import edit_files
from agentparallels.core.errors import BREAKER_OPEN, CHECK_FAILED
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    EditBatchResult,
    Limits,
    MergeInput,
    RefactorInput,
    RenameEdit,
)
from tests.support.repos import git, snapshot, src_layout_repo, start_job, wait_for
from tests.support.rollback_audit import Audit

UNCONFINED = Limits(sandbox="none")  # sandbox off: checks count runs outside
CODEMOD = CommandEdit(command="ruff check --fix --exit-zero --isolated --select UP006 {file}")


def with_stand_in(stand_in):  # noqa: ANN001, ANN201 - an activity function
    """Every real activity, with ``stand_in`` registered under its real name instead."""
    name = stand_in.__temporal_activity_definition.name
    return [a for a in activities.ALL if a.__temporal_activity_definition.name != name] + [stand_in]


def build(client: Client, task_queue: str, acts: list | None = None) -> Worker:
    options = worker.WorkerOptions(task_queue=task_queue)
    return worker.build_worker(client, options, activity_fns=acts or activities.ALL)


async def fails_with(
    client: Client, task_queue: str, job: RefactorInput, acts=None, audit: Audit | None = None
) -> BaseException:  # noqa: ANN001
    """Run ``job`` to its failure (under ``audit`` if given) and return the cause."""
    if audit is not None:
        acts = audit.activities(acts)
    async with build(client, task_queue, acts):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    return failure.value.cause


async def test_edit_failure_rolls_back(client: Client, task_queue: str, tmp_path: Path) -> None:
    """An edit step that fails after others have committed: every commit is undone."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    calls = []

    @activity.defn(name="refactor.edit_files")
    def flaky_edit(inp: EditBatchInput) -> EditBatchResult:
        calls.append(inp.paths)
        if len(calls) > 2:
            raise ApplicationError("injected edit failure", non_retryable=True)
        return edit_files(inp)

    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="c"),
        limits=Limits(parallel=1, max_files_per_shard=1),
    )
    audit = Audit()
    cause = await fails_with(client, task_queue, job, with_stand_in(flaky_edit), audit)
    assert "injected edit failure" in str(cause)
    assert audit.left_by_saga() == []  # the finished shards' branches: deleted by the saga
    assert snapshot(repo) == before


async def test_verification_failure_opens_breaker_after_three_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A file whose verification always fails is tried exactly 3 times; then the breaker opens,
    the job fails naming the file, command and output, and the repository is as before."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    attempts = tmp_path / "attempts"
    check = (
        f"echo {{file}} >> {attempts}; "
        "case {file} in *tax.py) echo 'tax is broken'; exit 1;; esac"
    )
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="c"),
        check_cmd=check,
        limits=UNCONFINED,  # sandbox off: the check counts its runs outside the worktree
    )
    audit = Audit()
    cause = await fails_with(client, task_queue, job, audit=audit)
    assert isinstance(cause, ApplicationError) and cause.type == BREAKER_OPEN
    assert "3 consecutive failed attempts at src/pkg/shop/tax.py" in cause.message
    assert "tax is broken" in cause.message
    assert attempts.read_text().split().count("src/pkg/shop/tax.py") == 3
    # The shard's own saga: its branch back to the base (its edits undone), its worktree
    # removed, then its branch deleted.
    (shard,) = audit.shards()
    assert audit.targets(f"shards/{shard}") == [git(repo, "rev-parse", "main"), None]
    assert audit.tree_at_delete == {shard: False}
    assert audit.left_by_saga() == []
    assert snapshot(repo) == before


async def test_breaker_stays_closed_when_failures_are_split_by_successes(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Two failures, a success, two failures, a success: never three in a row, so the job
    succeeds (each file's third attempt passes)."""
    repo = src_layout_repo(tmp_path / "repo")
    counts = tmp_path / "counts"
    counts.mkdir()
    check = f"f={counts}/$(echo {{file}} | tr / _); echo x >> $f; test $(wc -l < $f) -ge 3"
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="c"),
        check_cmd=check,
        # The check keeps its counts outside the worktree, which the sandbox would refuse.
        limits=Limits(parallel=1, max_files_per_shard=2, sandbox="none"),  # sandbox off: above
    )
    async with build(client, task_queue):
        result = await (await start_job(client, task_queue, job)).result()
    assert len(result.files_changed) == 4
    assert sorted(len(f.read_text().split()) for f in counts.iterdir()) == [3, 3, 3, 3]


async def test_test_command_failure_rolls_back(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A failing pre-completion test command fails the job with its output; nothing remains."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="c"),
        test_cmd="echo 'suite says no'; exit 3",
        apply=True,
    )
    audit = Audit()
    cause = await fails_with(client, task_queue, job, audit=audit)
    assert isinstance(cause, ApplicationError) and cause.type == CHECK_FAILED
    assert "exit 3" in cause.message and "suite says no" in cause.message
    assert audit.left_by_saga() == []  # the merged result and the shards' branches: deleted
    assert ("merged", None) in audit.moves
    assert snapshot(repo) == before


async def test_merge_failure_rolls_back(client: Client, task_queue: str, tmp_path: Path) -> None:
    """A merge that fails after every shard succeeded: the shards' branches are removed."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)

    @activity.defn(name="git.merge")
    def broken_merge(inp: MergeInput) -> str:
        raise ApplicationError("injected merge failure", non_retryable=True)

    job = RefactorInput(repository=str(repo), edit=RenameEdit(old="pkg.money.to_cents", new="c"))
    audit = Audit()
    cause = await fails_with(client, task_queue, job, with_stand_in(broken_merge), audit)
    assert "injected merge failure" in str(cause)
    assert audit.left_by_saga() == []
    assert snapshot(repo) == before


async def test_cancellation_mid_job_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """Cancelling while an edit command runs stops it, undoes the finished edits and leaves the
    repository as it was."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    blocker = (
        "case {file} in *tax.py) touch .reached; exec sleep 300;; esac; "
        f"{sys.executable} -c 'import sys' {{file}}; echo '# touched' >> {{file}}"
    )
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command=blocker),
        limits=Limits(parallel=1, max_files_per_shard=10),
    )
    audit = Audit()
    async with build(client, task_queue, audit.activities()):
        handle = await start_job(client, task_queue, job)
        # The sandboxed command can only write in its worktree: it leaves its mark there.
        await wait_for(lambda: any((cache_dir / "worktrees").glob("*/*/.reached")))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    (shard,) = audit.shards()
    assert audit.targets(f"shards/{shard}")[-1] is None  # the shard's branch, deleted
    assert audit.tree_at_delete == {shard: False}  # after its worktree was removed
    assert audit.left_by_saga() == []
    assert snapshot(repo) == before
