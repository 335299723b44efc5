"""Large payloads in an S3-compatible store (moto's server on loopback), through the SDK's
external storage and S3 driver: encrypted before they leave the process, readable by every
worker without a shared disk, shown to the UI by the codec server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

# The workflow below is defined here, so the workflow sandbox re-imports this module: the HTTP
# servers these modules import are used by the test code only, never by the workflow.
with workflow.unsafe.imports_passed_through():
    from agentparallels.codec import payload_codec
    from agentparallels.codec_server import CodecServer
    from agentparallels.core.models import (
        Limits,
        ModelEdit,
        Progress,
        RefactorInput,
        RefactorResult,
    )
    from agentparallels.encryption import ENCODING as ENCRYPTED
    from agentparallels.encryption import Keyring
    from agentparallels.plugin import AgentParallelsPlugin
    from agentparallels.replay import replayer_for
    from agentparallels.testing.fake_llm import FakeLLM
    from tests.support.repos import git, make_repo, start_job
    from tests.support.s3 import ACCESS_KEY, SECRET_KEY, S3Store, moto_server, new_store
    from tests.support.workers import WorkerProcess

KEY = base64.b64encode(b"q" * 32).decode()
KEYRING = Keyring.parse([f"s3-test:{KEY}"], source="test")
BIG = "wombat " * 50_000  # 350 KB: over the 128 KiB threshold


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """A fresh bucket; this process's AWS configuration points at it."""
    store = new_store(s3_endpoint, tmp_path / "aws")
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    return store


@activity.defn(name="test.shout")
async def shout(text: str) -> str:
    return text + "and the quokka " * 30_000


@workflow.defn(name="BigEchoWorkflow")
class BigEchoWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=60)
        )


def client_with(env: WorkflowEnvironment, **converter: Any) -> Client:
    """A client of the session's server whose plugin stores payloads as ``converter`` says."""
    service, namespace = env.client.service_client, env.client.namespace
    return Client(service, namespace=namespace, plugins=[AgentParallelsPlugin(**converter)])


def decode_over_http(url: str, payload: Payload) -> Payload:
    """What the UI gets back from the codec server for ``payload``."""
    body = json_format.MessageToJson(Payloads(payloads=[payload])).encode()
    request = urllib.request.Request(
        f"{url}/decode", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        [decoded] = json_format.Parse(response.read(), Payloads()).payloads
    return decoded


async def test_large_payloads_round_trip_through_s3_and_only_ciphertext_is_stored(
    env: WorkflowEnvironment, s3: S3Store, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow's large input, the activity's large argument and result and the workflow's
    result go to the bucket, under the configured prefix, as ciphertext; history holds only
    references (no plaintext, no credential); the codec server shows the UI the plaintext;
    a replayer configured from the environment replays the history."""
    client = client_with(env, blob_url=s3.url("jobs/"), keyring=KEYRING)
    async with Worker(
        client, task_queue=task_queue, workflows=[BigEchoWorkflow], activities=[shout]
    ):
        handle = await client.start_workflow(
            BigEchoWorkflow.run, BIG, id=f"s3-{uuid.uuid4()}", task_queue=task_queue
        )
        result = await asyncio.wait_for(handle.result(), 120)
    assert result == BIG + "and the quokka " * 30_000

    stored = s3.objects()
    assert len(stored) >= 3, sorted(stored)  # input (also the activity's), result, result
    assert all(key.startswith("jobs/v0/ns/default/") for key in stored), sorted(stored)
    for data in stored.values():
        assert b"wombat" not in data and b"quokka" not in data
        assert Payload.FromString(data).metadata["encoding"] == ENCRYPTED

    history = await handle.fetch_history()
    raw = b"".join(e.SerializeToString() for e in history.events) + history.to_json().encode()
    assert b"wombat" not in raw and b"quokka" not in raw
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret.encode() not in raw
    assert s3.bucket.encode() in raw  # the references name the bucket and key
    assert len(raw) < 40_000

    # The UI sees the reference in history; the codec server fetches and decrypts it.
    started = history.events[0].workflow_execution_started_event_attributes
    [reference] = started.input.payloads
    with CodecServer(payload_codec(blob_url=s3.url("jobs/"), keyring=KEYRING), port=0) as server:
        shown = decode_over_http(server.url, reference)
    assert json.loads(shown.data) == BIG

    # The replay command's converter comes from the environment.
    monkeypatch.setenv("AGENTPARALLELS_BLOB_URL", s3.url("elsewhere/"))  # reads use the claim
    monkeypatch.setenv("AGENTPARALLELS_CODEC_KEYS", f"s3-test:{KEY}")
    replayer = replayer_for(workflows=[BigEchoWorkflow])
    await replayer.replay_workflow(history)


# --- workers that share no disk -----------------------------------------------------------------

JOBS, MODULES, FILES = 2, 2, 2
THRESHOLD = 16 * 1024  # lowered from 128 KiB (on every process) to keep the files small
LINES = 1_200  # each file, and so each model answer, is about 25 KB: over the threshold


def original(job: int, m: int, f: int) -> str:
    return "".join(f"VALUE_{job}_{m}_{f}_{i} = {i}\n" for i in range(LINES))


def edited(job: int, m: int, f: int) -> str:
    return original(job, m, f).replace("VALUE_", "CONST_")


def paths(job: int) -> list[str]:
    return [f"pkg{job}{m}/f{f}.py" for m in range(MODULES) for f in range(FILES)]


def model_job(repo: Path, job: int, fake: FakeLLM) -> RefactorInput:
    return RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="rename every VALUE_ constant to CONST_",
            files=tuple(paths(job)),
            model="openai:fake-coder",
            base_url=fake.openai_base_url,
            related_tokens=0,
        ),
        limits=Limits(parallel=MODULES, max_files_per_shard=FILES),
    )


async def files_done(handles: list[WorkflowHandle]) -> int:
    total = 0
    for handle in handles:
        try:
            total += (await handle.query("progress", result_type=Progress)).files_done
        except Exception:  # between workers, or not picked up yet
            pass
    return total


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 3 minutes on a loaded 2-core machine
async def test_three_workers_without_a_shared_disk_finish_jobs_with_large_model_answers(
    env: WorkflowEnvironment, s3: S3Store, task_queue: str, tmp_path: Path
) -> None:
    """Three worker processes, each with its own HOME and caches and no blob directory, the
    blob store an S3 bucket; model answers over the threshold go through it. One worker is killed
    with SIGKILL mid-job and replaced by a fresh one with an empty HOME. Every job succeeds
    with every file edited, and the bucket holds only ciphertext."""
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPARALLELS_")}
    worker_env |= s3.env | {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "AGENTPARALLELS_BLOB_URL": s3.url("cluster"),
        "AGENTPARALLELS_CODEC_KEYS": f"s3-test:{KEY}",
        "OPENAI_API_KEY": "sk-test-s3-storage",
        "AGENTPARALLELS_CLAIM_CHECK_BYTES": str(THRESHOLD),
    }
    client = client_with(env, blob_url=s3.url("cluster"), threshold=THRESHOLD, keyring=KEYRING)
    repos = [
        make_repo(
            tmp_path / f"repo{j}",
            {p: original(j, int(p[4]), int(p[-4])) for p in paths(j)}
            | {f"pkg{j}{m}/__init__.py": "" for m in range(MODULES)},
        )
        for j in range(JOBS)
    ]
    answers = {
        f"Edit `{p}`": {
            "content": f"```python\n{edited(j, int(p[4]), int(p[-4]))}```",
            "delay_ms": 1000,
        }
        for j in range(JOBS)
        for p in paths(j)
    }
    spawned = 0

    async def new_worker() -> WorkerProcess:
        nonlocal spawned
        spawned += 1
        return await WorkerProcess.own_machine(
            tmp_path / f"w{spawned}", task_queue, worker_env
        ).polling(120)

    workers = [await new_worker() for _ in range(3)]
    try:
        with FakeLLM(match=answers, default=None) as fake:
            handles = [
                await start_job(client, task_queue, model_job(repo, j, fake))
                for j, repo in enumerate(repos)
            ]
            outcome = asyncio.gather(*(h.result() for h in handles))
            async with asyncio.timeout(240):
                while (done := await files_done(handles)) < 1 and not outcome.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            assert done < JOBS * MODULES * FILES, "the jobs ended before the kill"
            victim = workers.pop(0)
            victim.kill()
            workers.append(await new_worker())  # an empty HOME, empty caches
            results: list[RefactorResult] = await asyncio.wait_for(outcome, 480)
    finally:
        for w in workers:
            w.stop()

    for j, (repo, result) in enumerate(zip(repos, results, strict=True)):
        assert sorted(result.files_changed) == sorted(paths(j))
        for p in paths(j):
            shown = git(repo, "show", f"{result.head_commit}:{p}")
            assert shown == edited(j, int(p[4]), int(p[-4])).rstrip("\n"), p
    stored = s3.objects()
    assert len(stored) >= JOBS * MODULES * FILES  # at least every answer
    for data in stored.values():
        assert b"VALUE_" not in data and b"CONST_" not in data
    for n in range(1, spawned + 1):  # no worker kept a blob directory of its own
        assert not list((tmp_path / f"w{n}").rglob("blobs")), n


async def test_references_read_back_after_switching_stores(
    s3: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process configured with a local directory reads payloads an S3-configured one
    stored (the claim names the bucket), and the reverse (the directory from
    AGENTPARALLELS_BLOB_DIR): histories stay readable when a deployment moves to S3."""
    big = Payload(metadata={"encoding": b"binary/plain"}, data=b"platypus " * 20_000)
    monkeypatch.setenv("AGENTPARALLELS_BLOB_DIR", str(tmp_path / "blobs"))
    on_s3 = payload_codec(blob_url=s3.url("moved"), keyring=KEYRING)
    local = payload_codec(tmp_path / "blobs", keyring=KEYRING)
    [from_s3] = await on_s3.encode([big])
    [from_disk] = await local.encode([big])
    assert b"aws.s3driver" in from_s3.data and b"local-dir" in from_disk.data
    assert await local.decode([from_s3]) == [big]
    assert await on_s3.decode([from_disk]) == [big]
