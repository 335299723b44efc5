"""Workers that share no disk: a step that pushes a commit another worker made fetches it from
the job's repository first, so a fresh worker never fails a job with ``bad object``."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.git_ops import merge, publish
from activities.refactor import edit_files
from agentparallels.models import (
    CommandEdit,
    EditBatchInput,
    JobRef,
    MergeInput,
    PublishInput,
    ShardRef,
)
from tests.repos import git, make_repo

SED = CommandEdit(command="sed -i 's/VALUE/CONST/' {file}")


def test_publish_from_a_worker_that_never_had_the_merged_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shards are edited and merged on one worker; a worker with an empty cache publishes
    the merge: the branch is created at it, with both edits."""
    repo = make_repo(tmp_path / "repo", {"a/m.py": "VALUE = 0\n", "b/m.py": "VALUE = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "first-worker"))
    heads = []
    for name, path in (("00-a", "a/m.py"), ("01-b", "b/m.py")):
        step = EditBatchInput(
            shard=ShardRef(job=job, name=name), paths=(path,), checkpoint=base, edit=SED
        )
        heads.append(ActivityEnvironment().run(edit_files, step).tip)
    merged = ActivityEnvironment().run(merge, MergeInput(job=job, shard_heads=tuple(heads)))

    fresh = tmp_path / "second-worker"
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(fresh))
    published = ActivityEnvironment().run(publish, PublishInput(job=job, commit=merged))
    assert git(repo, "rev-parse", f"refs/heads/{published.branch}") == merged
    assert git(repo, "show", f"{published.branch}:a/m.py") == "CONST = 0"
    assert git(repo, "show", f"{published.branch}:b/m.py") == "CONST = 1"
    assert any(fresh.rglob("HEAD"))  # it published from its own (new) cache
