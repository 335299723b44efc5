"""A worker killed while it makes or uses a worktree leaves nothing the next attempt trusts.

Each crash is real: a child process holds the worktree and ends with ``os._exit`` at the
point the test names (no ``finally`` runs, the kernel releases its locks), then the test uses
the same worktree the way the next attempt on that worker would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from agentparallels.activities import _workspace
from tests.support.repos import git, make_repo

FILES = {"pkg/a.py": "A = 1\n", "pkg/b.py": "B = 2\n"}


def crash(script: str, cache: Path) -> None:
    """Run ``script`` (which ends in ``os._exit(9)``) as a separate worker process."""
    env = {**os.environ, "AGENTPARALLELS_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 9, done.stderr


def test_a_worktree_half_made_by_a_killed_worker_is_made_again(
    tmp_path: Path, cache_dir: Path
) -> None:
    """`git worktree add` writes HEAD before it checks the files out: a worker killed between
    the two leaves a worktree at the right commit with no files. The next use must not take it
    for clean (a plan step would then list no files and a job succeed having done nothing)."""
    repo = make_repo(tmp_path / "repo", FILES)
    sha = git(repo, "rev-parse", "HEAD")
    crash(
        f"""
        import os
        from agentparallels.activities import _git, _workspace

        def killed_mid_add(cache, path, sha, sparse=None):  # HEAD written, no files yet
            path.parent.mkdir(parents=True, exist_ok=True)
            _git.run(cache, "worktree", "add", "--quiet", "--no-checkout", "--detach",
                     str(path), sha)
            os._exit(9)

        _git.worktree = killed_mid_add
        with _workspace.editing({str(repo)!r}, "job", "s0", {sha!r}):
            pass
        """,
        cache_dir,
    )
    with _workspace.editing(str(repo), "job", "s0", sha) as wt:
        assert (wt / "pkg/a.py").read_text() == "A = 1\n"
        assert git(wt, "status", "--porcelain") == ""


def test_a_scratch_worktree_left_dirty_by_a_killed_worker_is_reset(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A worker killed mid-step in a scratch worktree (plan, checks) leaves it dirty at the
    same commit; the next attempt gets it clean, not with the dead attempt's half-done edits."""
    repo = make_repo(tmp_path / "repo", FILES)
    sha = git(repo, "rev-parse", "HEAD")
    crash(
        f"""
        import os
        from agentparallels.activities import _workspace

        with _workspace.scratch_worktree({str(repo)!r}, "job", "plan", {sha!r}) as wt:
            (wt / "pkg/a.py").write_text("half done\\n")
            (wt / "stray.txt").write_text("left over\\n")
            os._exit(9)
        """,
        cache_dir,
    )
    with _workspace.scratch_worktree(str(repo), "job", "plan", sha) as wt:
        assert (wt / "pkg/a.py").read_text() == "A = 1\n"
        assert not (wt / "stray.txt").exists()


def test_a_worktree_whose_folder_is_gone_but_still_registered_is_made_again(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A worktree's folder removed without `git worktree remove` (a crash while it was being
    removed, a cleaner of the cache) leaves it registered in the cache, and `git worktree add`
    refuses a path still registered: the worktree is made again all the same (the registrations
    of folders that are gone are pruned first)."""
    import shutil

    from agentparallels.activities import _git

    repo = make_repo(tmp_path / "repo", FILES)
    sha = git(repo, "rev-parse", "HEAD")
    with _workspace.editing(str(repo), "job", "s0", sha) as wt:
        pass
    shutil.rmtree(wt)
    cache = _git.cached_repo(str(repo))
    assert str(wt) in git(cache, "worktree", "list", "--porcelain")  # registered, folder gone
    with _workspace.editing(str(repo), "job", "s0", sha) as again:
        assert (again / "pkg/a.py").read_text() == "A = 1\n"
        assert git(again, "status", "--porcelain") == ""
