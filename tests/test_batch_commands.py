"""A codemod's commands for a batch of files run in one sandbox, one after another
(``_proc.run_commands``): one bubblewrap start per batch instead of one per file (issue 15),
with each command still judged on its own: the first that fails stops the batch and is
reported with its own output, a command over its time limit is killed, and a hidden path is
named."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from agentparallels.activities import sandbox
from agentparallels.activities._proc import BatchUnclear, run_commands
from agentparallels.core.errors import SANDBOX_DENIED
from agentparallels.core.models import CommandEdit
from tests.support.repos import git, make_repo

BWRAP = sandbox.Policy()


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    path = tmp_path / "wt"
    path.mkdir()
    return path


def test_a_batch_runs_in_order_in_one_sandbox(wt: Path) -> None:
    """Every command runs, in order, in the worktree; they share one sandbox: what the first
    leaves in the sandbox's private /tmp, the last still finds (a sandbox per command would
    have given each an empty /tmp)."""
    commands = [
        "echo one > a.txt && echo kept > /tmp/left",
        "echo two > b.txt",
        "cat /tmp/left > c.txt",
    ]
    assert run_commands(commands, wt, 30, BWRAP) is None
    assert (wt / "a.txt").read_text() == "one\n"
    assert (wt / "b.txt").read_text() == "two\n"
    assert (wt / "c.txt").read_text() == "kept\n"


def test_the_first_failure_stops_the_batch_with_its_own_output(wt: Path) -> None:
    commands = [
        "echo first-output; touch a.txt",
        "echo second-output; echo broken >&2; exit 3",
        "touch c.txt",
    ]
    failure = run_commands(commands, wt, 30, BWRAP)
    assert failure is not None
    assert (failure.index, failure.command) == (1, commands[1])
    assert failure.done.exit_code == 3 and not failure.done.ok
    assert failure.done.output == "second-output\nbroken\n"  # as run_command gives it
    assert (wt / "a.txt").exists() and not (wt / "c.txt").exists()


def test_a_command_over_its_time_limit_is_killed(wt: Path) -> None:
    failure = run_commands(["true", "sleep 30", "touch late.txt"], wt, 1, BWRAP)
    assert failure is not None and failure.index == 1
    assert failure.done.timed_out and "[killed after 1s]" in failure.done.output
    assert not (wt / "late.txt").exists()


def test_a_hidden_path_is_named_for_the_command_that_met_it(wt: Path) -> None:
    project = Path(__file__).parent
    with pytest.raises(ApplicationError) as denied:
        run_commands(["true", f"cat {project}/conftest.py"], wt, 30, BWRAP)
    assert denied.value.type == SANDBOX_DENIED
    assert f"hides {project}/conftest.py from `cat {project}/conftest.py`" in denied.value.message


FORKER = """
import os, time
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
except OSError:
    pass
"""


def test_a_batch_that_met_the_process_limit_is_unclear(wt: Path) -> None:
    """Forks the process limit refused cannot be put on one command of the batch: the batch
    says so, and the editor runs the commands one by one instead (below)."""
    (wt / "forker.py").write_text(FORKER)
    with pytest.raises(BatchUnclear, match="process limit"):
        run_commands(
            ["true", f"{sys.executable} forker.py", "true"], wt, 50, sandbox.Policy(processes=32)
        )


def test_the_editor_runs_a_batch_at_once_and_an_unclear_one_command_by_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor gives a batch's commands to one ``run_commands`` call. When the batch cannot
    say which command stopped it, the editor starts again from a clean worktree and runs each
    command alone, naming the file whose command failed."""
    from agentparallels.activities import _editors
    from agentparallels.activities._git import cache_root
    from agentparallels.core.models import EditBatchInput, JobRef, ShardRef

    # A worktree of this worker's cache, the only place the editor discards changes in.
    cache = make_repo(
        cache_root() / "repos" / f"batch-{tmp_path.name}",
        {"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"},
    )
    repo = cache_root() / "worktrees" / f"batch-{tmp_path.name}"
    git(cache, "worktree", "add", "--quiet", "--detach", str(repo))
    job = JobRef(job_id="j", repository=str(repo), base_commit="HEAD", timestamp=0)

    # The editor hands the whole batch to one run_commands call.
    real, batches = _editors.run_commands, []

    def spy(commands: list[str], *args: Any, **kwargs: Any) -> Any:
        batches.append(commands)
        return real(commands, *args, **kwargs)

    monkeypatch.setattr(_editors, "run_commands", spy)
    sed = CommandEdit(command="sed -i s/1/3/ {file}")
    first = EditBatchInput(
        shard=ShardRef(job=job, name="s"), paths=("a.py", "c.py"), checkpoint="x", edit=sed
    )
    _editors.CommandEditor(sed).apply(repo, first)
    assert len(batches) == 1 and len(batches[0]) == 2
    assert (repo / "a.py").read_text() == (repo / "c.py").read_text().replace("C", "A")
    git(repo, "checkout", "--quiet", ".")

    def unclear(*args: object, **kwargs: object) -> None:
        (repo / "a.py").write_text("half done\n")  # what the batch left, to be discarded
        raise BatchUnclear("exit -9")

    monkeypatch.setattr(_editors, "run_commands", unclear)
    edit = CommandEdit(command="grep -q B {file} && exit 5; sed -i s/1/2/ {file}")
    step = EditBatchInput(
        shard=ShardRef(job=job, name="s"), paths=("a.py", "b.py", "c.py"), checkpoint="x", edit=edit
    )
    with pytest.raises(_editors.EditFailed) as failed:
        _editors.CommandEditor(edit).apply(repo, step)
    assert failed.value.path == "b.py" and "exit" not in failed.value.output
    assert (repo / "a.py").read_text() == "A = 2\n"  # the batch's leftovers discarded, redone
    assert (repo / "c.py").read_text() == "C = 1\n"


def test_a_batch_too_long_for_one_script_runs_in_several(wt: Path) -> None:
    """A shell gets its script as one argument, which Linux caps at 128 KiB: 700 commands of
    some 200 bytes each run in several sandboxes, and a failure is still named by its place
    in the whole batch."""
    pad = "x" * 180
    commands = [f"echo {i} >> log.txt # {pad}" for i in range(700)]
    commands[650] = f"exit 7 # {pad}"
    failure = run_commands(commands, wt, 30, BWRAP)
    assert failure is not None and failure.index == 650 and failure.done.exit_code == 7
    assert (wt / "log.txt").read_text().split() == [str(i) for i in range(650)]


def test_a_command_cannot_fake_the_end_of_the_batch(wt: Path) -> None:
    """The markers between commands carry a secret of the run: a command that prints a
    look-alike failure (or success) line changes nothing; a batch whose output does not end
    as its shell ends it is unclear, and the editor then runs its commands one by one."""
    fake = r"printf '\n\036agentparallels-0123456789abcdef failed 0 1\n'"
    assert run_commands([fake, "true"], wt, 30, BWRAP) is None
    failure = run_commands(["true", f"{fake}; exit 3"], wt, 30, BWRAP)
    assert failure is not None and (failure.index, failure.done.exit_code) == (1, 3)
    # Something still writing after the shell's last word (a child of the failing command that
    # waits for the batch's shell, its process group's leader, to end): in the sandbox the
    # namespace ends with the shell, so only an unconfined batch shows it.
    wait_for_shell = (
        "pg=$(cut -d' ' -f5 /proc/self/stat); "
        'until [ ! -e /proc/$pg ] || grep -q "^State:.*Z" /proc/$pg/status; do sleep 0.05; done'
    )
    late = ["true", f"({wait_for_shell}; echo late) & exit 4"]
    with pytest.raises(BatchUnclear):
        # sandbox off: sandboxed, the writer dies with the batch's namespace, never shows
        run_commands(late, wt, 30, sandbox.Policy(mode="none"))  # sandbox off: writer outlives
    failure = run_commands(late, wt, 30, BWRAP)
    assert failure is not None and (failure.index, failure.done.exit_code) == (1, 4)
