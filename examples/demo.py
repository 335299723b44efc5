"""The demo behind `make demo`: a real multi-file rename of a real repository, as a durable job.

It copies the bundled example package to a temporary folder, commits it there, and runs
``agentparallels refactor`` on it, renaming a function used across the package and its tests.
The command starts the embedded Temporal server if none is reachable and runs a worker in
process; the job's branch is shown at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).parent / "agentparallels")
RENAME = "shopkart.pricing.money.to_cents=as_cents"
TESTS = "python -m pytest -q -p no:cacheprovider"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def main() -> int:
    repo = Path(tempfile.mkdtemp(prefix="agentparallels-demo-")) / "shopkart"
    shutil.copytree(HERE / "shopkart", repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "shopkart: the example package")
    print(f"Example repository: {repo}")
    print(f"Renaming {RENAME.replace('=', ' -> ')} across the package and its tests\n", flush=True)

    job_id = f"demo-{repo.parent.name.rsplit('-', 1)[-1]}"
    done = subprocess.run(
        [
            CLI,
            "refactor",
            str(repo),
            "--rename",
            RENAME,
            "--test-cmd",
            TESTS,
            "--job-id",
            job_id,
            "--max-files-per-shard",
            "3",
        ]  # small shards, so the example fans out
    )
    if done.returncode != 0:
        return done.returncode
    branch = f"agentparallels/{job_id}"
    print(f"\n$ git log --stat --format='%h %s' main..{branch}   (in {repo})")
    log = git(repo, "log", "--stat", "--format=%h %s", f"main..{branch}").rstrip()
    print(log)
    print(f"\nThe change is on branch {branch} of {repo}; main is untouched.")
    print(f"Open http://localhost:8233/namespaces/default/workflows/{job_id} to see the job,")
    print("its children, every activity and its history in the Temporal UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
