"""Large payloads leave history for the blob store (the SDK's external storage with the local
directory driver), and come back byte for byte."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.worker import Worker

from agentparallels.blobstore import BlobMissing, LocalDirectoryDriver, S3BlobDriver, driver_for
from agentparallels.codec import payload_codec
from agentparallels.core.errors import UsageError
from agentparallels.encryption import Keyring
from tests.support.cli import cli_env, run_cli


async def test_large_payloads_round_trip_byte_for_byte(tmp_path: Path) -> None:
    """A payload over the threshold becomes a reference naming the driver and the SHA-256 of
    its bytes, and decodes to the same bytes; a small one is left alone."""
    codec = payload_codec(tmp_path, threshold=1024, keyring=Keyring())
    big = Payload(metadata={"encoding": b"binary/plain"}, data=bytes(range(256)) * 40)
    small = Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')
    encoded = await codec.encode([big, small])
    assert b"ExternalStorageReference" in encoded[0].metadata["messageType"]
    assert LocalDirectoryDriver.NAME.encode() in encoded[0].data
    assert len(encoded[0].SerializeToString()) < 400
    assert encoded[1] == small
    [stored] = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert stored.read_bytes() == big.SerializeToString()
    decoded = await codec.decode(encoded)
    assert decoded[0].SerializeToString() == big.SerializeToString()
    assert decoded[1] == small


async def test_missing_blob_names_the_key_and_the_store(tmp_path: Path) -> None:
    """Decoding a reference whose blob is not in this process's store says which blob and
    which store, and how to share one."""
    writer = payload_codec(tmp_path / "a", threshold=10, keyring=Keyring())
    reader = payload_codec(tmp_path / "b", threshold=10, keyring=Keyring())
    encoded = await writer.encode([Payload(data=b"x" * 100)])
    [stored] = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    expected = f"blob {stored.name} is not in the blob store {tmp_path / 'b'}"
    with pytest.raises(BlobMissing, match=expected) as missing:
        await reader.decode(encoded)
    assert "AGENTPARALLELS_BLOB_URL=s3://" in str(missing.value)


def test_blob_url_picks_the_driver_and_a_bad_one_says_what_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3://bucket/prefix is the S3 driver, file:///dir the local one, nothing the default
    directory; anything else is a usage error naming both forms."""
    monkeypatch.setenv("AGENTPARALLELS_BLOB_DIR", str(tmp_path / "default"))
    monkeypatch.delenv("AGENTPARALLELS_BLOB_URL", raising=False)
    default = driver_for()
    assert isinstance(default, LocalDirectoryDriver) and default.root == tmp_path / "default"
    s3 = driver_for("s3://payloads/prod/agentparallels/")
    assert isinstance(s3, S3BlobDriver)
    assert (s3.bucket, s3.prefix) == ("payloads", "prod/agentparallels/")
    local = driver_for(f"file://{tmp_path}/x")
    assert isinstance(local, LocalDirectoryDriver) and local.root == tmp_path / "x"
    monkeypatch.setenv("AGENTPARALLELS_BLOB_URL", "https://payloads.example/x")
    with pytest.raises(UsageError, match="use s3://BUCKET/PREFIX .* or file:///"):
        driver_for()


def test_a_worker_with_a_bad_blob_url_exits_2_with_one_line() -> None:
    """`agentparallels worker` refuses a blob store URL it cannot use before connecting: one
    line naming the variable and the forms it takes, exit code 2, no traceback."""
    env = cli_env(AGENTPARALLELS_BLOB_URL="https://payloads.example/x")
    done = run_cli("worker", "--task-queue", "nowhere", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "agentparallels: error: AGENTPARALLELS_BLOB_URL=https://payloads.example/x is not a "
        "blob store URL: use s3://BUCKET/PREFIX (the endpoint and credentials come from the "
        "standard AWS variables, e.g. AWS_ENDPOINT_URL) or file:///ABSOLUTE/DIRECTORY"
    ]


@activity.defn(name="test.measure")
async def measure(text: str) -> int:
    return len(text)


@workflow.defn(name="BigPromptsWorkflow")
class BigPromptsWorkflow:
    @workflow.run
    async def run(self, calls: int) -> int:
        total = 0
        for i in range(calls):
            prompt = f"{i}:" + "x" * 500 * 1024  # a 500 KiB prompt, different each time
            total += await workflow.execute_activity(
                measure, prompt, start_to_close_timeout=timedelta(seconds=30)
            )
        return total


async def test_history_stays_small_with_large_prompts(client: Client) -> None:
    """100 activity calls with 500 KiB arguments leave a history under 2 MB."""
    queue = f"codec-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[BigPromptsWorkflow], activities=[measure]
    ):
        handle = await client.start_workflow(
            BigPromptsWorkflow.run, 100, id=f"big-{uuid.uuid4()}", task_queue=queue
        )
        assert await asyncio.wait_for(handle.result(), 120) > 100 * 500 * 1024
    description = await handle.describe()
    assert description.raw_description.workflow_execution_info.history_size_bytes < 2_000_000
