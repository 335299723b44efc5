"""The edit step on its own: one commit per file, stop at the first failure, idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentparallels.activities.refactor import edit_files
from agentparallels.core.errors import GIT_CONFLICT
from agentparallels.core.models import CommandEdit, EditBatchInput, JobRef, ShardRef
from tests.support.repos import git, make_repo

APPEND = CommandEdit(command="echo '# edited' >> {file}")


def setup(tmp_path: Path) -> tuple[Path, ShardRef]:
    repo = make_repo(tmp_path / "repo", {f"m{i}.py": f"x{i} = {i}\n" for i in range(4)})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    return repo, ShardRef(job=job, name="00-root")


def step(shard: ShardRef, paths: tuple[str, ...], checkpoint: str, **kw: object) -> EditBatchInput:
    return EditBatchInput(shard=shard, paths=paths, checkpoint=checkpoint, edit=APPEND, **kw)


def test_each_file_gets_its_own_commit_on_the_checkpoint(tmp_path: Path) -> None:
    """Three files, three commits in order, each changing only its file; pushed to the branch."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    result = ActivityEnvironment().run(edit_files, step(shard, ("m0.py", "m1.py", "m2.py"), base))
    assert [(o.path, o.status) for o in result.outcomes] == [
        ("m0.py", "committed"),
        ("m1.py", "committed"),
        ("m2.py", "committed"),
    ]
    assert git(repo, "rev-parse", shard.ref) == result.tip == result.outcomes[-1].commit
    for outcome in result.outcomes:
        assert (
            git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", outcome.commit)
            == outcome.path
        )
    assert git(repo, "show", f"{result.tip}:m1.py") == "x1 = 1\n# edited"


def test_a_failing_file_stops_the_step_after_committing_those_before(tmp_path: Path) -> None:
    """The second file fails its check: the first is committed, the second reported failed with
    the command and output, and the third not touched."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    check = "case {file} in m1.py) echo 'm1 is wrong'; exit 1;; esac"
    result = ActivityEnvironment().run(
        edit_files, step(shard, ("m0.py", "m1.py", "m2.py"), base, check_cmd=check)
    )
    assert [(o.path, o.status) for o in result.outcomes] == [
        ("m0.py", "committed"),
        ("m1.py", "failed"),
    ]
    assert result.outcomes[1].command == "case m1.py in m1.py) echo 'm1 is wrong'; exit 1;; esac"
    assert result.outcomes[1].output.strip() == "m1 is wrong"
    assert git(repo, "rev-parse", shard.ref) == result.tip == result.outcomes[0].commit


def test_a_repeated_step_reports_the_earlier_attempts_commits(tmp_path: Path) -> None:
    """Running the same step again (its first attempt died before reporting) redoes nothing:
    the same commits are reported and the branch holds each file's commit once."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    first = ActivityEnvironment().run(edit_files, step(shard, ("m0.py", "m1.py"), base))
    again = ActivityEnvironment().run(edit_files, step(shard, ("m0.py", "m1.py"), base))
    assert again == first
    assert git(repo, "rev-list", "--count", f"{base}..{shard.ref}") == "2"


def test_a_branch_an_earlier_run_took_further_is_taken_one_step_at_a_time(
    tmp_path: Path,
) -> None:
    """An earlier run of the job (stopped without cleaning up) committed m0 and m1 in two steps.
    A new run's step for m0 reports m0's commit with it as the tip; its next step, for m1 and
    m2, reports m1's commit and stops there, leaving m2 to the step after."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    first = ActivityEnvironment().run(edit_files, step(shard, ("m0.py",), base))
    second = ActivityEnvironment().run(edit_files, step(shard, ("m1.py",), first.tip))
    again = ActivityEnvironment().run(edit_files, step(shard, ("m0.py",), base))
    assert again == first
    then = ActivityEnvironment().run(edit_files, step(shard, ("m1.py", "m2.py"), again.tip))
    assert then == second
    assert git(repo, "rev-parse", shard.ref) == second.tip


def test_a_branch_moved_by_someone_else_is_a_conflict(tmp_path: Path) -> None:
    """If the shard's branch holds something this step did not write, the step refuses."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    ActivityEnvironment().run(edit_files, step(shard, ("m0.py",), base))
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(edit_files, step(shard, ("m3.py",), base))
    assert refused.value.type == GIT_CONFLICT
    assert f"{shard.ref} is at" in refused.value.message


def test_stale_worktrees_are_collected(tmp_path: Path, cache_dir: Path) -> None:
    """A job's worktrees untouched for longer than the limit are removed, recent ones kept."""
    import os

    from agentparallels.activities._workspace import collect_garbage

    repo, shard = setup(tmp_path)
    ActivityEnvironment().run(edit_files, step(shard, ("m0.py",), shard.job.base_commit))
    old = cache_dir / "worktrees" / "job-1"
    recent = cache_dir / "worktrees" / "job-2"
    recent.mkdir()
    os.utime(old, (1, 1))
    assert collect_garbage(max_age_s=3600) == [old]
    assert not old.exists() and recent.exists()
    clone = next((cache_dir / "repos").glob("*.git"))
    assert len(git(clone, "worktree", "list").splitlines()) == 1


def test_an_edit_that_formatting_turns_back_is_unchanged_not_a_failure(tmp_path: Path) -> None:
    """A codemod whose change ruff format undoes (``x0 = 0`` -> ``x0=0`` -> ``x0 = 0``) leaves
    the file as it was: reported unchanged, no commit made, and the next file still edited."""
    repo, shard = setup(tmp_path)
    base = shard.job.base_commit
    squeeze = CommandEdit(
        command="case {file} in m0.py) sed -i 's/ = /=/' {file};; "
        "*) echo '# edited' >> {file};; esac"
    )
    result = ActivityEnvironment().run(
        edit_files,
        EditBatchInput(
            shard=shard, paths=("m0.py", "m1.py"), checkpoint=base, edit=squeeze, ruff_format=True
        ),
    )
    assert [(o.path, o.status) for o in result.outcomes] == [
        ("m0.py", "unchanged"),
        ("m1.py", "committed"),
    ]
    assert git(repo, "show", f"{result.tip}:m0.py") == "x0 = 0"


def test_verify_reads_every_finding_of_a_large_batch(tmp_path: Path) -> None:
    """Sixty edited files that each use an undefined name: ruff's JSON report is far longer
    than the output a command keeps for its report, and is read whole, so the first file in
    the step's order is the one named (a cut report did not parse, and the step failed)."""
    from agentparallels.activities.checks import verify

    wt = tmp_path / "wt"
    wt.mkdir()
    paths = [f"m{i:02d}.py" for i in range(60)]
    for path in paths:
        (wt / path).write_text(f"VALUE = undefined_name_in_{path[:-3]}\n")
    bad = verify(wt, paths, "E9,F63,F7,F82", None, 60)
    assert bad is not None
    path, command, done = bad
    assert path == "m00.py" and "F821" in done.output
