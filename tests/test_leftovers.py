"""Honest rollback: an undo step that fails is named in the job's failure, and the command line
says the repository is as it was only after checking; what is left is named with the command
that removes it, and `agentparallels cleanup` removes it all."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from agentparallels import activities, leftovers, worker
from agentparallels.core.errors import CHECK_FAILED
from agentparallels.core.models import JobRef, RefactorInput, RefUpdate, RenameEdit
from tests.support.cli import run_cli_async
from tests.support.repos import git, snapshot, src_layout_repo, start_job


@activity.defn(name="git.set_ref")
def refusing_set_ref(inp: RefUpdate) -> None:
    raise ApplicationError(f"injected: cannot move {inp.ref}", non_retryable=True)


@activity.defn(name="git.cleanup")
def refusing_cleanup(inp: JobRef) -> None:
    raise ApplicationError("injected: cannot clean up", non_retryable=True)


def refusing_rollback() -> list:
    """Every real activity, but moving a scratch ref and the cleanup step always fail."""
    names = {"git.set_ref", "git.cleanup"}
    kept = [a for a in activities.ALL if a.__temporal_activity_definition.name not in names]
    return [*kept, refusing_set_ref, refusing_cleanup]


def failing_job(repo: Path) -> RefactorInput:
    return RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="c"),
        test_cmd="echo 'suite says no'; exit 3",
    )


async def test_failed_undo_steps_are_named_in_the_jobs_failure(
    client: Client, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """The test command fails; deleting the merged result, the shard's branch and the cleanup
    step all fail: the job keeps its own error and type, and names each failed undo step.
    What is left is found, and removing it leaves the repository as it was."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    options = worker.WorkerOptions(task_queue=task_queue)
    async with worker.build_worker(client, options, activity_fns=refusing_rollback()):
        handle = await start_job(client, task_queue, failing_job(repo))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == CHECK_FAILED
    assert "suite says no" in cause.message
    scratch = f"refs/agentparallels/{handle.id}"
    assert "The rollback did not complete; these undo steps failed:" in cause.message
    assert f"- merge: injected: cannot move {scratch}/merged" in cause.message
    assert f"- shard 00-src-pkg: injected: cannot move {scratch}/shards/00-src-pkg" in (
        cause.message
    )
    assert "- cleanup: remove scratch refs and worktrees: injected: cannot clean up" in (
        cause.message
    )
    assert "the repository is as it was" not in cause.message

    left = leftovers.find(str(repo), handle.id)
    refs = git(repo, "for-each-ref", "--format=%(refname)", scratch).split()
    assert f"{scratch}/merged" in refs and f"{scratch}/shards/00-src-pkg" in refs
    assert [x.what for x in left] == [
        *(f"scratch ref {ref}" for ref in refs),
        f"this machine's worker worktrees {cache_dir / 'worktrees' / handle.id}",
    ]
    assert left[0].command == f"git -C {repo} update-ref -d {refs[0]}"
    assert left[-1].command == f"agentparallels cleanup {handle.id} --repo {repo}"
    assert leftovers.remove(str(repo), handle.id) == []
    assert snapshot(repo) == before


def test_a_worktree_on_the_jobs_branch_and_the_branch_are_found_and_removed(
    tmp_path: Path,
) -> None:
    """The job's unpublished branch, checked out in a worktree of the repository: both named,
    the worktree first (the branch cannot go while it is checked out), and both removed; a
    published branch is not a leftover."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    git(repo, "branch", "agentparallels/job-7")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "--quiet", str(wt), "agentparallels/job-7")
    found = leftovers.find(str(repo), "job-7")
    assert [(x.what, x.command) for x in found] == [
        (f"worktree {wt}", f"git -C {repo} worktree remove --force {wt}"),
        (
            "branch refs/heads/agentparallels/job-7",
            f"git -C {repo} update-ref -d refs/heads/agentparallels/job-7",
        ),
    ]
    assert [x.what for x in leftovers.find(str(repo), "job-7", branch=False)] == [f"worktree {wt}"]
    assert leftovers.remove(str(repo), "job-7") == []
    assert snapshot(repo) == before


async def test_cli_names_what_a_failed_rollback_left_and_cleanup_removes_it(
    env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A job whose rollback fails: `status` does not say the repository is as it was; it names
    every scratch ref left with the command that removes it and exits 3. `cleanup` (refused
    while the job runs) removes them; `status` then checks again and says the repository is as
    it was (exit 1)."""
    address = env.client.service_client.config.target_host
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    run = lambda *args: run_cli_async(*args, address=address, cache=tmp_path / "c", timeout=180)  # noqa: E731
    started = await run(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        "--test-cmd",
        "exit 3",
        "--detach",
        "--task-queue",
        task_queue,
    )
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    busy = await run("cleanup", job_id, "--repo", str(repo))  # no worker yet: still running
    assert busy.returncode == 2
    assert f"job {job_id} is still running: cancel it first" in busy.stderr
    options = worker.WorkerOptions(task_queue=task_queue)
    async with worker.build_worker(env.client, options, activity_fns=refusing_rollback()):
        with pytest.raises(WorkflowFailureError):
            await env.client.get_workflow_handle(job_id).result()

    status = await run("status", job_id)
    assert status.returncode == 3, status.stderr
    assert "the repository is as it was" not in status.stderr
    assert f"the rollback left 4 thing(s) of job {job_id} in {repo}:" in status.stderr
    for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/agentparallels").split():
        assert (
            f"  scratch ref {ref}\n    remove: git -C {repo} update-ref -d {ref}" in status.stderr
        )
    assert f"or remove them all: agentparallels cleanup {job_id} --repo {repo}" in status.stderr

    cleaned = await run("cleanup", job_id, "--repo", str(repo))
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"nothing of job {job_id} is left in {repo}" in cleaned.stdout
    assert snapshot(repo) == before

    again = await run("status", job_id)
    assert again.returncode == 1
    assert f"checked {repo}: nothing of job {job_id} is left; the repository is as it was" in (
        again.stderr
    )
