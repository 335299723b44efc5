"""Two attempts of one edit step at once on one worker's cache (a starved attempt the server
gave up on, and its retry): whatever the interleaving, no commit names a file it does not
change, and the branch ends with the edit. Also each guard on its own: a commit that does not
change its file is refused, and so is an earlier attempt's commit that claims a file by its
trailer alone."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from agentparallels.activities import _git, refactor
from agentparallels.activities.refactor import edit_files
from agentparallels.core.errors import GIT_CONFLICT
from agentparallels.core.models import (
    CommandEdit,
    EditBatchInput,
    EditBatchResult,
    JobRef,
    ShardRef,
)
from tests.support.repos import git, make_repo

SED = CommandEdit(command="sed -i 's/VALUE/CONST/' {file}")
WAIT_S = 60


def setup(tmp_path: Path) -> tuple[Path, EditBatchInput]:
    repo = make_repo(tmp_path / "repo", {"m0.py": "VALUE = 0\n", "m1.py": "VALUE = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    job = JobRef(job_id="job-1", repository=str(repo), base_commit=base, timestamp=1_700_000_000)
    shard = ShardRef(job=job, name="00-root")
    return repo, EditBatchInput(shard=shard, paths=("m0.py",), checkpoint=base, edit=SED)


def waits_for_a_lock(pid: int) -> bool:
    """Whether a thread of process ``pid`` is blocked on a file lock (``/proc/locks`` lists
    waiters with ``->``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


def assert_each_commit_changes_its_file(repo: Path, base: str, branch: str) -> None:
    for sha in git(repo, "rev-list", f"{base}..{branch}").split():
        named = _git.trailer(git(repo, "log", "-1", "--format=%B", sha), _git.EDIT_TRAILER)
        changed = git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", sha)
        assert changed == named, f"{sha} names {named} but changes {changed or 'nothing'}"


def test_a_retry_that_resets_the_worktree_mid_commit_loses_no_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt A stops between its change check and its commit; attempt B of the same step
    then starts on the same worktree (and, unguarded, resets it). Neither pushes a commit that
    leaves m0.py unedited, a third attempt reports the edit, and the branch holds it."""
    repo, step = setup(tmp_path)
    a_checked, b_reached, a_done = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    real_verify = refactor.verify

    def verify(*args: Any, **kwargs: Any) -> Any:  # between the change check and the commit
        if threading.current_thread().name == "A":
            a_checked.set()
            assert b_reached.wait(WAIT_S)
        return real_verify(*args, **kwargs)

    real_worktree = _git.worktree

    def worktree(*args: Any, **kwargs: Any) -> Path:  # B has reset (or re-made) the worktree
        path = real_worktree(*args, **kwargs)
        if threading.current_thread().name == "B":
            b_reached.set()
            assert a_done.wait(WAIT_S)
        return path

    monkeypatch.setattr(refactor, "verify", verify)
    monkeypatch.setattr(_git, "worktree", worktree)

    def attempt(name: str, done: threading.Event | None = None) -> None:
        try:
            results[name] = ActivityEnvironment().run(edit_files, step)
        except Exception as e:  # a failed attempt is retried by the server: allowed
            results[name] = e
        finally:
            if done is not None:
                done.set()

    a = threading.Thread(target=attempt, args=("A", a_done), name="A")
    a.start()
    assert a_checked.wait(WAIT_S)
    b = threading.Thread(target=attempt, args=("B",), name="B")
    b.start()
    for _ in range(WAIT_S * 20):  # until B reset the worktree or waits for A to finish with it
        if b_reached.is_set() or waits_for_a_lock(os.getpid()):
            break
        b.join(0.05)
    b_reached.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert not a.is_alive() and not b.is_alive()

    third = ActivityEnvironment().run(edit_files, step)  # the retry the server runs next
    assert [(o.path, o.status) for o in third.outcomes] == [("m0.py", "committed")]
    base, branch = step.checkpoint, step.shard.ref
    assert git(repo, "rev-parse", branch) == third.tip
    assert_each_commit_changes_its_file(repo, base, branch)
    assert git(repo, "show", f"{branch}:m0.py") == "CONST = 0"
    for name in ("A", "B"):
        if isinstance(results[name], EditBatchResult):
            assert results[name] == third


def test_a_commit_that_does_not_change_its_file_is_refused(tmp_path: Path) -> None:
    """commit_files, asked to commit a file that is as its parent has it, raises instead of
    making a commit that names it."""
    repo, step = setup(tmp_path)
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "--quiet", "--detach", str(wt), step.checkpoint)
    (wt / "m1.py").write_text("VALUE = 10\n")
    message = f"edit m0.py\n\n{_git.EDIT_TRAILER}: m0.py"
    with pytest.raises(_git.EmptyEdit, match="m0.py"):
        _git.commit_files(wt, step.checkpoint, [("m0.py", message)], 1_700_000_000)
    assert git(repo, "for-each-ref", "refs/agentparallels-import") == ""


def test_an_earlier_commit_is_taken_only_if_it_changes_the_file_it_names(
    tmp_path: Path,
) -> None:
    """The shard's branch holds a commit with m0.py's Edit trailer that does not change m0.py
    (what an overlapping attempt once pushed): the step refuses it rather than report m0.py
    as edited."""
    repo, step = setup(tmp_path)
    message = f"run sed: m0.py\n\n{_git.JOB_TRAILER}: job-1\n{_git.EDIT_TRAILER}: m0.py"
    empty = git(
        repo, "commit-tree", f"{step.checkpoint}^{{tree}}", "-p", step.checkpoint, "-m", message
    )
    git(repo, "update-ref", step.shard.ref, empty)
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(edit_files, step)
    assert refused.value.type == GIT_CONFLICT
    assert "m0.py" in refused.value.message
