"""``agentparallels codec-server [--port N]``: decrypts payloads for the Temporal UI and CLI,
with the key of this process's environment."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "codec_server_command"]


def add_parser(sub: Any) -> None:
    codec = sub.add_parser(
        "codec-server", help="serve the payload codec to the Temporal UI (decrypts with your key)"
    )
    codec.add_argument("--port", type=int, default=8081, help="port (default: %(default)s)")
    codec.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    codec.add_argument(
        "--cors-origin",
        action="append",
        metavar="URL",
        help="origin of a Temporal UI allowed to call it (default: http://localhost:8233); "
        "repeatable",
    )
    codec.set_defaults(serve=codec_server_command)


def codec_server_command(args: argparse.Namespace) -> int:
    from agentparallels import codec_server

    return codec_server.command(args.ip, args.port, args.cors_origin)
