"""``agentparallels worker``: run a worker for every workflow and activity until SIGINT or
SIGTERM (the worker itself is ``agentparallels.worker``; this is its command line)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["add_parser", "worker_command"]


def add_parser(sub: Any) -> None:
    from agentparallels import worker

    parser = sub.add_parser("worker", help="run a worker for every workflow and activity")
    worker.add_arguments(parser)
    parser.set_defaults(serve=worker_command)


def worker_command(args: argparse.Namespace) -> int:
    """Bad options are a UsageError (exit 2, before connecting), reported by ``main``."""
    from agentparallels import worker

    asyncio.run(worker.run(worker.options_from(args)))
    return 0
