"""``agentparallels``: the command line, one module per command (each with its parser
builder) and the helpers they share in ``agentparallels.cli.common``. Nothing else in the
package imports it: it is the top floor.

    agentparallels server                       run the embedded Temporal dev server
    agentparallels worker                       run a worker
    agentparallels refactor PATH --rename ...   run the multi-file refactor job
    agentparallels refactor PATH --instruct ... --model openai:...   a model edits each file
    agentparallels agent PATH --task TEXT --model openai:...   a model plans and edits with tools
    agentparallels status JOB [--follow|--graph]   show a job's progress or outcome
    agentparallels list [--repo P] [--phase P] [--status S] [--query Q]   find jobs
    agentparallels graph JOB [-o FILE]          the call graph a job took, as Mermaid
    agentparallels setup                        register the search attributes on a cluster
    agentparallels cancel JOB                   cancel a job; everything it did is rolled back
    agentparallels cleanup JOB --repo PATH      remove what a failed job's rollback left behind
    agentparallels resume JOB [--test-cmd ...]  run a failed job again, keeping finished shards
    agentparallels events JOB [--follow]        the job's events (file edited, check failed ...)
    agentparallels pause JOB / unpause JOB      hold a job after its running steps; carry on
    agentparallels approve JOB | reject JOB --reason ...   decide on a job awaiting approval
    agentparallels review PATH --ref BRANCH --model ...    a committee of models reviews a diff
    agentparallels replay JOB|FILE...           replay recorded histories against this code
    agentparallels fake-llm --script FILE       a scripted model server on 127.0.0.1
    agentparallels codec-server [--port N]      decrypts payloads for the Temporal UI and CLI

Exit codes: 0 success, 1 the job failed (or was cancelled) and was rolled back (checked: the
repository is as it was), 2 bad input (nothing was changed), 3 the job failed (or was cancelled)
and its rollback left something in the repository (each named, with the command that removes it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from temporalio.service import RPCError

from agentparallels import __version__, devserver, logs, tracing
from agentparallels.cli import (
    agent,
    approve,
    budget,
    cancel,
    cleanup,
    codec_server,
    events,
    fake_llm,
    ops,
    pause,
    refactor,
    replay,
    resume,
    review,
    server,
    status,
    worker,
)
from agentparallels.cli.common import Parser, err, exit_with
from agentparallels.core.errors import AgentParallelsError, ServerError, UsageError

__all__ = ["build_parser", "entry", "main", "run"]

BUILDERS: tuple[Callable[[Any], None], ...] = (
    server.add_parser,
    worker.add_parser,
    refactor.add_parser,
    agent.add_parser,
    approve.add_parsers,  # approve, reject
    budget.add_parser,
    review.add_parser,
    replay.add_parser,
    fake_llm.add_parser,
    codec_server.add_parser,
    status.add_parser,
    cancel.add_parser,
    cleanup.add_parser,
    resume.add_parser,
    ops.add_parsers,  # list, setup, graph
    events.add_parser,
    pause.add_parsers,  # pause, unpause
)
"""Each command's parser builder, in the order ``--help`` lists the commands."""


def build_parser() -> Parser:
    parser = Parser(
        prog="agentparallels",
        description="Durable agent workflows on Temporal.",
        epilog="exit codes: 0 success; 1 the job failed or was cancelled, and was rolled back "
        "(checked: nothing of it is left); 2 bad input, nothing was changed; 3 the job failed "
        "or was cancelled and its rollback left something behind (each named with the command "
        "that removes it; `agentparallels cleanup JOB --repo PATH` removes them all)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in BUILDERS:
        add(sub)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command: a server in the foreground (``serve``), or a client command
    (``handler``, a coroutine) whose terminal shows progress while an in-process worker's log
    goes to a file."""
    if getattr(args, "handler", None) is not None:
        logs.configure(devserver.state_dir() / "agentparallels.log")
    else:
        logs.configure()
    tracing.configure()
    if getattr(args, "handler", None) is None:
        return args.serve(args)
    return asyncio.run(args.handler(args))


def main(argv: list[str] | None = None) -> int:
    """Run one command; user mistakes become a one-line message and exit code 2."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as e:
        err(f"agentparallels: error: {e}")
        return 2
    except ServerError as e:
        err(f"agentparallels: {e}")
        return 1
    except AgentParallelsError as e:
        err(f"agentparallels: {e}")
        return 1
    except RPCError as e:  # the server went away, or answers but not in time
        err(
            f"agentparallels: the Temporal server did not answer ({e.message or e.status.name}); "
            "check it is running and healthy (`agentparallels server`, or TEMPORAL_ADDRESS)"
        )
        return 1
    except KeyboardInterrupt:
        err(
            "interrupted; a running job goes on when a worker serves its task queue "
            "(`agentparallels status JOB`, `agentparallels cancel JOB`)"
        )
        return 130


def entry() -> None:
    """The ``agentparallels`` console script."""
    exit_with(lambda: main(sys.argv[1:]))
