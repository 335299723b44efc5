"""The bulkhead: an edit step changes its shard's files and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentparallels import worker
from agentparallels.activities.refactor import edit_files
from agentparallels.core.errors import SCOPE_VIOLATION
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    JobRef,
    Limits,
    RefactorInput,
    ShardRef,
)
from tests.support.repos import git, make_repo, snapshot, start_job

APPEND = CommandEdit(command="echo '# edited' >> {file}")


def shard_of(repo: Path) -> ShardRef:
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    return ShardRef(job=job, name="00-root")


def refused(shard: ShardRef, paths: tuple[str, ...], **kw: object) -> ApplicationError:
    step = EditBatchInput(
        shard=shard, paths=paths, checkpoint=shard.job.base_commit, edit=APPEND, **kw
    )
    with pytest.raises(ApplicationError) as failure:
        ActivityEnvironment().run(edit_files, step)
    assert failure.value.type == SCOPE_VIOLATION and failure.value.non_retryable
    return failure.value


def test_a_path_with_dotdot_is_refused(tmp_path: Path) -> None:
    """``pkg/../../outside.py`` is refused by name before any command runs: the file it points
    at is untouched and nothing reaches the shard's branch."""
    repo = make_repo(tmp_path / "repo", {"pkg/a.py": "x = 1\n"})
    shard = shard_of(repo)
    path = "pkg/../../outside.py"
    # The bulkhead alone must refuse it (the sandbox would also stop the write).
    error = refused(shard, (path,), scope=(path,), sandbox="none")  # sandbox off: see above
    assert (
        error.message == f"bulkhead: refusing to edit {path}: not a plain path inside the worktree"
    )
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/agentparallels") == ""


def test_a_path_outside_the_shard_is_refused(tmp_path: Path) -> None:
    """A step asked to edit a file that is not one of its shard's files refuses it."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n", "b.py": "y = 2\n"})
    error = refused(shard_of(repo), ("a.py", "b.py"), scope=("a.py",))
    assert error.message == "bulkhead: refusing to edit b.py: not one of this shard's files"


def test_a_symlink_escaping_the_worktree_is_refused(tmp_path: Path) -> None:
    """A tracked symlink to a file outside the repository is refused by name, even unsandboxed,
    and the file it points at is not written through it."""
    victim = tmp_path / "victim.py"
    victim.write_text("secret = 1\n")
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    os.symlink(victim, repo / "link.py")
    git(repo, "add", "link.py")
    git(repo, "commit", "--quiet", "-m", "link")
    # The bulkhead alone must refuse it (the sandbox would also stop the write).
    error = refused(shard_of(repo), ("a.py", "link.py"), sandbox="none")  # sandbox off: above
    assert error.message.startswith("bulkhead: refusing to edit link.py: it resolves to ")
    assert error.message.endswith(f"{victim}, outside the worktree")
    assert victim.read_text() == "secret = 1\n"


async def test_a_codemod_editing_another_shards_file_is_reverted_and_reported(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Two shards (``a/`` and ``b/``); the codemod run on ``a/x.py`` also edits ``b/y.py``. Even
    unsandboxed, the shard reports the violation naming ``b/y.py``, the job fails without
    retrying, and the repository is exactly as before."""
    repo = make_repo(tmp_path / "repo", {"a/x.py": "x = 1\n", "b/y.py": "y = 2\n"})
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(
            command="echo '# edited' >> {file}; case {file} in a/*) echo '# stray' >> b/y.py;; esac"
        ),
        limits=Limits(max_files_per_shard=1, sandbox="none"),  # sandbox off: bulkhead alone
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == SCOPE_VIOLATION
    assert "changed b/y.py, outside this shard's files; its changes were reverted" in cause.message
    assert snapshot(repo) == before
