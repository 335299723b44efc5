"""Workers that share no disk: a step that pushes a commit another worker made fetches it from
the job's repository first, so a fresh worker never fails a job with ``bad object``; a resumed
run does not need the cache of the worker that finished a shard."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from agentparallels.activities import _git
from agentparallels.activities.git_ops import cleanup, merge, publish
from agentparallels.activities.progress_log import open_log, record_shard
from agentparallels.activities.refactor import edit_files
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    JobRef,
    MergeInput,
    PublishInput,
    Shard,
    ShardRef,
    ShardResult,
    files_digest,
)
from agentparallels.core.progress_log import OpenLogInput, ShardDoneInput
from tests.support.repos import git, make_repo

SED = CommandEdit(command="sed -i 's/VALUE/CONST/' {file}")


def test_publish_from_a_worker_that_never_had_the_merged_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shards are edited and merged on one worker; a worker with an empty cache publishes
    the merge: the branch is created at it, with both edits."""
    repo = make_repo(tmp_path / "repo", {"a/m.py": "VALUE = 0\n", "b/m.py": "VALUE = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    fresh = tmp_path / "second-worker"
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(fresh))
    second = _git.cached_repo(str(repo))  # made before the merge: it lacks the merged commit
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "first-worker"))
    heads = []
    for name, path in (("00-a", "a/m.py"), ("01-b", "b/m.py")):
        step = EditBatchInput(
            shard=ShardRef(job=job, name=name), paths=(path,), checkpoint=base, edit=SED
        )
        heads.append(ActivityEnvironment().run(edit_files, step).tip)
    merged = ActivityEnvironment().run(merge, MergeInput(job=job, shard_heads=tuple(heads)))

    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(fresh))
    assert not _git.has_commit(second, merged)
    published = ActivityEnvironment().run(publish, PublishInput(job=job, commit=merged))
    assert git(repo, "rev-parse", f"refs/heads/{published.branch}") == merged
    assert git(repo, "show", f"{published.branch}:a/m.py") == "CONST = 0"
    assert git(repo, "show", f"{published.branch}:b/m.py") == "CONST = 1"
    assert any(fresh.rglob("HEAD"))  # it published from its own (new) cache


def test_a_resumed_run_on_a_fresh_worker_takes_over_a_rolled_back_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard finished on one worker, then the job was rolled back (every scratch ref of it
    deleted); a resumed run on a worker with an empty cache is offered the shard's result from
    the failed run's history and takes it over: the commit is fetched by id from the job's
    repository, not found in the first worker's keep refs."""
    repo = make_repo(tmp_path / "repo", {"a/m.py": "VALUE = 0\n", "b/m.py": "VALUE = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    shards = (
        Shard(name="00-a", modules=("a",), files=("a/m.py",)),
        Shard(name="01-b", modules=("b",), files=("b/m.py",)),
    )
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "first-worker"))
    step = EditBatchInput(
        shard=ShardRef(job=job, name="00-a"), paths=("a/m.py",), checkpoint=base, edit=SED
    )
    head = ActivityEnvironment().run(edit_files, step).tip
    result = ShardResult(
        name="00-a",
        head=head,
        files_changed=("a/m.py",),
        attempts=1,
        files_digest=files_digest(("a/m.py",)),
    )
    ActivityEnvironment().run(record_shard, ShardDoneInput(job=job, result=result))
    ActivityEnvironment().run(cleanup, job)  # the rollback
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""

    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "second-worker"))
    inp = OpenLogInput(job=job, files_total=2, shards=shards, offered={"00-a": result})
    assert ActivityEnvironment().run(open_log, inp) == {"00-a": result}
    assert git(repo, "rev-parse", ShardRef(job=job, name="00-a").ref) == head


def _published_job(tmp_path: Path) -> tuple[Path, JobRef, str]:
    """A job repository with a shard edited and merged under the job's scratch refs."""
    repo = make_repo(tmp_path / "repo", {"a/m.py": "VALUE = 0\n"})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    step = EditBatchInput(
        shard=ShardRef(job=job, name="00-a"), paths=("a/m.py",), checkpoint=base, edit=SED
    )
    head = ActivityEnvironment().run(edit_files, step).tip
    merged = ActivityEnvironment().run(merge, MergeInput(job=job, shard_heads=(head,)))
    return repo, job, merged


def test_publishing_with_clean_up_leaves_only_the_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's last step: the branch is created and every scratch ref of the job deleted in
    the same step, which says so."""
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "worker"))
    repo, job, merged = _published_job(tmp_path)
    assert git(repo, "for-each-ref", "refs/agentparallels/")
    published = ActivityEnvironment().run(
        publish, PublishInput(job=job, commit=merged, clean_up=True)
    )
    assert published.cleaned
    assert git(repo, "rev-parse", f"refs/heads/{published.branch}") == merged
    assert git(repo, "for-each-ref", "refs/agentparallels/") == ""


def test_a_cleanup_that_fails_after_publishing_is_left_to_the_cleanup_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository that refuses to delete refs (a server-side hook): the branch is out, so
    the step does not fail; it reports that it did not clean up, and the job's own cleanup
    step (with its retries and its report) takes over."""
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "worker"))
    repo, job, merged = _published_job(tmp_path)
    hook = repo / ".git" / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  case "$new" in 0000000000000000000000000000000000000000) exit 1;; esac\n'
        "done\n"
    )
    hook.chmod(0o755)
    published = ActivityEnvironment().run(
        publish, PublishInput(job=job, commit=merged, clean_up=True)
    )
    assert not published.cleaned
    assert git(repo, "rev-parse", f"refs/heads/{published.branch}") == merged
    assert git(repo, "for-each-ref", "refs/agentparallels/")  # still there, for the step
