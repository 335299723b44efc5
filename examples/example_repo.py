"""Shared by the demos: a fresh git repository holding a copy of the example package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).parent / "agentparallels")
TESTS = "python -m pytest -q -p no:cacheprovider"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def fresh_copy(prefix: str) -> tuple[Path, str]:
    """A new repository with ``examples/shopkart`` committed on main, and a job id for it."""
    repo = Path(tempfile.mkdtemp(prefix=f"agentparallels-{prefix}-")) / "shopkart"
    shutil.copytree(HERE / "shopkart", repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "shopkart: the example package")
    return repo, f"{prefix}-{repo.parent.name.rsplit('-', 1)[-1]}"


def show_branch(repo: Path, job_id: str) -> None:
    branch = f"agentparallels/{job_id}"
    print(f"\n$ git log --stat --format='%h %s' main..{branch}   (in {repo})")
    print(git(repo, "log", "--stat", "--format=%h %s", f"main..{branch}").rstrip())
