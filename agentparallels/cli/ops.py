"""``agentparallels list``, ``setup`` and ``graph``: operating jobs by their search attributes.

    agentparallels list [--repo PATH] [--phase P] [--status S] [--kind K] [--query Q]
    agentparallels setup
    agentparallels graph JOB [--output FILE]

``list`` prints the visibility query it ran when nothing matches, so it can be checked in the
Temporal UI's search box or with ``temporal workflow list --query``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentparallels import callgraph, ops
from agentparallels.cli.common import err
from agentparallels.client import connect
from agentparallels.core.errors import UsageError

__all__ = ["add_parsers", "graph_command", "list_command", "setup_command"]


def add_parsers(sub: Any) -> None:
    """The ``list``, ``setup`` and ``graph`` subcommands."""
    listing = sub.add_parser("list", help="list jobs, filtered by repository, phase, status ...")
    listing.add_argument("--repo", metavar="PATH", help="jobs on this repository (path or URL)")
    listing.add_argument("--phase", help="jobs in this phase: plan, edit, merge, test, done ...")
    listing.add_argument("--status", choices=sorted(set(ops.STATUSES)), help="workflow status")
    listing.add_argument("--kind", help="jobs of this kind (refactor, agent, ...)")
    listing.add_argument(
        "--query", metavar="QUERY", help="a raw visibility query, ANDed with the filters"
    )
    listing.add_argument("--limit", type=int, default=50, help="most rows (default %(default)s)")
    listing.set_defaults(handler=list_command)

    setup = sub.add_parser(
        "setup", help="register the search attributes on the cluster's namespace (idempotent)"
    )
    setup.set_defaults(handler=setup_command)

    graph = sub.add_parser("graph", help="the call graph a job took, as Mermaid")
    graph.add_argument("job")
    graph.add_argument("--output", "-o", type=Path, help="write Markdown to this file")
    graph.set_defaults(handler=graph_command)


async def list_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    query = ops.query_of(
        repo=args.repo, phase=args.phase, status=args.status, kind=args.kind, raw=args.query
    )
    client = await connect(autostart=False, announce=err)
    found = await ops.jobs(client, query, args.limit)
    if not found:
        err(f"no jobs match `{query}`")
        return 0
    print(ops.table([ops.row(w) for w in found]))
    return 0


async def setup_command(args: argparse.Namespace) -> int:
    client = await connect(autostart=False, announce=err)
    target = client.service_client.config.target_host
    print(f"namespace {client.namespace} at {target}:")
    for line in await ops.setup(client):
        print(f"  {line}")
    return 0


async def graph_command(args: argparse.Namespace) -> int:
    client = await connect(autostart=False, announce=err)
    flow = await ops.graph_of(client, args.job)
    if args.output:
        args.output.write_text(f"# {args.job}\n\n{callgraph.markdown(flow)}")
        err(f"wrote the call graph of {args.job} to {args.output}")
    else:
        print(callgraph.mermaid(flow), end="")
    return 0
