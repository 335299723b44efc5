"""No credential in sight: URLs shown redacted (agentparallels/core/redact.py), URLs with a
credential refused by the CLI before any history is written, job events and log lines redacted."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import logs, worker
from agentparallels.core import redact
from agentparallels.core.events import EVENTS_QUERY, EventPage
from agentparallels.core.models import RefactorInput, RenameEdit
from tests.support.cli import run_cli
from tests.support.repos import git, make_repo, start_job

SECRET = "S3CRET-7f2a9c"

REDACTED = {
    f"https://bot:{SECRET}@git.example/o/r.git": "https://bot:***@git.example/o/r.git",
    f"https://ghp_{SECRET}abcdefghij@github.com/o/r.git": "https://***@github.com/o/r.git",
    f"https://x-access-token:{SECRET}@host/r.git": "https://x-access-token:***@host/r.git",
    f"ssh://git:{SECRET}@host:2222/r.git": "ssh://git:***@host:2222/r.git",
    f"https://proxy.example/v1?key={SECRET}": "https://proxy.example/v1?key=***",
    f"https://h/v1?api-version=2024-10&api_key={SECRET}#x": "https://h/v1?api-version=2024-10&api_key=***#x",
    f"https://h/o?sig={SECRET}&sv=1&Token={SECRET}": "https://h/o?sig=***&sv=1&Token=***",
}
KEPT = [
    "https://alice@host/r.git",  # a plain user name: git asks its credential helper
    "ssh://git@host/r.git",
    "git@github.com:o/r.git",
    "/home/me/repo",
    "http://127.0.0.1:8080/v1",
    "https://h/v1?api-version=2024-10",
    "https://h/v1?",
]


@pytest.mark.parametrize("url", list(REDACTED))
def test_credentials_in_urls_are_redacted(url: str) -> None:
    """Password, token user name and key/token/sig query parameters become ***."""
    assert redact.url(url) == REDACTED[url]
    assert redact.credentials(url)
    assert redact.text(f"fatal: unable to access '{url}': 403") == (
        f"fatal: unable to access '{REDACTED[url]}': 403"
    )


@pytest.mark.parametrize("url", KEPT)
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    """Byte for byte: a plain user name, ssh users, paths and harmless parameters stay."""
    assert redact.url(url) == url
    assert redact.credentials(url) == []
    assert redact.text(f"at {url} now") == f"at {url} now"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_repo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A repository and a real git remote of it, served read-only over HTTP on loopback (git's
    "dumb" protocol), whose URL carries a password that the server ignores."""
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    pass\n"})
    bare = tmp_path / "served" / "r.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(bare))
    git(bare, "update-server-info")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path / "served"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield repo, f"http://bot:{SECRET}@127.0.0.1:{server.server_address[1]}/r.git"
    finally:
        server.shutdown()
        server.server_close()


async def stored(client: Client, job_id: str) -> bytes:
    """The job's history in protobuf wire form, as the server stores it; b'' if there is none."""
    try:
        history = await client.get_workflow_handle(job_id).fetch_history()
    except RPCError as e:
        assert e.status == RPCStatusCode.NOT_FOUND
        return b""
    return b"".join(e.SerializeToString() for e in history.events)


async def test_cli_refuses_credentials_and_no_history_holds_them(
    client: Client, served_repo: tuple[Path, str], tmp_path: Path, task_queue: str
) -> None:
    """A readable repository URL with a password, and a --base-url with ?key=: exit 2 with a
    line saying how to pass the credential instead, the secret not echoed, and no history
    written that holds it (without the check, both jobs start, the secret in their input)."""
    repo, url = served_repo
    assert git(tmp_path, "ls-remote", "--heads", url)  # git can read it: only the check refuses
    runs = {
        "credential helper": [url, "--rename", "pkg.a.f=g"],
        "OPENAI_API_KEY": [
            str(repo),
            "--instruct",
            "tidy",
            "--model",
            "openai:gpt-4.1",
            "--base-url",
            f"http://127.0.0.1:9/v1?key={SECRET}",
        ],
    }
    for remedy, args in runs.items():
        job_id = f"redact-{uuid.uuid4().hex[:8]}"
        done = run_cli(
            "refactor",
            *args,
            "--job-id",
            job_id,
            "--task-queue",
            task_queue,
            "--no-worker",
            "--detach",
            address=client,
            cache=tmp_path / "c",
        )
        assert SECRET.encode() not in await stored(client, job_id)
        assert done.returncode == 2, done.stderr
        assert "agentparallels: error:" in done.stderr and remedy in done.stderr
        assert "would be stored in the job's history" in done.stderr
        assert SECRET not in done.stderr + done.stdout

    review = run_cli(
        "review",
        str(repo),
        "--ref",
        "HEAD",
        "--model",
        "openai:gpt-4.1",
        "--base-url",
        f"https://proxy.example/v1?api_key={SECRET}",
        address=client,
        cache=tmp_path / "c",
    )
    assert review.returncode == 2 and "OPENAI_API_KEY" in review.stderr
    assert SECRET not in review.stderr


async def test_job_events_show_the_repository_url_redacted(
    client: Client, served_repo: tuple[Path, str], task_queue: str
) -> None:
    """A job started without the CLI's check (as any client could) on a URL with a password:
    its events, which subscribers, the CLI and the UI read, show the URL as ***."""
    _, url = served_repo
    job = RefactorInput(repository=url, edit=RenameEdit(old="pkg.a.f", new="g"))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError):  # the served remote takes no push
            await handle.result()
        page = await handle.query(EVENTS_QUERY, 0, result_type=EventPage)
    details = "\n".join(e.detail for e in page.events)
    assert redact.url(url) in details  # the started event: "<url> at HEAD"
    assert page.events[-1].kind == "failed"
    assert SECRET not in details
    assert SECRET not in "\n".join(e.line() for e in page.events)


def test_log_lines_are_redacted(tmp_path: Path) -> None:
    """The worker's log: messages and tracebacks show URLs with credentials as ***."""
    logs.configure(tmp_path / "worker.log")
    try:
        raise RuntimeError(f"git fetch https://bot:{SECRET}@host/r.git failed")
    except RuntimeError:
        logging.getLogger("test").exception("step failed at %s", f"https://h/v1?key={SECRET}")
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = (tmp_path / "worker.log").read_text()
    assert "https://bot:***@host/r.git" in written and "https://h/v1?key=***" in written
    assert SECRET not in written
    logs.configure()
