"""Resuming and restarting jobs on a real dev server: finished shards are not run again, the
result is still right, and a job Temporal has forgotten is still known from its repository."""

from __future__ import annotations

import asyncio
import shutil
import threading
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from agentparallels import activities, resume, worker
from agentparallels.activities.refactor import edit_files
from agentparallels.cli.status import status_command
from agentparallels.core.errors import CHECK_FAILED, UsageError
from agentparallels.core.models import (
    EditBatchInput,
    EditBatchResult,
    Limits,
    RefactorInput,
    RefactorResult,
    RenameEdit,
)
from agentparallels.replay import histories_of, replay
from tests.support.cli import run_cli
from tests.support.repos import commits_touching, git, snapshot, src_layout_repo, start_job

PYTEST = "python -m pytest -q -p no:cacheprovider"
SHARDS = ["00-src-pkg", "01-src-pkg-shop", "02-tests"]


def rename_job(repo: Path, **fields: Any) -> RefactorInput:
    """to_cents -> as_cents: 4 files in 3 shards (src/pkg; src/pkg/shop; tests)."""
    return RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
        # The check commands log outside the worktree, which the sandbox would not let them.
        limits=Limits(
            max_files_per_shard=2,
            parallel=1,
            batch_files=1,
            sandbox="none",  # sandbox off: above
        ),
        **fields,
    )


async def shards_started(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Shard children the run started, from its own history."""
    history = await handle.fetch_history()
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id.split("/")[-1]
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


def assert_renamed(repo: Path, branch: str) -> None:
    assert git(repo, "show", f"{branch}:tests/test_money.py").startswith(
        "from pkg.money import as_cents"
    )
    assert "money.as_cents(amount=amount * 0.2)" in git(
        repo, "show", f"{branch}:src/pkg/shop/tax.py"
    )
    for path in ("src/pkg/money.py", "src/pkg/shop/cart.py", "src/pkg/shop/tax.py"):
        assert commits_touching(repo, branch, path) == 1


async def failed_on_its_test_command(
    client: Client, task_queue: str, repo: Path
) -> WorkflowHandle[Any, RefactorResult]:
    """Run the rename with a test command that cannot pass; it fails after every shard."""
    job = rename_job(repo, test_cmd="python -m pytest -q -p no:cacheprovider tests/missing.py")
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 120)
    assert getattr(failed.value.cause, "type", None) == CHECK_FAILED
    assert await shards_started(handle) == SHARDS
    return handle


async def test_resume_with_a_corrected_test_command_runs_no_shard_again(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A job fails on a wrong test command after its 3 shards finished, and is rolled back.
    `agentparallels resume JOB --test-cmd ...` starts a new run of the same job that starts no
    shard child at all, takes the 3 over, passes the corrected test and publishes the rename.
    Both runs' histories replay against the current code."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    failed = await failed_on_its_test_command(client, task_queue, repo)
    assert snapshot(repo) == before  # rolled back: the progress log's ref is gone too
    failed_run = (await failed.describe()).run_id

    done = run_cli("resume", failed.id, "--test-cmd", PYTEST, address=client, timeout=180)

    assert done.returncode == 0, done.stderr
    assert f"job {failed.id} resumed" in done.stderr
    assert f"job {failed.id} succeeded: 4 files changed in 3 modules" in done.stdout
    assert "taken over from an earlier run: 00-src-pkg, 01-src-pkg-shop, 02-tests" in done.stdout
    assert f"check `{PYTEST}`: passed" in done.stdout
    resumed = client.get_workflow_handle(failed.id, result_type=RefactorResult)
    assert (await resumed.describe()).run_id != failed_run
    assert await shards_started(resumed) == []
    shard_runs = [
        w.id
        async for w in client.list_workflows(
            f"WorkflowType='ShardWorkflow' AND WorkflowId STARTS_WITH '{failed.id}/'"
        )
    ]
    assert len(shard_runs) == 3  # the failed run's, none since
    result = await resumed.result()
    assert result.reused_shards == tuple(SHARDS)
    assert_renamed(repo, f"agentparallels/{failed.id}")
    after = snapshot(repo)
    assert set(after["refs"].splitlines()) == {
        *before["refs"].splitlines(),
        f"refs/heads/agentparallels/{failed.id} {result.head_commit}",
    }
    histories = await histories_of(client, failed.id)
    histories.append(await client.get_workflow_handle(failed.id, run_id=failed_run).fetch_history())
    assert [r.failure for r in await replay(histories)] == [None] * len(histories)


async def test_shards_whose_commits_are_gone_are_run_again(
    client: Client, task_queue: str, tmp_path: Path, cache_dir: Path
) -> None:
    """After the failed run, the worker's cache is lost and the repository garbage-collected,
    so the finished shards' commits exist nowhere: the resumed run runs all 3 again (none
    taken over) and still publishes the right result."""
    repo = src_layout_repo(tmp_path / "repo")
    failed = await failed_on_its_test_command(client, task_queue, repo)
    shutil.rmtree(cache_dir)
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "--quiet", "--prune=now")

    again = await resume.prepare(client, failed.id, resume.Overrides(test_cmd=PYTEST))
    assert sorted(again.input.reuse) == SHARDS
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, again.input, job_id=failed.id)
        result = await asyncio.wait_for(handle.result(), 120)
    assert await shards_started(handle) == SHARDS
    assert result.reused_shards == ()
    assert_renamed(repo, f"agentparallels/{failed.id}")


async def test_resume_refuses_unknown_running_and_completed_jobs(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Resuming a job that does not exist, is still running, or has completed: a usage error
    (exit code 2 from the command line) that says why, and no new run."""
    missing = run_cli("resume", "no-such-job", address=client, timeout=180)
    assert missing.returncode == 2
    assert "agentparallels: error: no job no-such-job" in missing.stderr

    repo = src_layout_repo(tmp_path / "repo")
    running = await start_job(client, task_queue, rename_job(repo))  # no worker: it waits
    with pytest.raises(UsageError, match="is still running"):
        await resume.prepare(client, running.id, resume.Overrides())
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        await asyncio.wait_for(running.result(), 120)
    with pytest.raises(UsageError, match=f"job {running.id} has completed: there is nothing to"):
        await resume.prepare(client, running.id, resume.Overrides())
    with pytest.raises(UsageError, match="is a ShardWorkflow, not a job: resume"):
        await resume.prepare(client, f"{running.id}/00-src-pkg", resume.Overrides())


class Stopper:
    """An edit step that, once it has pushed the first file of shard 01, holds the job there
    (until released) so that the test can terminate it at a known point."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def activity(self) -> Any:
        @activity.defn(name="refactor.edit_files")
        def stopping_edit(inp: EditBatchInput) -> EditBatchResult:
            result = edit_files(inp)
            if inp.shard.name == "01-src-pkg-shop":
                self.reached.set()
                self.release.wait(60)
            return result

        return stopping_edit


async def terminated_midway(
    client: Client, task_queue: str, repo: Path, checked: Path
) -> WorkflowHandle[Any, RefactorResult]:
    """Run the rename, one shard at a time and one file per step, and terminate it (no
    rollback) once shard 00 has finished and shard 01 has committed its first file."""
    job = rename_job(repo, check_cmd=f"echo {{file}} >> {checked}")
    stopper = Stopper()
    acts = [a for a in activities.ALL if a is not edit_files] + [stopper.activity()]
    options = worker.WorkerOptions(task_queue=task_queue)
    async with worker.build_worker(client, options, activity_fns=acts):
        handle = await start_job(client, task_queue, job)
        assert await asyncio.to_thread(stopper.reached.wait, 60)
        await handle.terminate("stopped by the test")
        stopper.release.set()
    assert checked.read_text().split() == ["src/pkg/money.py", "src/pkg/shop/cart.py"]
    return handle


async def test_restart_with_the_same_id_skips_finished_shards_and_files(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A job terminated mid-way (no rollback: its refs and progress log stay) is started again
    with the same id and input: it starts no child for the finished shard 00, the child of
    shard 01 keeps the file committed before the stop, and only the 2 files never done are
    edited and checked. Each file ends with exactly one commit on the published branch."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    checked = tmp_path / "checked"
    stopped = await terminated_midway(client, task_queue, repo, checked)
    assert "refs/agentparallels/" in git(repo, "for-each-ref")
    checked.write_text("")

    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        job = rename_job(repo, check_cmd=f"echo {{file}} >> {checked}")
        again = await start_job(client, task_queue, job, job_id=stopped.id)
        result = await asyncio.wait_for(again.result(), 120)

    assert await shards_started(again) == ["01-src-pkg-shop", "02-tests"]
    assert checked.read_text().split() == ["src/pkg/shop/tax.py", "tests/test_money.py"]
    assert result.reused_shards == ("00-src-pkg",)
    assert len(result.files_changed) == 4
    assert_renamed(repo, f"agentparallels/{stopped.id}")
    assert set(snapshot(repo)["refs"].splitlines()) == {
        *before["refs"].splitlines(),
        f"refs/heads/agentparallels/{stopped.id} {result.head_commit}",
    }


async def test_status_reads_the_progress_log_when_temporal_has_no_history(
    client: Client,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job terminated mid-way leaves its progress log and shard branches in the repository.
    `status JOB --repo PATH`, asked of a Temporal namespace that has no history of the job
    (standing in for a cluster that lost it, or a run past its retention: the server answers
    NOT_FOUND either way), prints what the repository says was finished; so does `status JOB`
    run inside the repository. A repository without a log of the job is a usage error."""
    repo = src_layout_repo(tmp_path / "repo")
    stopped = await terminated_midway(client, task_queue, repo, tmp_path / "checked")
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "never-ran-this-job")

    shown = run_cli("status", stopped.id, "--repo", str(repo), address=client, timeout=180)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"job {stopped.id}: no history in Temporal; its progress log in {repo} says:"
    assert "4 files in 3 shards: 1 finished, 2 files committed" in lines[1]
    rows = [line.split("  files committed")[0].split() for line in lines[2:5]]
    assert rows == [
        ["00-src-pkg", "src/pkg", "finished", "1/1"],
        ["01-src-pkg-shop", "src/pkg/shop", "unfinished", "1/2"],
        ["02-tests", "tests", "not", "started", "0/1"],
    ]
    assert f"--job-id {stopped.id}" in lines[-1]

    monkeypatch.chdir(repo)  # without --repo: the current directory's repository
    capsys.readouterr()
    assert await status_command(Namespace(job=stopped.id, repo=None, follow=False)) == 0
    assert capsys.readouterr().out == shown.stdout

    other = src_layout_repo(tmp_path / "other")
    with pytest.raises(UsageError) as missing:
        await status_command(Namespace(job=stopped.id, repo=str(other), follow=False))
    assert str(missing.value) == (
        f"no job {stopped.id}: Temporal has no history of it and {other} no progress log"
    )
