"""The demo behind `make demo`: a real multi-file rename of a real repository, as a durable job.

It copies the bundled example package to a temporary folder, commits it there, and runs
``agentparallels refactor`` on it, renaming a function used across the package and its tests.
The command starts the embedded Temporal server if none is reachable and runs a worker in
process; the job's branch is shown at the end.
"""

from __future__ import annotations

import subprocess
import sys

from examples.example_repo import CLI, TESTS, fresh_copy, show_branch

RENAME = "shopkart.pricing.money.to_cents=as_cents"


def main() -> int:
    repo, job_id = fresh_copy("demo")
    print(f"Example repository: {repo}")
    print(f"Renaming {RENAME.replace('=', ' -> ')} across the package and its tests\n", flush=True)

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
    show_branch(repo, job_id)
    branch = f"agentparallels/{job_id}"
    print(f"\nThe change is on branch {branch} of {repo}; main is untouched.")
    print(f"Open http://localhost:8233/namespaces/default/workflows/{job_id} to see the job,")
    print("its children, every activity and its history in the Temporal UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
