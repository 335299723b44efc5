"""The claim-check codec: large payloads leave history, and come back byte for byte."""

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

from agentparallels.codec import ENCODING, BlobMissing, BlobStore, ClaimCheckCodec


async def test_large_payloads_round_trip_byte_for_byte(tmp_path: Path) -> None:
    """A payload over the threshold becomes a 64-byte key and decodes to the same bytes; a
    small one is left alone."""
    codec = ClaimCheckCodec(BlobStore(tmp_path), threshold=1024)
    big = Payload(metadata={"encoding": b"binary/plain"}, data=bytes(range(256)) * 40)
    small = Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')
    encoded = await codec.encode([big, small])
    assert encoded[0].metadata["encoding"] == ENCODING and len(encoded[0].data) == 64
    assert encoded[1] == small
    decoded = await codec.decode(encoded)
    assert decoded[0].SerializeToString() == big.SerializeToString()
    assert decoded[1] == small


async def test_missing_blob_names_the_key_and_the_store(tmp_path: Path) -> None:
    """Decoding a reference whose blob is gone says which blob and which store."""
    writer = ClaimCheckCodec(BlobStore(tmp_path / "a"), threshold=10)
    reader = ClaimCheckCodec(BlobStore(tmp_path / "b"), threshold=10)
    encoded = await writer.encode([Payload(data=b"x" * 100)])
    key = encoded[0].data.decode()
    with pytest.raises(BlobMissing, match=f"blob {key} is not in the blob store {tmp_path / 'b'}"):
        await reader.decode(encoded)


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
