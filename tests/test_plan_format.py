"""A rename's change set is formatted once, in the plan, as the plain tool formats it: the
shards copy formatted files and run no ruff formatting of their own (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from agentparallels.activities.refactor import plan
from agentparallels.core.models import Plan, PlanInput, RenameEdit
from tests.support.repos import git, make_repo

FILES = {
    "pyproject.toml": "[tool.ruff]\nline-length = 100\n",
    "a.py": "def old_name():\n    return 1\n\n\ndef zeta():\n    return 2\n",
    # After the rename, `zz_name, zeta` is out of order: ruff's import sorting fixes it.
    "b.py": "from a import old_name, zeta\n\nprint(old_name(), zeta())\n",
}


def planned(repo: Path, job_id: str, **fields: object) -> Plan:
    """The plan of renaming ``a.old_name`` in ``repo``, with these PlanInput ``fields``."""
    inp = PlanInput.model_validate(
        {
            "job_id": job_id,
            "repository": str(repo),
            "base_ref": "main",
            "edit": RenameEdit(old="a.old_name", new="zz_name"),
            "timestamp": 1_700_000_000,
            **fields,
        }
    )
    result = ActivityEnvironment().run(plan, inp)
    assert result.change_commit
    return result


def command_passes(repo: Path, job_id: str, the_plan: Plan, command: str) -> bool:
    """Whether the job's test command step passes ``command`` on the plan's change set."""
    from agentparallels.activities.checks import run_check
    from agentparallels.core.models import CheckInput, JobRef

    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id=job_id, repository=str(repo), base_commit=base, timestamp=0)
    assert the_plan.change_commit
    inp = CheckInput(job=job, commit=the_plan.change_commit, command=command, timeout_s=60)
    return ActivityEnvironment().run(run_check, inp).passed


def run_plan(repo: Path, job_id: str, *, format_change: bool) -> tuple[Plan, str]:
    result = planned(repo, job_id, format_change=format_change)
    return result, git(repo, "show", f"{result.change_commit}:b.py")


def test_the_plan_formats_the_change_set_and_the_shards_do_not(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    result, b = run_plan(repo, "job-1", format_change=True)
    assert b.splitlines()[0] == "from a import zeta, zz_name"
    assert result.ruff_format is False  # nothing left for the shards to format
    # A retry of the step finds the change set it pushed, and says the same.
    again, b_again = run_plan(repo, "job-1", format_change=True)
    assert (again.change_commit, again.ruff_format, b_again) == (result.change_commit, False, b)


def test_without_it_the_shards_format(tmp_path: Path) -> None:
    """A job started before the plan formatted (its input does not ask for it) still has its
    shards format the files."""
    repo = make_repo(tmp_path / "repo", FILES)
    result, b = run_plan(repo, "job-2", format_change=False)
    assert b.splitlines()[0] == "from a import zz_name, zeta"
    assert result.ruff_format is True


def test_a_renames_shard_checks_out_its_own_files_only(tmp_path: Path, cache_dir: Path) -> None:
    """The edit step of a rename whose plan formatted the change set fills its worktree with
    the shard's files only (a sparse checkout), not the whole tree, and commits the same
    files as a full checkout would; with a check command, which may read any file, the
    worktree holds the whole tree."""
    from agentparallels.activities._workspace import worktrees_dir
    from agentparallels.activities.refactor import edit_files
    from agentparallels.core.models import EditBatchInput, JobRef, ShardRef

    files = {**FILES, **{f"other{i}.py": f"X{i} = {i}\n" for i in range(5)}}
    trees = {}
    for name, check in (("sparse", None), ("full", "true {file}")):
        repo = make_repo(tmp_path / name, files)
        the_plan, _ = run_plan(repo, f"job-{name}", format_change=True)
        base = git(repo, "rev-parse", "HEAD")
        job = JobRef(job_id=f"job-{name}", repository=str(repo), base_commit=base, timestamp=0)
        step = EditBatchInput(
            shard=ShardRef(job=job, name="s0"),
            paths=the_plan.files,
            checkpoint=base,
            edit=RenameEdit(old="a.old_name", new="zz_name"),
            change_commit=the_plan.change_commit,
            check_cmd=check,
            scope=the_plan.files,
            sparse=True,
        )
        result = ActivityEnvironment().run(edit_files, step)
        assert [o.status for o in result.outcomes] == ["committed", "committed"]
        wt = worktrees_dir(job.job_id) / "s0"
        on_disk = sorted(
            str(p.relative_to(wt)) for p in wt.rglob("*") if p.is_file() and ".git" != p.name
        )
        trees[name] = (on_disk, git(repo, "rev-parse", f"{result.tip}^{{tree}}"))
    assert trees["sparse"][0] == ["a.py", "b.py"]
    assert trees["full"][0] == sorted(files)
    assert trees["sparse"][1] == trees["full"][1]


def test_a_reused_worktree_holds_what_this_step_asks_for(tmp_path: Path) -> None:
    """A worktree is reused across steps and kinds of step (a resumed job may ask for a full
    checkout where a sparse one was left, or for other files): each use gets exactly the
    files it asks for."""
    from agentparallels.activities import _git

    files = {"a.py": "A = 1\n", "b.py": "B = 1\n", "c/d.py": "D = 1\n", "we[ir]d*.py": "W = 1\n"}
    repo = make_repo(tmp_path / "repo", files)
    sha = git(repo, "rev-parse", "HEAD")
    cache = _git.cached_repo(str(repo))
    _git.ensure_commit(cache, str(repo), sha)
    path = _git.cache_root() / "worktrees" / "job" / "s0"

    def on_disk() -> list[str]:
        found = (p for p in path.rglob("*") if p.is_file() and ".git" != p.name)
        return sorted(str(p.relative_to(path)) for p in found)

    _git.worktree(cache, path, sha, ["a.py", "we[ir]d*.py"])
    assert on_disk() == ["a.py", "we[ir]d*.py"]
    _git.worktree(cache, path, sha)
    assert on_disk() == sorted(files)
    _git.worktree(cache, path, sha, ["c/d.py"])
    assert on_disk() == ["c/d.py"]


def test_formatting_thousands_of_files_splits_the_command_line(tmp_path: Path) -> None:
    """A shell gets its command as one argument, capped at 128 KiB by Linux: 2000 files with
    long names (over 140 KiB of names) are formatted in several ruff runs, every one of them."""
    from agentparallels.activities.checks import ARGUMENT_BYTES, file_lists, format_files

    names = [
        f"pkg/module_with_a_rather_long_descriptive_name_number_{i:05d}.py" for i in range(2000)
    ]
    lists = file_lists(names)
    assert len(lists) > 1 and all(len(x) <= ARGUMENT_BYTES for x in lists)
    assert " ".join(lists).split() == names
    wt = tmp_path / "wt"
    (wt / "pkg").mkdir(parents=True)
    for name in names:
        (wt / name).write_text("x=1\n")
    format_files(wt, names, 120)
    assert {(wt / name).read_text() for name in names} == {"x = 1\n"}


def test_a_clean_worktree_at_the_right_commit_is_reused_only_if_it_holds_the_files_asked(
    tmp_path: Path,
) -> None:
    """A step that finds its worktree clean and at its commit reuses it as it is, unless it
    holds other files than it asks for (left sparse by a rename's step, asked whole now)."""
    from agentparallels.activities import _workspace

    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "b.py": "B = 1\n"})
    sha = git(repo, "rev-parse", "HEAD")
    held = []
    for sparse in (["a.py"], ["a.py"], None, ["b.py"]):
        with _workspace.editing(str(repo), "job", "s0", sha, sparse) as wt:
            held.append(sorted(p.name for p in wt.iterdir() if p.name != ".git"))
    assert held == [["a.py"], ["a.py"], ["a.py", "b.py"], ["b.py"]]


def _rename_step(repo: Path, job_id: str, the_plan: Plan) -> tuple[str, object]:
    from agentparallels.core.models import EditBatchInput, JobRef, ShardRef

    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id=job_id, repository=str(repo), base_commit=base, timestamp=0)
    return base, EditBatchInput(
        shard=ShardRef(job=job, name="s0"),
        paths=the_plan.files,
        checkpoint=base,
        edit=RenameEdit(old="a.old_name", new="zz_name"),
        change_commit=the_plan.change_commit,
        scope=the_plan.files,
        sparse=True,
    )


def test_a_verified_change_set_is_copied_without_a_worktree(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A plan given the job's verify rules checks the whole change set once and says so in its
    commit; a shard's step that would check its files against the same rules then writes one
    checkpoint commit per file from the change set's blobs, with no worktree at all, and
    ends at the same tree as the step that checks out and checks its files."""
    from agentparallels.activities._workspace import worktrees_dir
    from agentparallels.activities.refactor import VERIFIED_TRAILER, edit_files
    from agentparallels.core.models import Limits

    files = {**FILES, **{f"other{i}.py": f"X{i} = {i}\n" for i in range(5)}}
    tips = {}
    for name, rules in (("verified", Limits().verify_rules), ("unverified", None)):
        repo = make_repo(tmp_path / name, files)
        the_plan = planned(repo, f"job-{name}", format_change=True, verify_rules=rules)
        message = git(repo, "log", "-1", "--format=%B", str(the_plan.change_commit))
        assert (f"{VERIFIED_TRAILER}: {rules}" in message) == (rules is not None)
        base, step = _rename_step(repo, f"job-{name}", the_plan)
        result = ActivityEnvironment().run(edit_files, step)
        assert [o.status for o in result.outcomes] == ["committed", "committed"]
        log = git(
            repo,
            "log",
            "--format=%(trailers:key=Agentparallels-Edit,valueonly)",
            f"{base}..{result.tip}",
        )
        assert log.split() == ["b.py", "a.py"]  # a checkpoint commit per file, newest first
        assert (worktrees_dir(f"job-{name}") / "s0").exists() == (rules is None)
        tips[name] = git(repo, "rev-parse", f"{result.tip}^{{tree}}")
        # A retry of the step finds what it pushed and reports the same.
        assert ActivityEnvironment().run(edit_files, step) == result
    assert tips["verified"] == tips["unverified"]


def test_a_change_set_failing_the_rules_is_checked_by_its_shards(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A change set with a file that fails the verify rules is not marked verified: its shard
    checks out its files and stops at that file, reporting it, as it would have anyway."""
    from agentparallels.activities.refactor import VERIFIED_TRAILER, edit_files
    from agentparallels.core.models import Limits

    files = {**FILES, "b.py": "from a import old_name\n\nprint(old_name(), nowhere)\n"}
    repo = make_repo(tmp_path / "repo", files)
    the_plan = planned(repo, "job-bad", format_change=True, verify_rules=Limits().verify_rules)
    assert VERIFIED_TRAILER not in git(
        repo, "log", "-1", "--format=%B", str(the_plan.change_commit)
    )
    _, step = _rename_step(repo, "job-bad", the_plan)
    result = ActivityEnvironment().run(edit_files, step)
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert [o.path for o in failed] == ["b.py"] and "F821" in failed[0].output


@pytest.mark.parametrize(
    ("rules", "link"),
    [("E9,F63,F7,F82", False), ("E9,F63,F7,F82,I", False), ("E9,F63,F7,F82", True)],
)
def test_the_lint_vote_checks_out_the_changed_files_only(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, rules: str, link: bool
) -> None:
    """The checklist's lint vote with the default rules, which read each file alone, fills
    its worktree with the changed Python files only, and still votes no on a bad one; with a
    rule that looks at the folders around a file (import sorting), or a changed file that is
    a link (to a file the others would not include), the whole tree."""
    from agentparallels.activities import _git
    from agentparallels.activities.checklist import vote
    from agentparallels.core.checklist import VoteInput

    files = {"a.py": "A = 1\n", "b.py": "B = 1\n", **{f"o{i}.py": f"X = {i}\n" for i in range(4)}}
    repo = make_repo(tmp_path / "repo", files)
    base = git(repo, "rev-parse", "HEAD")
    (repo / "a.py").write_text("A = nowhere\n")
    (repo / "b.py").unlink()
    if link:
        (repo / "l.py").symlink_to("o0.py")
        git(repo, "add", "l.py")
    git(repo, "commit", "-qam", "edit")
    asked: list[object] = []
    real = _git.worktree

    def watched(cache: Path, path: Path, sha: str, sparse: object = None) -> object:
        asked.append(sparse)
        return real(cache, path, sha, sparse)

    monkeypatch.setattr(_git, "worktree", watched)
    inp = VoteInput(
        check="lint",
        repository=str(repo),
        job_id="job",
        base_commit=base,
        commit=git(repo, "rev-parse", "HEAD"),
        rules=rules,
    )
    result = ActivityEnvironment().run(vote, inp)
    assert not result.yes and "a.py" in result.reason
    assert asked == ([["a.py"]] if "I" not in rules.split(",") and not link else [None])


def test_the_plan_counts_tokens_only_when_asked(tmp_path: Path, cache_dir: Path) -> None:
    """Counting each file's tokens reads every file of the change: the plan does it for jobs
    that use the counts (a model's edit, shards packed by tokens), not for the others."""
    counted = {}
    for ask in (True, False):
        repo = make_repo(tmp_path / f"repo-{ask}", FILES)
        counted[ask] = planned(repo, f"job-{ask}", count_tokens=ask).tokens
    assert len(counted[True]) == 2 and all(n > 0 for n in counted[True])
    assert counted[False] == ()


def test_a_time_boxed_step_edits_and_reports_the_files_it_got_to(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A command edit's step with a time box runs its commands 25 at a time and stops starting
    more once the box is used up: it commits and reports the first files only, and the rest
    are the next step's; without a box it edits every file."""
    from agentparallels.activities.refactor import edit_files
    from agentparallels.core.models import (
        TIME_BOX_CHUNK,
        CommandEdit,
        EditBatchInput,
        JobRef,
        ShardRef,
    )

    names = [f"m{i:02d}.py" for i in range(60)]
    reported = {}
    for box in (0.5, None):
        repo = make_repo(tmp_path / f"repo-{box}", {n: "V = 1\n" for n in names})
        base = git(repo, "rev-parse", "HEAD")
        job = JobRef(job_id=f"job-{box}", repository=str(repo), base_commit=base, timestamp=0)
        step = EditBatchInput(
            shard=ShardRef(job=job, name="s0"),
            paths=tuple(names),
            checkpoint=base,
            # 25 commands of 0.05 s outlast a box of 0.5 s however fast the machine.
            edit=CommandEdit(command="sleep 0.05; echo 'W = 2' >> {file}"),
            time_box_s=box,
        )
        result = ActivityEnvironment().run(edit_files, step)
        assert {o.status for o in result.outcomes} == {"committed"}
        reported[box] = [o.path for o in result.outcomes]
        assert git(repo, "rev-list", "--count", f"{base}..{result.tip}") == str(len(reported[box]))
    assert reported[0.5] == names[:TIME_BOX_CHUNK]
    assert reported[None] == names


def test_the_test_command_runs_in_the_worktree_the_plan_left(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan keeps its worktree of the whole tree, clean at the change set: what a tool left
    in it while the plan ran (an ignored file, a cache folder) is gone, and it is not marked
    as being edited. The test command, on the same worker, then runs in it as it is (no new
    worktree, no reset), sees exactly the change set, and removes it after."""
    from agentparallels.activities import _git, refactor
    from agentparallels.activities._workspace import JOB_TREE, worktrees_dir

    repo = make_repo(tmp_path / "repo", {**FILES, ".gitignore": "__pycache__/\n"})
    real_commit = _git.commit_all

    def leaving_files(wt: Path, *args: object, **kwargs: object) -> object:
        (wt / "__pycache__").mkdir()
        (wt / "__pycache__" / "a.cpython.pyc").write_text("left by a tool\n")
        return real_commit(wt, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(refactor._git, "commit_all", leaving_files)
    the_plan = planned(repo, "job-t", format_change=True)
    monkeypatch.setattr(refactor._git, "commit_all", real_commit)
    tree = worktrees_dir("job-t") / JOB_TREE
    assert (tree / "a.py").exists()
    assert not (tree / "__pycache__").exists()
    assert not tree.with_name(f".{JOB_TREE}.editing").exists()
    calls: list[tuple[str, ...]] = []
    real = _git.run

    def watched(cwd: object, *args: str, **options: object) -> object:
        calls.append(args)
        return real(cwd, *args, **options)

    monkeypatch.setattr(_git, "run", watched)
    assert command_passes(repo, "job-t", the_plan, "test ! -e __pycache__ && grep -q zz_name a.py")
    assert not [
        c for c in calls if c[:2] == ("worktree", "add") or c[:1] in (("reset",), ("clean",))
    ]
    assert not tree.exists()


def test_a_worktree_left_marked_is_reset_before_the_test_command(tmp_path: Path) -> None:
    """A plan stopped mid-way leaves its worktree marked as being edited, whatever is in it: the
    test command's step resets it first, so it sees the commit it tests and nothing else."""
    from agentparallels.activities._workspace import JOB_TREE, worktrees_dir

    repo = make_repo(tmp_path / "repo", FILES)
    the_plan = planned(repo, "job-m", format_change=True)
    tree = worktrees_dir("job-m") / JOB_TREE
    tree.with_name(f".{JOB_TREE}.editing").touch()  # as a plan killed mid-way leaves it
    (tree / "left-by-the-plan.txt").write_text("x\n")
    (tree / "a.py").write_text("half-edited\n")
    command = "test ! -e left-by-the-plan.txt && grep -q zz_name a.py"
    assert command_passes(repo, "job-m", the_plan, command)


def test_a_file_that_does_not_parse_stops_neither_sorting_nor_formatting_of_the_others(
    tmp_path: Path,
) -> None:
    """Import sorting and formatting run in one sandbox, one after the other; the sort fails
    on a file that does not parse, and the formatting still runs on every file (the broken
    one is left for the verify rules to report)."""
    from agentparallels.activities.checks import format_files

    files = {
        **FILES,
        "c.py": "import sys\nimport os\nx=[1,2,\n    3]\nprint(os, sys, x)\n",
        "broken.py": "def f(:\n",
    }
    repo = make_repo(tmp_path / "repo", files)
    format_files(repo, ["c.py", "broken.py"], 60)
    assert (
        repo / "c.py"
    ).read_text() == "import os\nimport sys\n\nx = [1, 2, 3]\nprint(os, sys, x)\n"
    assert (repo / "broken.py").read_text() == "def f(:\n"


def test_the_plan_formats_and_checks_its_change_set_in_one_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorting imports, formatting and the verify rules' check of a rename's change set run in
    one sandbox, and the check's report, written in the worktree, is not in the change set."""
    from agentparallels.activities import sandbox
    from agentparallels.activities.refactor import VERIFIED_TRAILER
    from agentparallels.core.models import Limits

    jails: list[str] = []
    real = sandbox.jail

    def counted(policy: object, command: str, *args: object, **kwargs: object) -> object:
        jails.append(command)
        return real(policy, command, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sandbox, "jail", counted)
    repo = make_repo(tmp_path / "repo", FILES)
    rules = Limits().verify_rules
    the_plan = planned(repo, "job-one", format_change=True, verify_rules=rules)
    assert len(jails) == 1, jails
    change = str(the_plan.change_commit)
    assert f"{VERIFIED_TRAILER}: {rules}" in git(repo, "log", "-1", "--format=%B", change)
    assert git(repo, "ls-tree", "-r", "--name-only", change).split() == sorted(FILES)


def test_formatting_then_checking_in_one_sandbox_reports_findings_or_says_it_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``format_files(then_check=rules)`` returns the check's findings by path when the whole
    batch ran, and None when it stopped before the check (a file that does not parse fails
    the sort) or its output was unclear (each command then runs alone): the caller checks
    again. The check's report never stays in the worktree."""
    from agentparallels.activities import _proc, checks
    from agentparallels.core.models import Limits

    rules = Limits().verify_rules
    unsorted = "import sys\nimport os\nprint(os, sys, nowhere)\n"
    files = {**FILES, "c.py": unsorted, "broken.py": "def f(:\n"}
    repo = make_repo(tmp_path / "repo", files)
    found = checks.format_files(repo, ["c.py", "b.py"], 60, then_check=rules)
    assert found is not None and list(found) == ["c.py"] and "F821" in found["c.py"]
    assert (repo / "c.py").read_text().startswith("import os\nimport sys\n")
    assert checks.format_files(repo, ["c.py", "broken.py"], 60, then_check=rules) is None

    (repo / "c.py").write_text(unsorted)

    def unclear(*args: object, **kwargs: object) -> None:
        raise _proc.BatchUnclear("the batch's output does not end as its shell ends it")

    monkeypatch.setattr(checks, "run_commands", unclear)
    assert checks.format_files(repo, ["c.py"], 60, then_check=rules) is None
    assert (repo / "c.py").read_text().startswith("import os\nimport sys\n")
    assert git(repo, "status", "--porcelain", "--ignored").split() == ["M", "c.py"]
