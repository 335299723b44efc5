"""The embedded dev server: started on demand, one per database, clear errors otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from agentparallels import devserver
from agentparallels.client import connect
from agentparallels.core import attributes
from agentparallels.core.errors import ServerError
from tests.support.cli import cli_process
from tests.support.ports import free_port


@pytest.fixture
def opts(tmp_path: Path) -> Iterator[devserver.ServerOptions]:
    """Options for a server on free ports; whatever it started is stopped afterwards."""
    options = devserver.ServerOptions(
        db=tmp_path / "state" / "t.db", port=free_port(), ui_port=free_port()
    )
    yield options
    if options.pid_file.exists():
        try:
            os.kill(int(options.pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_connect_starts_the_dev_server_when_none_answers(
    opts: devserver.ServerOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no address configured and nothing listening, connect() starts the server in the
    background, says where the UI is, and the project's search attributes are registered."""
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    said: list[str] = []
    client = await connect(local=opts, announce=said.append)
    assert said[-1] == f"Temporal UI: http://localhost:{opts.ui_port}"
    assert opts.db.exists() and opts.log.exists()
    names = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert {k.name for k in attributes.ALL} <= set(names.custom_attributes)

    again = await connect(local=opts, announce=said.append)  # already up: nothing started
    assert again.namespace == "default" and len(said) == 2


async def test_second_server_on_the_same_database_is_refused(
    opts: devserver.ServerOptions,
) -> None:
    """A second server on a database in use fails at once, naming the database and the fix."""
    first = devserver.spawn(opts)
    await devserver.wait_healthy(opts, first)
    other = devserver.ServerOptions(db=opts.db, port=free_port(), ui_port=free_port())
    with pytest.raises(ServerError, match=f"the database {opts.db} is in use by another"):
        devserver.spawn(other)


def test_port_held_by_another_program_is_a_clear_error(opts: devserver.ServerOptions) -> None:
    """A port already taken is reported with what to do, before anything starts."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", opts.port))
        holder.listen()
        with pytest.raises(ServerError, match=f"port {opts.port} on 127.0.0.1 is already in use"):
            devserver.spawn(opts)
    assert not opts.db.exists()


def test_server_command_runs_in_the_foreground_until_interrupted(
    opts: devserver.ServerOptions,
) -> None:
    """`agentparallels server` serves until SIGINT and then exits cleanly."""
    with cli_process(
        "server",
        "--db",
        str(opts.db),
        "--port",
        str(opts.port),
        "--ui-port",
        str(opts.ui_port),
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Temporal dev server on"):
                break
        assert f"UI at http://localhost:{opts.ui_port}" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_server_users_run_dispatches_eagerly(opts: devserver.ServerOptions) -> None:
    """The server a job runs on by default is the one the suite runs on: eager dispatch of
    workflow and activity tasks on (tests/test_cli.py checks that jobs get them)."""
    command = opts.command()
    values = [command[i + 1] for i, arg in enumerate(command) if arg == "--dynamic-config-value"]
    assert set(devserver.EAGER_DISPATCH) <= set(values)
    assert "system.enableActivityEagerExecution=true" in values
    assert "system.enableEagerWorkflowStart=true" in values
