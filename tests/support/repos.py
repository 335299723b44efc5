"""Real git repositories for tests, and an exact picture of one's state."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

from temporalio.client import Client, WorkflowHandle

from agentparallels.core.models import RefactorInput, RefactorResult


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A repository on branch main with ``files`` committed (contents are dedented)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    write(path, files)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dedent(text).lstrip("\n"))


def snapshot(repo: Path) -> dict[str, Any]:
    """Everything a job must leave as it found it: refs, HEAD, index, status, worktrees and
    the bytes of every file in the working tree."""
    files = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "head": (git(repo, "symbolic-ref", "-q", "HEAD"), git(repo, "rev-parse", "HEAD")),
        "index": git(repo, "ls-files", "--stage"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "files": files,
    }


def commits_touching(repo: Path, branch: str, path: str) -> int:
    """Non-merge commits on ``branch`` (since main) that change ``path``."""
    out = git(repo, "log", "--no-merges", "--format=%H", f"main..{branch}", "--", path)
    return len(out.split())


async def start_job(
    client: Client, task_queue: str, job: RefactorInput, job_id: str | None = None
) -> WorkflowHandle[Any, RefactorResult]:
    return await client.start_workflow(
        "RefactorWorkflow",
        job,
        id=job_id or f"job-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
        result_type=RefactorResult,
    )


def src_layout_repo(path: Path) -> Path:
    """A src-layout package whose tests import it, with one widely used function."""
    return make_repo(
        path,
        {
            "pyproject.toml": """
                [project]
                name = "pkg"
                version = "0"
                [tool.pytest.ini_options]
                pythonpath = ["src"]
            """,
            "src/pkg/__init__.py": "",
            "src/pkg/money.py": """
                def to_cents(amount: float) -> int:
                    return round(amount * 100)
            """,
            "src/pkg/shop/__init__.py": "",
            "src/pkg/shop/cart.py": """
                from pkg.money import to_cents


                def total(prices: list[float]) -> int:
                    return sum(to_cents(p) for p in prices)
            """,
            "src/pkg/shop/tax.py": """
                from pkg import money


                def tax(amount: float) -> int:
                    return money.to_cents(amount=amount * 0.2)
            """,
            "src/pkg/report.py": """
                def describe(n: int) -> str:
                    return f"{n} cents"
            """,
            "tests/test_money.py": """
                from pkg.money import to_cents
                from pkg.shop.cart import total


                def test_to_cents():
                    assert to_cents(1.5) == 150


                def test_total():
                    assert total([1.0, 2.0]) == 300
            """,
        },
    )


async def wait_for_file(path: Path, timeout_s: float = 60) -> None:
    """Wait until another process has made ``path`` (a condition, not a guess at timing)."""
    await wait_for(path.exists, timeout_s)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Wait until ``condition()`` holds, made true by another process."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - the event comes from another process
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)
