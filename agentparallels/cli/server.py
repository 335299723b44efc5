"""``agentparallels server``: the embedded Temporal dev server, in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from agentparallels import devserver
from agentparallels.cli.common import positive

__all__ = ["add_parser", "server_command", "server_options"]


def add_parser(sub: Any) -> None:
    server = sub.add_parser("server", help="run the embedded Temporal dev server (foreground)")
    server.add_argument("--db", type=Path, help="SQLite database (default: under the state dir)")
    server.add_argument("--port", type=positive, default=devserver.DEFAULT_PORT)
    server.add_argument("--ui-port", type=positive, default=devserver.DEFAULT_UI_PORT)
    server.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    server.add_argument(
        "--ui-codec-endpoint", metavar="URL", help="codec server the UI decodes payloads with"
    )
    server.set_defaults(serve=server_command)


def server_options(args: argparse.Namespace) -> devserver.ServerOptions:
    extra = ("--ui-codec-endpoint", args.ui_codec_endpoint) if args.ui_codec_endpoint else ()
    opts = devserver.ServerOptions(ip=args.ip, port=args.port, ui_port=args.ui_port)
    opts = dataclasses.replace(opts, extra_args=extra)
    return dataclasses.replace(opts, db=args.db.resolve()) if args.db else opts


def server_command(args: argparse.Namespace) -> int:
    return devserver.serve(server_options(args))
