"""The agent's fan-in: units' heads merge in dependency order; a conflict names the unit and
the files instead of failing; the result is in the job's repository before the step returns,
and a retry computes the same commit."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import ActivityEnvironment

from agentparallels.activities.agent_merge import merge_units
from agentparallels.core.agentjob import UnitMerge, UnitMergeInput
from agentparallels.core.models import JobRef
from tests.support.repos import git, make_repo, write

FILES = {"a.py": "A = 1\n", "b.py": "B = 1\n"}


def commit(repo: Path, parent: str, files: dict[str, str]) -> str:
    git(repo, "checkout", "--quiet", "--detach", parent)
    write(repo, files)
    git(repo, "commit", "--quiet", "-am", "unit edit")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "main")
    return sha


def merge(repo: Path, heads: dict[str, str], ref: str = "merged") -> UnitMerge:
    base = git(repo, "rev-parse", "main")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    inp = UnitMergeInput(
        job=job, base=base, heads=tuple(heads.values()), names=tuple(heads), ref=ref
    )
    return ActivityEnvironment().run(merge_units, inp)


def test_disjoint_and_dependent_units_merge_into_one_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "main")
    first = commit(repo, base, {"a.py": "A = 2\n"})
    after_first = commit(repo, first, {"a.py": "A = 3\n"})  # depends on the first
    other = commit(repo, base, {"b.py": "B = 2\n"})
    done = merge(repo, {"first": first, "then": after_first, "other": other})
    assert done.conflict is None
    assert git(repo, "show", f"{done.commit}:a.py") == "A = 3"
    assert git(repo, "show", f"{done.commit}:b.py") == "B = 2"
    assert git(repo, "rev-parse", "refs/agentparallels/job-1/merged") == done.commit
    assert done.changed == ("a.py", "b.py")
    # A retry (the worker died after the push) computes the same commit.
    assert merge(repo, {"first": first, "then": after_first, "other": other}) == done


def test_what_the_job_changed_is_net_of_edits_undone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "main")
    edited = commit(repo, base, {"a.py": "A = 2\n", "b.py": "B = 2\n"})
    undone = commit(repo, edited, {"a.py": "A = 1\n"})
    assert merge(repo, {"one": edited, "two": undone}).changed == ("b.py",)


def test_a_conflict_names_the_unit_and_the_files_and_keeps_what_merged_before(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "main")
    one = commit(repo, base, {"a.py": "A = 2\n", "b.py": "B = 2\n"})
    two = commit(repo, base, {"a.py": "A = 5\n"})
    done = merge(repo, {"one": one, "two": two})
    assert done == UnitMerge(commit=one, conflict="two", files=("a.py",), changed=("a.py", "b.py"))
    # What merged before the conflict is in the job's repository, for the unit run again on
    # top of it (perhaps on a worker that does not have this one's disk).
    assert git(repo, "rev-parse", "refs/agentparallels/job-1/merged") == one
