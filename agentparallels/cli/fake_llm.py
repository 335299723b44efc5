"""``agentparallels fake-llm --script FILE``: a scripted model server on loopback, for tests
and demos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentparallels.core.errors import UsageError

__all__ = ["add_parser", "fake_llm_command"]


def add_parser(sub: Any) -> None:
    fake = sub.add_parser(
        "fake-llm", help="a scripted model server on loopback, for tests and demos"
    )
    fake.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    fake.add_argument(
        "--script",
        type=Path,
        required=True,
        help="JSON file of answers and faults (see agentparallels/testing/fake_llm.py)",
    )
    fake.set_defaults(serve=fake_llm_command)


def fake_llm_command(args: argparse.Namespace) -> int:
    from agentparallels.testing import fake_llm

    try:
        return fake_llm.serve(args.port, args.script)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot serve {args.script}: {e}") from None
