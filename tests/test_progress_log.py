"""The progress log's steps on their own, against a real repository: what is recorded where,
which finished shards a later run takes over, and which it refuses."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import ActivityEnvironment

from agentparallels.activities import _git
from agentparallels.activities._workspace import collect_garbage
from agentparallels.activities.git_ops import publish
from agentparallels.activities.progress_log import open_log, read, record_shard
from agentparallels.activities.refactor import edit_files
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    JobRef,
    PublishInput,
    Shard,
    ShardRef,
    ShardResult,
    files_digest,
)
from agentparallels.core.progress_log import JobLog, OpenLogInput, ShardDoneInput, log_ref
from tests.support.repos import git, make_repo

APPEND = CommandEdit(command="echo '# edited' >> {file}")
SHARDS = (
    Shard(name="00-a", modules=("a",), files=("a/x.py", "a/y.py")),
    Shard(name="01-b", modules=("b",), files=("b/z.py",)),
)


def setup(tmp_path: Path) -> tuple[Path, JobRef]:
    repo = make_repo(tmp_path / "repo", {"a/x.py": "x = 1\n", "a/y.py": "y = 1\n", "b/z.py": ""})
    base = git(repo, "rev-parse", "HEAD")
    return repo, JobRef(
        job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000
    )


def run_shard(job: JobRef, shard: Shard) -> ShardResult:
    """Edit every file of ``shard`` in one step, as the shard's child would."""
    step = EditBatchInput(
        shard=ShardRef(job=job, name=shard.name),
        paths=shard.files,
        checkpoint=job.base_commit,
        edit=APPEND,
    )
    done = ActivityEnvironment().run(edit_files, step)
    return ShardResult(
        name=shard.name,
        head=done.tip,
        files_changed=shard.files,
        attempts=len(shard.files),
        files_digest=files_digest(shard.files),
    )


def open_(job: JobRef, offered: dict[str, ShardResult] | None = None) -> dict[str, ShardResult]:
    inp = OpenLogInput(job=job, files_total=3, shards=SHARDS, offered=offered or {})
    return ActivityEnvironment().run(open_log, inp)


def test_log_is_a_commit_chain_of_its_own_under_the_jobs_scratch_ref(tmp_path: Path) -> None:
    """Opening records the plan; a finished shard is added on a new commit on top. The chain
    shares no history with the project's, so it cannot reach a published branch."""
    repo, job = setup(tmp_path)
    assert open_(job) == {}
    result = run_shard(job, SHARDS[0])
    ActivityEnvironment().run(record_shard, ShardDoneInput(job=job, result=result))

    ref = log_ref("job-1")
    assert ref == "refs/agentparallels/job-1/progress"
    assert git(repo, "rev-list", "--count", ref) == "2"
    assert git(repo, "ls-tree", "--name-only", ref) == "progress.json"
    assert git(repo, "rev-list", "--max-parents=0", ref) != git(repo, "rev-parse", "main")
    log = JobLog.model_validate_json(git(repo, "show", f"{ref}:progress.json"))
    assert log.base_commit == job.base_commit and log.files_total == 3
    assert [(s.name, s.files_total) for s in log.shards] == [("00-a", 2), ("01-b", 1)]
    assert log.done() == {"00-a": result}


def test_a_later_run_takes_over_the_finished_shard_and_sets_its_branch(tmp_path: Path) -> None:
    """The branch of a finished shard is gone (as after a rollback): a later run of the job
    takes the shard over from its log, sets its branch again at the result, and records it as
    done; the unfinished shard is left to run."""
    repo, job = setup(tmp_path)
    open_(job)
    result = run_shard(job, SHARDS[0])
    ActivityEnvironment().run(record_shard, ShardDoneInput(job=job, result=result))
    shard_ref = ShardRef(job=job, name="00-a").ref
    git(repo, "update-ref", "-d", shard_ref)

    again = job.model_copy(update={"timestamp": job.timestamp + 60})
    assert open_(again) == {"00-a": result}
    assert git(repo, "rev-parse", shard_ref) == result.head
    logged = read(str(repo), "job-1")
    assert logged is not None
    assert [(s.entry.name, s.committed) for s in logged.shards] == [("00-a", 2), ("01-b", 0)]


def test_offers_that_no_longer_hold_are_refused(tmp_path: Path) -> None:
    """A finished shard is taken over only if its head is in reach, descends from the base and
    changes exactly the shard's reported files: each other case is refused (the shard is run
    again), and no branch is set for it."""
    repo, job = setup(tmp_path)
    good = run_shard(job, SHARDS[0])
    git(repo, "update-ref", "-d", ShardRef(job=job, name="00-a").ref)
    gone = good.model_copy(update={"head": "1" * 40})
    mismatched = good.model_copy(update={"files_changed": ("a/x.py",)})
    outside = good.model_copy(update={"files_changed": ("a/x.py", "b/z.py")})
    git(repo, "checkout", "--quiet", "--orphan", "other")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "unrelated")
    unrelated = good.model_copy(update={"head": git(repo, "rev-parse", "HEAD")})
    git(repo, "checkout", "--quiet", "main")
    for offer in (gone, mismatched, outside, unrelated):
        assert open_(job, {"00-a": offer}) == {}, offer
    assert _git.remote_refs(str(repo), "refs/agentparallels/job-1/shards/*") == {}
    assert open_(job, {"00-a": good}) == {"00-a": good}


def test_kept_commits_stay_in_the_cache_until_published_or_expired(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A finished shard's commit is kept under a keep ref in the worker's cache, not in the
    user's repository; publishing the job drops it, and so does garbage collection once old."""
    repo, job = setup(tmp_path)
    result = run_shard(job, SHARDS[0])
    ActivityEnvironment().run(record_shard, ShardDoneInput(job=job, result=result))
    cache = _git.cached_repo(str(repo))
    kept = "refs/agentparallels-keep/job-1/00-a"
    assert git(cache, "rev-parse", kept) == result.head
    assert "agentparallels-keep" not in git(repo, "for-each-ref")

    ActivityEnvironment().run(publish, PublishInput(job=job, commit=result.head))
    assert git(cache, "for-each-ref", "refs/agentparallels-keep/") == ""

    git(cache, "update-ref", "refs/agentparallels-keep/job-2/00-a", result.head)
    recent = git(repo, "commit-tree", "HEAD^{tree}", "-m", "now")  # dated now
    git(cache, "fetch", "--quiet", str(repo), recent)
    git(cache, "update-ref", "refs/agentparallels-keep/job-3/00-a", recent)
    assert cache.is_relative_to(cache_dir)
    collect_garbage()  # result.head is dated from the job's start in 2023: long expired
    assert git(cache, "for-each-ref", "--format=%(refname)", "refs/agentparallels-keep/") == (
        "refs/agentparallels-keep/job-3/00-a"
    )


def test_a_result_made_for_other_files_is_refused(tmp_path: Path) -> None:
    """A later run can pack the files into other shards under the same names (the shard size
    rule changed between the runs, say): the earlier run's 00-a edited a/x.py alone, this
    run's 00-a holds a/x.py and a/y.py. Its result is refused although everything it reports
    holds, else a/y.py would never be edited; so is a result that does not say which files it
    was made for (from before that was recorded)."""
    repo, job = setup(tmp_path)
    smaller = run_shard(job, Shard(name="00-a", modules=("a",), files=("a/x.py",)))
    git(repo, "update-ref", "-d", ShardRef(job=job, name="00-a").ref)
    unsaid = smaller.model_copy(update={"files_digest": ""})
    for offer in (smaller, unsaid):
        assert open_(job, {"00-a": offer}) == {}, offer
