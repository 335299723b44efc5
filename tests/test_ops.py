"""`agentparallels list` finds jobs by their search attributes (and agrees with the Temporal
CLI, a client that is not ours); `agentparallels setup` registers them, idempotently."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import cli, ops
from tests.conftest import TEMPORAL
from tests.support.repos import make_repo

EDIT = "echo '# edited' >> {file}"
Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def run_cli(
    client: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """Run one `agentparallels` command in this process (on its own event loop, in a thread);
    returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = await asyncio.to_thread(cli.main, list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def ids_in(table: str) -> set[str]:
    return {line.split()[0] for line in table.splitlines()[1:]}


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    """Visibility is eventually consistent: wait until ``check`` (async) returns true."""

    async def poll() -> None:
        while not await check():  # noqa: ASYNC110 - the condition is on the server
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout_s)


async def test_list_filters_jobs_by_repository_phase_and_status(
    client: Client, run_cli: Run, tmp_path: Path, task_queue: str
) -> None:
    """Three jobs, a finished one and two waiting for a worker on two repositories: each filter
    lists exactly its jobs, with their phase and files done; the Temporal CLI finds the same
    jobs with the same query; a bad query is refused with exit 2."""
    run = run_cli
    prefix = f"list-{uuid.uuid4().hex[:8]}"
    mine = f"--query=WorkflowId STARTS_WITH '{prefix}'"
    repo_a = make_repo(tmp_path / "a", {"a.py": "x = 1\n"})
    repo_b = make_repo(tmp_path / "b", {"b.py": "y = 1\n"})
    idle = f"{task_queue}-idle"  # no worker polls it: those jobs stay queued
    rc, _, err = await run(
        "refactor",
        str(repo_a),
        "--edit-cmd",
        EDIT,
        "--job-id",
        f"{prefix}-done",
        "--task-queue",
        task_queue,
    )
    assert rc == 0, err
    for repo, name in ((repo_a, "a"), (repo_b, "b")):
        rc, _, err = await run(
            "refactor",
            str(repo),
            "--edit-cmd",
            EDIT,
            "--job-id",
            f"{prefix}-queued-{name}",
            "--task-queue",
            idle,
            "--detach",
        )
        assert rc == 0, err
    try:

        async def all_listed() -> bool:
            rc, out, _ = await run("list", mine)
            return rc == 0 and len(ids_in(out)) == 3

        await eventually(all_listed)
        rc, out, _ = await run("list", mine)
        header, *rows = out.splitlines()
        assert header.split() == ["JOB", "STATUS", "PHASE", "FILES", "TOKENS", "STARTED", "(UTC)"]
        done = next(r for r in rows if r.startswith(f"{prefix}-done"))
        assert done.split()[1:5] == ["completed", "done", "1", "0"]

        expected = {
            ("--repo", str(repo_a)): {f"{prefix}-done", f"{prefix}-queued-a"},
            ("--repo", str(repo_b / ".")): {f"{prefix}-queued-b"},  # any spelling of the path
            ("--phase", "done"): {f"{prefix}-done"},
            ("--phase", "queued"): {f"{prefix}-queued-a", f"{prefix}-queued-b"},
            ("--status", "running"): {f"{prefix}-queued-a", f"{prefix}-queued-b"},
            ("--status", "completed", "--kind", "refactor"): {f"{prefix}-done"},
            ("--status", "failed"): set(),
        }
        for flags, jobs in expected.items():
            rc, out, err = await run("list", *flags, mine)
            assert rc == 0, err
            assert ids_in(out) == jobs, flags
        rc, out, err = await run("list", "--status", "running", "--repo", str(repo_b), mine)
        assert ids_in(out) == {f"{prefix}-queued-b"}
        rc, out, err = await run("list", "--status", "failed", mine)
        assert out == "" and "no jobs match" in err

        # The same query, through the Temporal CLI.
        query = ops.query_of(repo=str(repo_a), raw=f"WorkflowId STARTS_WITH '{prefix}'")
        shown = await asyncio.to_thread(
            subprocess.run,
            [
                TEMPORAL,
                "workflow",
                "list",
                "--query",
                query,
                "-o",
                "json",
                "--address",
                client.service_client.config.target_host,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        found = {w["execution"]["workflowId"] for w in json.loads(shown.stdout)}
        assert found == {f"{prefix}-done", f"{prefix}-queued-a"}

        rc, _, err = await run("list", "--query", "AgentPhase ===")
        assert rc == 2 and "agentparallels: error: the server refused the query" in err
        assert "Traceback" not in err
    finally:
        for name in ("a", "b"):
            await client.get_workflow_handle(f"{prefix}-queued-{name}").terminate("test over")


async def create_namespace(client: Client) -> str:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(
        subprocess.run,
        [
            TEMPORAL,
            "operator",
            "namespace",
            "create",
            "--namespace",
            namespace,
            "--address",
            client.service_client.config.target_host,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return namespace


async def test_setup_registers_search_attributes_idempotently(
    client: Client,
    run_cli: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fresh namespace `setup` adds the five attributes; run again it adds nothing and says
    so; a job can then be started there with them."""
    run = run_cli
    namespace = await create_namespace(client)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", namespace)
    rc, first, err = await run("setup")
    assert rc == 0, err
    assert f"namespace {namespace} at " in first
    assert "  AgentJobKind (Keyword): added" in first.splitlines()
    assert "  AgentFilesDone (Int): added" in first.splitlines()
    assert first.count(": added") == 5
    rc, second, err = await run("setup")
    assert rc == 0, err
    assert second.count(": already registered") == 5 and ": added" not in second
    rc, out, err = await run("list", "--phase", "edit")
    assert rc == 0 and "no jobs match" in err  # the namespace can be queried by them


async def test_setup_errors_are_one_line(
    client: Client, run_cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A namespace that does not exist, and an attribute registered with another type: exit 2
    with a line saying what to do, and nothing added."""
    run = run_cli
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "no-such-namespace")
    rc, _, err = await run("setup")
    assert rc == 2
    assert "namespace no-such-namespace does not exist on this cluster" in err
    assert "temporal operator namespace create" in err and "Traceback" not in err

    namespace = await create_namespace(client)
    await asyncio.to_thread(
        subprocess.run,
        [
            TEMPORAL,
            "operator",
            "search-attribute",
            "create",
            "--namespace",
            namespace,
            "--name",
            "AgentTokens",
            "--type",
            "Keyword",
            "--address",
            client.service_client.config.target_host,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    monkeypatch.setenv("TEMPORAL_NAMESPACE", namespace)
    rc, _, err = await run("setup")
    assert rc == 2
    assert (
        f"search attribute AgentTokens exists on namespace {namespace} as Keyword, but Agent "
        "Parallels needs Int" in err
    )
    listed = await asyncio.to_thread(
        subprocess.run,
        [
            TEMPORAL,
            "operator",
            "search-attribute",
            "list",
            "--namespace",
            namespace,
            "-o",
            "json",
            "--address",
            client.service_client.config.target_host,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "AgentPhase" not in listed.stdout  # nothing was added


def test_permission_denied_says_who_can() -> None:
    """The server refusing the operator call reads as one line naming the way out."""
    denied = RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")
    message = str(ops._setup_error(denied, "prod"))
    assert message.startswith("not allowed to register search attributes on namespace prod")
    assert "admin's credentials" in message
