"""Encrypted history, end to end: a real refactor job whose editor is a model, run with the
codec on, leaves no prompt, file content or file path in what the Temporal server stores."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from agentparallels.codec import payload_codec
from agentparallels.codec_server import CodecServer
from agentparallels.core.models import CommandEdit, Limits, ModelEdit, RefactorInput, RefactorResult
from agentparallels.encryption import CodecKeyError, Keyring
from agentparallels.plugin import AgentParallelsPlugin
from agentparallels.replay import histories_of
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.repos import git, make_repo, start_job

KEY = base64.b64encode(b"k" * 32).decode()
KEYRING = Keyring.parse([f"2026-q4:{KEY}"], source="test")
PROMPT = "Raise the tally as agreed in memo PLATYPUS-7731"
FILES = {"treasury/__init__.py": "", "treasury/zanzibar_ledger.py": "QUOKKA_TALLY = 41\n"}
ANSWER = "```python\nQUOKKA_TALLY = 42\n```"
SECRETS = ("PLATYPUS-7731", "QUOKKA_TALLY", "zanzibar_ledger", KEY, "k" * 32)
TEMPORAL = str(Path(sys.executable).parent / "temporal")


def client_with(env: WorkflowEnvironment, blob_dir: Path, keyring: Keyring | None) -> Client:
    """A client of the session's server: with our codecs and ``keyring``, or with none."""
    service, namespace = env.client.service_client, env.client.namespace
    if keyring is None:
        return Client(service, namespace=namespace)  # the SDK's default converter, no codec
    plugin = AgentParallelsPlugin(store_dir=blob_dir, keyring=keyring)
    return Client(service, namespace=namespace, plugins=[plugin])


async def stored_bytes(env: WorkflowEnvironment, job_id: str, blob_dir: Path) -> bytes:
    """Everything the server holds for the job and its shards, as fetched without any codec,
    plus every blob in the store."""
    histories = await histories_of(client_with(env, blob_dir, None), job_id)
    assert len(histories) >= 2  # the job and its shard
    events = b"".join(e.SerializeToString() for h in histories for e in h.events)
    text = "".join(h.to_json() for h in histories).encode()
    blobs = b"".join(p.read_bytes() for p in blob_dir.rglob("*") if p.is_file())
    return events + text + blobs


def show(address: str, job_id: str, *codec: str) -> str:
    """The payloads of the job's history as the Temporal CLI shows them (its JSON carries
    payload data in base64; decoded here)."""
    command = [TEMPORAL, "workflow", "show", "-w", job_id, "--address", address, "-o", "json"]
    out = subprocess.run(
        [*command, *codec], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and isinstance(node.get("metadata"), dict):
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(out))
    assert found  # payloads were there to look at
    return "\n".join(found)


@pytest.mark.fake_llm([{"content": ANSWER}])
async def test_model_job_history_holds_no_plaintext_and_decodes_with_the_key(
    env: WorkflowEnvironment, blob_dir: Path, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Every payload is encrypted: the raw histories and the blob store hold neither the
    prompt, nor the file's content or name, nor the key; with the key the input decodes, the
    Temporal CLI shows the prompt through the codec server, and a client without the key is
    told which key id it lacks."""
    secure = client_with(env, blob_dir, KEYRING)
    repo = make_repo(tmp_path / "repo", FILES)
    edit = ModelEdit(
        instruct=PROMPT,
        files=("treasury/zanzibar_ledger.py",),
        model="openai:fake",
        base_url=fake.openai_base_url,
    )
    job = RefactorInput(repository=str(repo), edit=edit)
    async with worker.build_worker(secure, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(secure, task_queue, job)
        result = await asyncio.wait_for(handle.result(), 60)
    sent = json.dumps(fake.requests[0].body)
    assert result.files_changed == ("treasury/zanzibar_ledger.py",)
    assert git(repo, "show", f"{result.head_commit}:treasury/zanzibar_ledger.py") == (
        "QUOKKA_TALLY = 42"
    )
    assert PROMPT in sent and "QUOKKA_TALLY = 41" in sent  # the model did see them

    stored = await stored_bytes(env, handle.id, blob_dir)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret

    history = await secure.get_workflow_handle(handle.id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [decoded] = await secure.data_converter.decode(started.input.payloads, [RefactorInput])
    assert decoded.edit.instruct == PROMPT

    address = env.client.service_client.config.target_host
    assert "PLATYPUS-7731" not in show(address, handle.id)
    with CodecServer(payload_codec(blob_dir, keyring=KEYRING), port=0) as server:
        assert "PLATYPUS-7731" in show(address, handle.id, "--codec-endpoint", server.url)

    keyless = client_with(env, blob_dir, Keyring())
    with pytest.raises(CodecKeyError, match="key id '2026-q4', which this process does not"):
        await keyless.get_workflow_handle(handle.id, result_type=RefactorResult).result()


async def test_failure_messages_are_encrypted_too(
    env: WorkflowEnvironment, blob_dir: Path, task_queue: str, tmp_path: Path
) -> None:
    """A failed job's error names the file, and the command's output, to the key holder only:
    the stored failure events hold neither."""
    secure = client_with(env, blob_dir, KEYRING)
    repo = make_repo(tmp_path / "repo", FILES)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(
            command="echo PLATYPUS-7731 >&2; exit 3; {file}", files=("treasury/zanzibar_ledger.py",)
        ),
        limits=Limits(breaker_threshold=1),
    )
    async with worker.build_worker(secure, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(secure, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert "treasury/zanzibar_ledger.py" in cause.message and "PLATYPUS-7731" in cause.message
    stored = await stored_bytes(env, handle.id, blob_dir)
    for secret in ("PLATYPUS-7731", "zanzibar_ledger"):
        assert secret.encode() not in stored, secret
