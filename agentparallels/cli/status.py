"""``agentparallels status JOB [--follow|--graph]``: a job's progress or outcome; for a job
Temporal no longer knows, what its repository's progress log says."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from agentparallels import ops, queues, validate
from agentparallels.cli.common import err, existing, finish, progress_of
from agentparallels.client import connect
from agentparallels.core import progress
from agentparallels.core.errors import UsageError

__all__ = ["add_parser", "status_command"]


def add_parser(sub: Any) -> None:
    status = sub.add_parser("status", help="show a job's progress or outcome")
    status.add_argument("job")
    status.add_argument("--follow", action="store_true", help="keep showing until the job ends")
    status.add_argument(
        "--repo",
        metavar="PATH",
        help="when Temporal has no history of the job: read its progress log from this "
        "repository (default: the current directory's)",
    )
    status.add_argument("--graph", action="store_true", help="add the job's call graph (Mermaid)")
    status.set_defaults(handler=status_command)


async def status_command(args: argparse.Namespace) -> int:
    try:
        client = await connect(autostart=False, announce=err)
        handle, desc = await existing(client, args.job)
    except UsageError:  # no history (or no server): the job's repository may still know it
        logged = _logged(args.job, args.repo)
        if logged is None:
            raise
        print(logged)
        return 0
    if desc.status != WorkflowExecutionStatus.RUNNING:
        rc = await finish(handle, show=False)
    elif args.follow:
        rc = await finish(handle, show=True)
    else:
        rc = 0
        p = await progress_of(handle)
        if p is None:
            print(
                f"job {args.job} is running but no worker is serving it: start one with "
                f"{queues.how_to_serve(desc.task_queue)}"
            )
        else:
            print(progress.table(p))
    if args.graph:
        from agentparallels.callgraph import markdown

        print("\n" + markdown(await ops.graph_of(client, args.job)), end="")
    return rc


def _logged(job_id: str, repo: str | None) -> str | None:
    """What the job's progress log in ``repo`` (default: the current directory's repository)
    says; None when there is none. An explicit ``repo`` without a log is a usage error."""
    from agentparallels.activities import progress_log

    if repo is None:
        found = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True
        )
        if found.returncode != 0:
            return None
        repository = found.stdout.strip()
    else:
        repository = validate.repository(repo)
    logged = progress_log.read(repository, job_id)
    if logged is None and repo is not None:
        raise UsageError(
            f"no job {job_id}: Temporal has no history of it and {repository} no progress log"
        )
    return progress.logged(logged, repository) if logged else None
