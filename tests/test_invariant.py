"""The publish invariant: a result that differs from its shards' verified heads, keeps a file
reported changed as the base had it, or touches a path no shard changed, is refused, naming the
file and both blob ids."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentparallels import activities, worker
from agentparallels.activities import _git
from agentparallels.activities.git_ops import merge
from agentparallels.activities.invariant import check_result
from agentparallels.core.errors import RESULT_MISMATCH
from agentparallels.core.messages import ResultCheckInput, ShardClaim
from agentparallels.core.models import JobRef, MergeInput, RefactorInput, RenameEdit
from tests.support.repos import git, make_repo, snapshot, src_layout_repo, start_job, write

FILES = {"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"}


def commit(repo: Path, parent: str, files: dict[str, str | None], ref: str) -> str:
    """A commit on ``parent`` with ``files`` written (None deletes), kept at ``ref``."""
    git(repo, "checkout", "--quiet", "--detach", parent)
    for name, text in files.items():
        if text is None:
            git(repo, "rm", "--quiet", name)
        else:
            write(repo, {name: text})
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", ref)
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", ref, sha)
    git(repo, "checkout", "--quiet", "main")
    return sha


def blob(repo: Path, commit: str, path: str) -> str:
    return git(repo, "rev-parse", f"{commit}:{path}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", FILES)


def check(repo: Path, result: str, *claims: ShardClaim) -> None:
    base = git(repo, "rev-parse", "main")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=0)
    ActivityEnvironment().run(check_result, ResultCheckInput(job=job, commit=result, shards=claims))


def refused(repo: Path, result: str, *claims: ShardClaim) -> str:
    with pytest.raises(ApplicationError) as failure:
        check(repo, result, *claims)
    assert failure.value.type == RESULT_MISMATCH and failure.value.non_retryable
    return failure.value.message


def shards(repo: Path) -> tuple[ShardClaim, ShardClaim, str]:
    """Two shards, one editing a.py and one deleting c.py, and their honest merge."""
    base = git(repo, "rev-parse", "main")
    one = commit(repo, base, {"a.py": "A = 2\n"}, "refs/t/one")
    two = commit(repo, base, {"c.py": None}, "refs/t/two")
    merged = commit(repo, base, {"a.py": "A = 2\n", "c.py": None}, "refs/t/merged")
    return (
        ShardClaim(name="one", head=one, files_changed=("a.py",)),
        ShardClaim(name="two", head=two, files_changed=("c.py",)),
        merged,
    )


def test_a_result_made_of_its_shards_passes(repo: Path) -> None:
    """The honest merge of two shards (an edit and a deletion) passes."""
    one, two, merged = shards(repo)
    check(repo, merged, one, two)


def test_a_corrupted_shard_head_is_named_with_both_blobs(repo: Path) -> None:
    """A shard head whose file differs from the result: the file and both blob ids are named."""
    one, two, merged = shards(repo)
    base = git(repo, "rev-parse", "main")
    other = commit(repo, base, {"a.py": "A = 3\n"}, "refs/t/corrupt")
    corrupt = one.model_copy(update={"head": other})
    message = refused(repo, merged, corrupt, two)
    assert (
        f"a.py: the result has blob {blob(repo, merged, 'a.py')}, shard one's verified head "
        f"{other[:12]} has blob {blob(repo, other, 'a.py')}"
    ) in message


def test_a_file_reported_changed_but_equal_to_base_is_refused(repo: Path) -> None:
    """The lost edit: a shard reports a.py changed, but its head and the result have the base's
    a.py."""
    base = git(repo, "rev-parse", "main")
    empty = commit(repo, base, {}, "refs/t/empty")  # an edit commit that changed nothing
    claim = ShardClaim(name="one", head=empty, files_changed=("a.py",))
    message = refused(repo, empty, claim)
    sha = blob(repo, base, "a.py")
    assert (
        f"a.py: reported changed by shard one, but the result has blob {sha}, the base's blob "
        f"{sha}: the edit is missing"
    ) in message


def test_an_extra_path_in_the_result_is_refused(repo: Path) -> None:
    """A path no shard changed, added to the result: named, with the base's side absent."""
    one, two, _ = shards(repo)
    base = git(repo, "rev-parse", "main")
    extra = commit(repo, base, {"a.py": "A = 2\n", "c.py": None, "x.py": "X\n"}, "refs/t/x")
    message = refused(repo, extra, one, two)
    assert (
        f"x.py: changed by no shard, but the result has blob {blob(repo, extra, 'x.py')} and "
        "the base blob (absent)"
    ) in message


def test_a_path_removed_or_changed_outside_the_shards_is_refused(repo: Path) -> None:
    """b.py, which no shard changed, is removed from the result: named with the base's blob."""
    one, two, _ = shards(repo)
    base = git(repo, "rev-parse", "main")
    lost = commit(repo, base, {"a.py": "A = 2\n", "c.py": None, "b.py": None}, "refs/t/lost")
    message = refused(repo, lost, one, two)
    assert (
        f"b.py: changed by no shard, but the result has blob (absent) and the base blob "
        f"{blob(repo, base, 'b.py')}"
    ) in message


def test_a_missing_shard_edit_in_the_result_is_refused(repo: Path) -> None:
    """The merge dropped shard two's deletion: c.py is back in the result."""
    one, two, _ = shards(repo)
    base = git(repo, "rev-parse", "main")
    partial = commit(repo, base, {"a.py": "A = 2\n"}, "refs/t/partial")
    message = refused(repo, partial, one, two)
    assert (
        f"c.py: the result has blob {blob(repo, base, 'c.py')}, shard two's verified head "
        f"{two.head[:12]} has blob (absent)"
    ) in message


def test_objects_missing_from_the_cache_are_fetched(repo: Path, cache_dir: Path) -> None:
    """A worker whose cache has never seen the job's commits (it was made before them) reads
    them from the repository."""
    cache = _git.cached_repo(str(repo))
    one, two, merged = shards(repo)
    assert not _git.has_commit(cache, merged)
    check(repo, merged, one, two)
    assert _git.has_commit(cache, merged)


async def test_a_job_whose_merged_result_was_tampered_with_fails_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A merge step that returns a result with one shard's edit undone (and moves the job's
    ``merged`` ref to it): the job fails before publishing, naming the file and both blob ids,
    and the user's repository is exactly as it was."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    seen: dict[str, str] = {}

    @activity.defn(name="git.merge")
    def tampered_merge(inp: MergeInput) -> str:
        honest = merge(inp)
        path = "src/pkg/shop/cart.py"
        env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index")}

        def run(*args: str) -> str:
            out = subprocess.run(
                ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
            )
            return out.stdout.strip()

        run("read-tree", honest)
        run("update-index", "--cacheinfo", f"100644,{run('rev-parse', f'main:{path}')},{path}")
        tree = run("write-tree")
        wrong = run("commit-tree", tree, "-p", honest, "-m", "not what the shards made")
        run("update-ref", f"{inp.job.scratch}/merged", wrong, honest)
        seen.update(honest=honest, wrong=wrong, path=path)
        return wrong

    acts = [a for a in activities.ALL if a is not merge] + [tampered_merge]
    job = RefactorInput(repository=str(repo), edit=RenameEdit(old="pkg.money.to_cents", new="c"))
    options = worker.WorkerOptions(task_queue=task_queue)
    async with worker.build_worker(client, options, activity_fns=acts):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == RESULT_MISMATCH
    path, edited = seen["path"], blob(repo, seen["honest"], seen["path"])
    unedited = blob(repo, "main", path)
    assert f"{path}: the result has blob {unedited}, shard " in cause.message
    assert "'s verified head" in cause.message and f"has blob {edited}" in cause.message
    assert snapshot(repo) == before
