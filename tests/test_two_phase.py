"""Two-phase commit in the refactor job, on the dev server with real git: the checklist's
votes, and the approval gate's approve, reject, timeout and refused decisions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from agentparallels import activities, worker
from agentparallels.core.checklist import ApprovalOptions, Checklist, Decision
from agentparallels.core.errors import APPROVAL_DENIED, CHECK_FAILED
from agentparallels.core.models import (
    CommandEdit,
    Limits,
    Progress,
    RefactorInput,
    RefactorResult,
    RenameEdit,
)
from agentparallels.workflows.two_phase import ApprovalGate
from tests.support.cli import run_cli
from tests.support.repos import git, snapshot, src_layout_repo, start_job, write
from tests.support.rollback_audit import Audit

RENAME = RenameEdit(old="pkg.money.to_cents", new="as_cents")


UNSANDBOXED = Limits(sandbox="none")  # sandbox off: edits wait on a file in /tmp


def without_scratch(picture: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without the job's scratch refs (where a prepared result waits)."""
    refs = [r for r in picture["refs"].splitlines() if not r.startswith("refs/agentparallels/")]
    return {**picture, "refs": "\n".join(refs)}


@asynccontextmanager
async def running(
    client: Client, task_queue: str, audit: Audit | None = None
) -> AsyncIterator[None]:
    """A worker for the test's queue; with ``audit``, its rollbacks are watched."""
    acts = audit.activities() if audit is not None else activities.ALL
    options = worker.WorkerOptions(task_queue=task_queue)
    async with worker.build_worker(client, options, activity_fns=acts):
        yield


async def phase_of(handle: WorkflowHandle[Any, Any]) -> str:
    return (await handle.query("progress", result_type=Progress)).phase


async def reaches(handle: WorkflowHandle[Any, Any], phase: str, timeout_s: float = 60) -> None:
    """Wait until the job reports ``phase`` (it is queried, not guessed at)."""

    async def poll() -> None:
        while await phase_of(handle) != phase:  # noqa: ASYNC110 - the phase is workflow state, seen by query
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)


async def failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 60)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


def gated(repo: Path, timeout_s: float = 120, **fields: Any) -> RefactorInput:
    return RefactorInput(
        repository=str(repo), edit=RENAME, approval=ApprovalOptions(timeout_s=timeout_s), **fields
    )


async def test_approve_publishes_and_the_wait_shows_in_the_ui(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The job prepares the result, every check votes yes, and it waits: phase and
    AgentPhase say awaiting-approval, the current details say how to decide, and nothing is
    published yet. `approve` lets it publish."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    async with running(client, task_queue):
        handle = await start_job(client, task_queue, gated(repo, test_cmd="true"))
        await reaches(handle, "awaiting-approval")
        found = {p.key.name: p.value for p in (await handle.describe()).typed_search_attributes}
        assert found["AgentPhase"] == "awaiting-approval"
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert meta.current_details.startswith("**awaiting-approval** since ")
        assert f"`agentparallels approve {handle.id}`" in meta.current_details
        assert without_scratch(snapshot(repo)) == before  # prepared, not published
        state = await handle.execute_update("approve", Decision(by="tester"), result_type=str)
        result = await asyncio.wait_for(handle.result(), 60)
    assert state == "approved"
    assert result.branch == f"agentparallels/{handle.id}"
    assert git(repo, "rev-parse", result.branch) == result.head_commit
    assert [c.command.split(":")[0] for c in result.checks] == [
        "true",
        "lint",
        "diff-size",
        "conflicts",
    ]
    assert all(c.passed for c in result.checks)


async def test_reject_rolls_back_and_leaves_the_repository_as_it_was(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`reject` with a reason: the job fails with ApprovalDenied naming the reason, and the
    repository is byte for byte as before; a second decision is refused."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    audit = Audit()
    async with running(client, task_queue, audit):
        handle = await start_job(client, task_queue, gated(repo))
        await reaches(handle, "awaiting-approval")
        await handle.execute_update("reject", Decision(reason="wrong name", by="ann"))
        cause = await failure(handle)
    assert cause.type == APPROVAL_DENIED
    assert cause.message.startswith("rejected by ann: wrong name")
    assert "rolled back" in cause.message
    assert ("merged", None) in audit.moves and audit.left_by_saga() == []  # the saga undid it
    assert snapshot(repo) == before


async def test_no_decision_in_time_denies_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Nobody decides within the approval timeout: denied, rolled back, repository unchanged."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    audit = Audit()
    async with running(client, task_queue, audit):
        handle = await start_job(client, task_queue, gated(repo, timeout_s=1))
        await reaches(handle, "awaiting-approval")
        cause = await failure(handle)
    assert cause.type == APPROVAL_DENIED
    assert cause.message.startswith("no decision within 1s: denied")
    assert ("merged", None) in audit.moves and audit.left_by_saga() == []
    assert snapshot(repo) == before


async def test_validator_refuses_a_decision_when_the_job_is_not_waiting(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """While the job is still editing, `approve` is refused by the validator and changes
    nothing: the job still waits for a decision later, and takes the real one."""
    repo = src_layout_repo(tmp_path / "repo")
    go = tmp_path / "go"
    edit = CommandEdit(
        command=f"while [ ! -e {go} ]; do sleep 0.05; done; echo '# seen' >> {{file}}",
        files=("src/pkg/report.py",),
    )
    job = RefactorInput(
        repository=str(repo),
        edit=edit,
        approval=ApprovalOptions(),
        limits=UNSANDBOXED,  # sandbox off: the edit waits on a file outside the worktree
    )
    async with running(client, task_queue):
        handle = await start_job(client, task_queue, job)
        await reaches(handle, "edit")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", Decision())
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.message == "cannot approve: the job is not awaiting approval (it is at: edit)"
        go.touch()
        await reaches(handle, "awaiting-approval")
        await handle.execute_update("approve", Decision())
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.files_changed == ("src/pkg/report.py",)


def test_gate_refuses_a_second_decision_and_a_rejection_without_reason() -> None:
    """The validator's rules: only a waiting gate takes a decision, only one, and a rejection
    must say why."""
    gate = ApprovalGate()
    gate.state = "waiting"
    with pytest.raises(ApplicationError, match="a rejection needs a reason"):
        gate.validate(False, Decision(reason="  "), "awaiting-approval")
    gate.validate(True, Decision(), "awaiting-approval")
    assert gate.decide(True, Decision()) == "approved"
    with pytest.raises(ApplicationError, match="cannot reject: the job was already approved"):
        gate.validate(False, Decision(reason="late"), "awaiting-approval")


async def test_checklist_names_every_no_vote_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The tests and the diff-size limit both vote no: the job aborts before the approval
    gate with one message naming both checks and why; nothing is published."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    job = gated(
        repo, test_cmd="echo 'suite says no'; exit 3", checklist=Checklist(max_diff_lines=3)
    )
    audit = Audit()
    async with running(client, task_queue, audit):
        handle = await start_job(client, task_queue, job)
        cause = await failure(handle)
    assert cause.type == CHECK_FAILED
    first = cause.message.splitlines()[0]
    assert first == "the pre-completion checklist voted no (tests, diff-size):"
    assert "- tests: test command `echo 'suite says no'; exit 3` failed (exit 3)" in cause.message
    assert "suite says no" in cause.message
    assert "- diff-size: 12 lines changed, over the limit of 3" in cause.message
    assert "lint" not in first and "conflicts" not in first
    assert ("merged", None) in audit.moves and audit.left_by_saga() == []
    assert snapshot(repo) == before


async def test_conflicts_vote_no_when_the_base_moved_under_the_job(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """main gets a conflicting commit while the job edits: the conflicts check votes no,
    naming the file; the job rolls back and main keeps the new commit."""
    repo = src_layout_repo(tmp_path / "repo")
    go = tmp_path / "go"
    edit = CommandEdit(
        command=f"while [ ! -e {go} ]; do sleep 0.05; done; echo 'X = 1' >> {{file}}",
        files=("src/pkg/report.py",),
    )
    job = RefactorInput(
        repository=str(repo),
        edit=edit,
        limits=UNSANDBOXED,  # sandbox off: the edit waits on a file outside the worktree
    )
    audit = Audit()
    async with running(client, task_queue, audit):
        handle = await start_job(client, task_queue, job)
        await reaches(handle, "edit")
        write(
            repo, {"src/pkg/report.py": "def describe(n: int) -> str:\n    return 'moved'\nY = 2\n"}
        )
        git(repo, "commit", "--quiet", "-am", "meanwhile on main")
        before = snapshot(repo)
        # The job's progress log already exists; the rollback removes it with the job's refs.
        before["refs"] = "\n".join(
            r for r in before["refs"].splitlines() if not r.startswith("refs/agentparallels/")
        )
        go.touch()
        cause = await failure(handle)
    assert cause.type == CHECK_FAILED
    assert "voted no (conflicts)" in cause.message
    assert "the result conflicts with it in src/pkg/report.py" in cause.message
    assert ("merged", None) in audit.moves and audit.left_by_saga() == []
    assert snapshot(repo) == before


async def test_cli_approve_and_reject_and_their_errors(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`approve JOB` publishes and prints the summary; `reject JOB --reason` rolls back; a
    decision on a finished job, or a reject without a reason, is refused with exit 2."""
    address, cache = client.service_client.config.target_host, tmp_path / "cli-cache"
    approved_repo = src_layout_repo(tmp_path / "a")
    rejected_repo = src_layout_repo(tmp_path / "r")
    before = snapshot(rejected_repo)

    def run(*args: str) -> Any:
        return asyncio.to_thread(run_cli, *args, "--no-worker", address=address, cache=cache)

    async with running(client, task_queue):
        first = await start_job(client, task_queue, gated(approved_repo))
        second = await start_job(client, task_queue, gated(rejected_repo))
        await reaches(first, "awaiting-approval")
        await reaches(second, "awaiting-approval")
        approved = await run("approve", first.id, "--reason", "reviewed")
        no_reason = await run("reject", second.id)
        rejected = await run("reject", second.id, "--reason", "not now")
    assert approved.returncode == 0, approved.stderr
    assert f"job {first.id} approved: publishing" in approved.stderr
    assert f"job {first.id} succeeded: 4 files changed" in approved.stdout
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert rejected.returncode == 0, rejected.stderr
    assert f"job {second.id} was rejected and rolled back" in rejected.stdout
    assert snapshot(rejected_repo) == before

    late = await run("approve", first.id)
    assert late.returncode == 2
    assert f"job {first.id} is not running (it is completed): nothing to decide" in late.stderr
    assert "Traceback" not in late.stderr


async def test_cli_refuses_approval_of_a_job_not_waiting(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`approve` on a running job that is not awaiting approval: exit 2 with the validator's
    reason; `--approval-timeout` without `--require-approval`: exit 2 before anything runs."""
    address, cache = client.service_client.config.target_host, tmp_path / "cli-cache"
    repo = src_layout_repo(tmp_path / "repo")
    go = tmp_path / "go"
    edit = CommandEdit(
        command=f"while [ ! -e {go} ]; do sleep 0.05; done; true {{file}}",
        files=("src/pkg/report.py",),
    )
    async with running(client, task_queue):
        job = RefactorInput(
            repository=str(repo),
            edit=edit,
            limits=UNSANDBOXED,  # sandbox off: the edit waits on a file outside the worktree
        )
        handle = await start_job(client, task_queue, job)
        await reaches(handle, "edit")
        early = await asyncio.to_thread(
            run_cli, "approve", handle.id, "--no-worker", address=address, cache=cache
        )
        go.touch()
        await asyncio.wait_for(handle.result(), 60)
    assert early.returncode == 2, early.stderr
    assert "cannot approve: the job is not awaiting approval (it is at: edit)" in early.stderr

    flags = run_cli(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        "--approval-timeout",
        "5",
        address=address,
        cache=cache,
    )
    assert flags.returncode == 2
    assert "--approval-timeout goes with --require-approval" in flags.stderr


async def test_cli_refactor_with_require_approval_waits(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`refactor --require-approval --approval-timeout 1 --detach`: the job waits, and with
    nobody deciding, is denied and rolled back."""
    address, cache = client.service_client.config.target_host, tmp_path / "cli-cache"
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    started = await asyncio.to_thread(
        run_cli,
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        "--require-approval",
        "--approval-timeout",
        "1",
        "--detach",
        "--task-queue",
        task_queue,
        address=address,
        cache=cache,
    )
    assert started.returncode == 0, started.stderr
    handle = client.get_workflow_handle(started.stdout.strip(), result_type=RefactorResult)
    async with running(client, task_queue):
        await reaches(handle, "awaiting-approval")
        cause = await failure(handle)
    assert cause.type == APPROVAL_DENIED and "no decision within 1s" in cause.message
    assert snapshot(repo) == before
