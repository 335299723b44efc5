"""The coding agent's tool steps and the planner's map, run as activities on real git
repositories, in the real sandbox: what the model is told, what is committed and pushed, and
that a retried or moved step neither edits twice nor loses the unit's work."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentparallels.activities.agent_tools import CALL_TRAILER, agent_tool
from agentparallels.activities.repo_map import repo_map
from agentparallels.core import tokens
from agentparallels.core.agentjob import RepoMapInput, ToolOutcome, ToolRequest
from agentparallels.core.errors import BAD_INPUT, GIT_CONFLICT, SANDBOX_DENIED
from agentparallels.core.models import JobRef, ShardRef
from agentparallels.core.tools import ToolCall
from tests.support.repos import git, make_repo

PYTEST = "python -m pytest -q -p no:cacheprovider tests"
FILES = {
    "src/shop/__init__.py": "",
    "src/shop/money.py": """
        def to_cents(amount):
            return round(amount * 100)


        def from_cents(cents):
            return cents / 100
    """,
    "src/shop/cart.py": """
        from shop.money import to_cents


        def total(prices):
            return sum(to_cents(p) for p in prices)


        def count(prices):
            return len(prices)
    """,
    "pyproject.toml": """
        [tool.pytest.ini_options]
        pythonpath = ["src"]
    """,
    "tests/test_money.py": """
        from shop.money import to_cents


        def test_to_cents():
            assert to_cents(1.5) == 150
    """,
    "README.md": "A shop.\n",
}


@pytest.fixture
def unit(tmp_path: Path) -> ShardRef:
    repo = make_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    return ShardRef(job=job, name="unit-money-1")


def call(
    unit: ShardRef, name: str, checkpoint: str | None = None, key: str = "k1", **arguments: Any
) -> ToolOutcome:
    req = request(unit, name, checkpoint, key, **arguments)
    return ActivityEnvironment().run(agent_tool, req)


def request(
    unit: ShardRef, name: str, checkpoint: str | None, key: str, **arguments: Any
) -> ToolRequest:
    return ToolRequest(
        unit=unit,
        checkpoint=checkpoint or unit.job.base_commit,
        call=ToolCall(id="c", name=name, arguments=arguments),
        key=key,
        scope=("src/shop/money.py", "src/shop/rates.py"),
        files=("src/**", "tests/**"),
        test_cmd=PYTEST,
    )


def repo_of(unit: ShardRef) -> Path:
    return Path(unit.job.repository)


def tree(unit: ShardRef, commit: str) -> str:
    return git(repo_of(unit), "rev-parse", f"{commit}^{{tree}}")


# --- Reading ----------------------------------------------------------------------------------


def test_read_file_numbers_lines_and_refuses_what_it_may_not_read(unit: ShardRef) -> None:
    """Numbered lines of the range asked for; a path outside the repository or the job's
    files is refused, and nothing moves."""
    out = call(unit, "read_file", path="src/shop/cart.py", start=4, end=5)
    assert out.ok and out.output.splitlines()[:2] == [
        "4\tdef total(prices):",
        "5\t    return sum(to_cents(p) for p in prices)",
    ]
    assert "[lines 4-5 of 9; read on with start=6]" in out.output
    assert out.summary == "read src/shop/cart.py:4-5"
    assert out.head == unit.job.base_commit and out.state == tree(unit, out.head)
    for path, why in (("../etc/passwd", "inside the repository"), ("README.md", "outside")):
        refused = call(unit, "read_file", path=path)
        assert not refused.ok and why in refused.output, refused.output
    missing = call(unit, "read_file", path="src/shop/nope.py")
    assert not missing.ok and "no file src/shop/nope.py" in missing.output


def test_read_file_returns_at_most_read_lines(unit: ShardRef) -> None:
    req = request(unit, "read_file", None, "k", path="src/shop/cart.py")
    out = ActivityEnvironment().run(agent_tool, req.model_copy(update={"read_lines": 10}))
    assert out.summary == "read src/shop/cart.py:1-9"
    req = request(unit, "read_file", None, "k", path="src/shop/cart.py", start=2, end=100)
    short = req.model_copy(update={"read_lines": 3})
    out = ActivityEnvironment().run(agent_tool, short)
    assert [line.split("\t")[0] for line in out.output.splitlines()[:-1]] == ["2", "3", "4"]


def test_list_files_and_search_stay_in_the_jobs_files(unit: ShardRef) -> None:
    listed = call(unit, "list_files")
    assert listed.ok and listed.output.splitlines() == [
        "src/shop/__init__.py",
        "src/shop/cart.py",
        "src/shop/money.py",
        "tests/test_money.py",
    ]  # README.md is not in the job's files
    assert call(unit, "list_files", directory="tests").output == "tests/test_money.py"
    found = call(unit, "search", pattern=r"to_cents\(")
    assert found.ok and found.summary == "search 'to_cents\\\\('"
    assert found.output.splitlines() == [
        "src/shop/cart.py:5:     return sum(to_cents(p) for p in prices)",
        "src/shop/money.py:1: def to_cents(amount):",
        "tests/test_money.py:4: def test_to_cents():",
        "tests/test_money.py:5:     assert to_cents(1.5) == 150",
    ]
    in_tests = call(unit, "search", pattern="to_cents", path="tests")
    assert in_tests.summary == "search 'to_cents' in tests"
    assert [line.split(":")[0] for line in in_tests.output.splitlines()] == [
        "tests/test_money.py"
    ] * 3
    assert call(unit, "search", pattern="no such thing").output == "no matches"
    bad = call(unit, "search", pattern="(unclosed")
    assert not bad.ok and "the search failed" in bad.output


# --- Editing ----------------------------------------------------------------------------------


def test_edit_commits_and_pushes_one_checkpoint_with_the_calls_key(unit: ShardRef) -> None:
    """A unique snippet is replaced; the commit changes that file alone, sits on the unit's
    branch in the job's repository (not only in this worker's cache) and names the call."""
    out = call(unit, "edit_file", key="job-1/money/1/3", path="src/shop/money.py",
               old="round(amount * 100)", new="int(round(amount * 100))")  # fmt: skip
    repo = repo_of(unit)
    assert (
        out.ok and out.summary == "edit src/shop/money.py" and out.changed == ("src/shop/money.py",)
    )
    assert git(repo, "rev-parse", unit.ref) == out.head != unit.job.base_commit
    assert git(repo, "rev-parse", f"{out.head}^") == unit.job.base_commit
    assert git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", out.head) == (
        "src/shop/money.py"
    )
    assert f"{CALL_TRAILER}: job-1/money/1/3" in git(repo, "log", "-1", "--format=%B", out.head)
    assert "int(round(amount * 100))" in git(repo, "show", f"{out.head}:src/shop/money.py")
    assert out.state == tree(unit, out.head)
    # The next call starts from the new checkpoint and sees the edit.
    again = call(unit, "read_file", out.head, path="src/shop/money.py", end=2)
    assert "int(round(amount * 100))" in again.output


def test_an_edit_that_does_not_fit_is_refused_with_help(unit: ShardRef) -> None:
    """No occurrence: the closest lines; two: where they are; the same text: no change. None
    commits anything or makes the unit's branch."""
    missing = call(unit, "edit_file", path="src/shop/money.py",
                   old="def to_cent(amount):", new="def cents(amount):")  # fmt: skip
    assert not missing.ok and "was not found" in missing.output
    assert "1\tdef to_cents(amount):" in missing.output
    twice = call(unit, "edit_file", path="src/shop/money.py", old="    return", new="  return")
    assert not twice.ok and "occurs 2 times" in twice.output and "lines 2, 6" in twice.output
    same = call(unit, "edit_file", path="src/shop/money.py", old="cents", new="cents")
    assert not same.ok and "no change" in same.output
    for out in (missing, twice, same):
        assert out.head == unit.job.base_commit and out.changed == ()
    assert git(repo_of(unit), "for-each-ref", "refs/agentparallels") == ""


def test_an_edit_outside_the_scope_is_refused_and_nothing_is_committed(unit: ShardRef) -> None:
    out = call(unit, "edit_file", path="src/shop/cart.py", old="len(prices)", new="0")
    assert not out.ok and "outside your scope" in out.output
    assert "src/shop/money.py" in out.output  # it says what the scope is
    wrote = call(unit, "write_file", path="src/shop/other.py", content="x = 1\n")
    assert not wrote.ok and "outside your scope" in wrote.output
    assert git(repo_of(unit), "for-each-ref", "refs/agentparallels") == ""


def test_write_file_creates_new_files_only(unit: ShardRef) -> None:
    exists = call(unit, "write_file", path="src/shop/money.py", content="x = 1\n")
    assert not exists.ok and "use edit_file" in exists.output
    made = call(unit, "write_file", path="src/shop/rates.py", content="VAT = 0.2\n")
    assert made.ok and made.changed == ("src/shop/rates.py",)
    assert git(repo_of(unit), "show", f"{unit.ref}:src/shop/rates.py") == "VAT = 0.2"
    assert git(repo_of(unit), "rev-list", "--count", f"{unit.job.base_commit}..{unit.ref}") == "1"


def test_writing_below_a_file_is_refused_to_the_model(unit: ShardRef) -> None:
    """A scope path that puts a folder where a file is gets a reply, not a failed step."""
    req = request(unit, "write_file", None, "k1", path="src/shop/money.py/x.py", content="")
    req = req.model_copy(update={"scope": ("src/shop/money.py/x.py",)})
    done = ActivityEnvironment().run(agent_tool, req)
    assert not done.ok and "a file stands where its folder would be" in done.output


def test_a_retried_edit_returns_the_pushed_commit_without_a_second(unit: ShardRef) -> None:
    """The first attempt pushed and died before reporting: the retry (same key, same
    checkpoint) finds its commit and reports it; a different call from that checkpoint is a
    branch that moved, which no retry fixes."""
    args = {"path": "src/shop/money.py", "old": "cents / 100", "new": "cents / 100.0"}
    first = call(unit, "edit_file", key="k-7", **args)
    retry = call(unit, "edit_file", key="k-7", **args)
    untimed = {"elapsed_ms": 0}  # each attempt takes its own time
    assert retry.model_copy(update=untimed) == first.model_copy(update=untimed)
    repo = repo_of(unit)
    assert git(repo, "rev-list", "--count", f"{unit.job.base_commit}..{unit.ref}") == "1"
    with pytest.raises(ApplicationError) as moved:
        call(unit, "edit_file", key="k-8", **args)
    assert moved.value.type == GIT_CONFLICT and moved.value.non_retryable
    assert git(repo, "rev-parse", unit.ref) == first.head


def test_a_second_worker_with_its_own_cache_goes_on_from_the_pushed_head(
    unit: ShardRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(tmp_path / "first-worker"))
    first = call(unit, "edit_file", key="k1", path="src/shop/money.py",
                 old="cents / 100", new="cents / 100.0")  # fmt: skip
    second_cache = tmp_path / "second-worker"
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(second_cache))
    read = call(unit, "read_file", first.head, path="src/shop/money.py")
    assert "cents / 100.0" in read.output
    made = call(unit, "write_file", first.head, key="k2", path="src/shop/rates.py",
                content="VAT = 0.2\n")  # fmt: skip
    repo = repo_of(unit)
    assert made.ok and git(repo, "rev-parse", f"{unit.ref}^") == first.head
    assert git(repo, "rev-parse", unit.ref) == made.head
    assert any(second_cache.rglob("HEAD"))  # it worked from its own (new) cache


# --- Checking ---------------------------------------------------------------------------------


def test_run_check_fails_on_a_syntax_error_and_passes_once_fixed(unit: ShardRef) -> None:
    nothing = call(unit, "run_check")
    assert nothing.ok and nothing.check == "passed" and "no file changed" in nothing.output
    broken = call(unit, "edit_file", key="k1", path="src/shop/money.py",
                  old="def from_cents(cents):", new="def from_cents(cents)")  # fmt: skip
    failed = call(unit, "run_check", broken.head, key="k2")
    assert not failed.ok and failed.check == "failed" and failed.summary == "check: failed"
    assert "src/shop/money.py:5" in failed.output
    fixed = call(unit, "edit_file", broken.head, key="k3", path="src/shop/money.py",
                 old="def from_cents(cents)", new="def from_cents(cents: int):")  # fmt: skip
    passed = call(unit, "run_check", fixed.head, key="k4")
    assert passed.ok and passed.check == "passed" and passed.summary == "check: passed"
    assert "src/shop/money.py" in passed.output


def test_run_check_runs_the_check_command_on_each_changed_file(unit: ShardRef) -> None:
    edited = call(unit, "write_file", key="k1", path="src/shop/rates.py", content="VAT = 0.2\n")
    req = request(unit, "run_check", edited.head, "k2")
    check = "grep -q TODO {file} || { echo '{file}: no TODO'; exit 1; }"
    out = ActivityEnvironment().run(agent_tool, req.model_copy(update={"check_cmd": check}))
    assert not out.ok and "src/shop/rates.py: no TODO" in out.output
    assert "money.py" not in out.output  # only what the unit changed


def test_run_tests_reports_the_exit_code_and_the_output_tail(unit: ShardRef) -> None:
    passed = call(unit, "run_tests")
    assert passed.ok and passed.check == "passed" and passed.summary == "tests: passed"
    assert passed.output.startswith("exit code 0\n") and "1 passed" in passed.output
    broken = call(unit, "edit_file", key="k1", path="src/shop/money.py",
                  old="round(amount * 100)", new="round(amount * 10)")  # fmt: skip
    failed = call(unit, "run_tests", broken.head, key="k2")
    assert not failed.ok and failed.check == "failed"
    assert failed.summary == "tests: 1 failed (exit 1)"
    assert failed.output.startswith("exit code 1\n") and "assert 15 == 150" in failed.output
    small = request(unit, "run_tests", broken.head, "k3").model_copy(update={"output_chars": 200})
    tail = ActivityEnvironment().run(agent_tool, small).output
    assert len(tail) <= 200 and tail.startswith("exit code 1\n[...]\n")
    assert "assert 15 == 150" in tail and "1 failed in" in tail
    none = request(unit, "run_tests", None, "k4").model_copy(update={"test_cmd": None})
    missing = ActivityEnvironment().run(agent_tool, none)
    assert not missing.ok and "no test command was given" in missing.output


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (so not behind the sandbox's private /tmp): hidden from commands."""
    path = Path(tempfile.mkdtemp(prefix="agent-tools-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_what_the_sandbox_hides_is_named_not_blamed_on_the_code(
    unit: ShardRef, outside: Path
) -> None:
    """A test command the sandbox cannot start (exit 127) fails the step with the sandbox's
    explanation and the flag that exposes it; a test that reads a hidden file fails, and the
    model is told that the sandbox hid it."""
    tool = outside / "run-tests"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    (outside / "data.txt").write_text("fixture\n")
    hidden = f"sh -c '{tool}'"  # named inside a script: the sandbox cannot find it by itself
    req = request(unit, "run_tests", None, "k").model_copy(update={"test_cmd": hidden})
    with pytest.raises(ApplicationError) as denied:
        ActivityEnvironment().run(agent_tool, req)
    assert denied.value.type == SANDBOX_DENIED and denied.value.non_retryable
    assert f"the sandbox hides {tool}" in denied.value.message
    assert f"--sandbox-ro {outside}" in denied.value.message
    reads = req.model_copy(update={"test_cmd": f"cat {outside}/data.txt"})
    out = ActivityEnvironment().run(agent_tool, reads)
    assert not out.ok and out.check == "failed"
    assert f"[the sandbox hides {outside}/data.txt" in out.output


def test_finish_and_unknown_tools_are_the_workflows_bug(unit: ShardRef) -> None:
    for name in ("finish", "rm_rf"):
        with pytest.raises(ApplicationError) as bug:
            call(unit, name, summary="done")
        assert bug.value.type == BAD_INPUT and bug.value.non_retryable


# --- The planner's map ------------------------------------------------------------------------


def test_repo_map_ranks_the_files_the_task_names_first(unit: ShardRef) -> None:
    inp = RepoMapInput(job=unit.job, task="Make total() skip negative prices", files=("src/**",),
                       tokens=2000)  # fmt: skip
    out = ActivityEnvironment().run(repo_map, inp)
    assert out.files == ("src/shop/__init__.py", "src/shop/cart.py", "src/shop/money.py")
    lines = out.text.splitlines()
    assert lines[:3] == ["src/shop/cart.py", "  def total(prices)", "  def count(prices)"]
    assert "  def to_cents(amount)" in lines and out.tokens == tokens.count(out.text)


def test_repo_map_keeps_to_its_budget_and_says_what_it_left_out(tmp_path: Path) -> None:
    many = {f"pkg/mod{i:02}.py": f"def helper_{i}(value):\n    return value\n" for i in range(40)}
    many["pkg/broken.py"] = "def oops(:\n"
    many["pkg/ledger.py"] = "class Ledger:\n    def post(self): ...\n    def close(self): ...\n"
    repo = make_repo(tmp_path / "big", many)
    job = JobRef(job_id="j", repository=str(repo), base_commit=git(repo, "rev-parse", "HEAD"),
                 timestamp=1_700_000_000)  # fmt: skip
    inp = RepoMapInput(job=job, task="close the ledger", files=("**/*.py",), tokens=120)
    out = ActivityEnvironment().run(repo_map, inp)
    assert out.tokens <= 120 and len(out.files) == 42
    assert out.text.startswith("pkg/ledger.py\n  class Ledger: post, close")
    assert out.text.splitlines()[-1].endswith("more files not shown)")
    whole = ActivityEnvironment().run(repo_map, inp.model_copy(update={"tokens": 5000}))
    assert "pkg/broken.py\n  (could not parse)" in whole.text and "not shown" not in whole.text
