"""The data converter: pydantic payloads, encrypted when a key is configured, large ones kept
out of history in the SDK's external storage.

Model prompts and answers can be hundreds of kilobytes; recorded in every event that carries
them, they would push a workflow's history toward Temporal's limits (2 MiB a payload, 50 MiB a
history). Temporal's ``ExternalStorage`` hands every payload of at least ``threshold`` bytes to a
storage driver (:mod:`agentparallels.blobstore`: a local directory by default, an S3-compatible
store on a cluster) and puts a small reference, the driver's name and claim, in its place. The
same converter must be installed on every client, worker, replayer and codec server:
:func:`data_converter` builds it from the environment.

Some workflows must keep *every* history bounded, not just spare it the largest payloads: an
agent unit of hundreds of turns sends its conversation to each model call and gets a file's
text back from a tool step, and even a few kilobytes a turn add up to megabytes and to
O(turns^2) over a session. For the workflow types of :data:`CLAIM_ALL` the claim check applies
from a few hundred bytes on (``AGENTPARALLELS_UNIT_CLAIM_BYTES``): everything the unit's
history would record about its steps, its continue-as-new input included, is a reference of
about 220 bytes, whatever the file or conversation (see docs/agent.md, "Long sessions").

Encryption (:mod:`agentparallels.encryption`) is the payload codec, and the SDK runs the codec
before external storage on the way out and after it on the way back
(``DataConverter.encode``: convert, codec, store). The store therefore receives only
ciphertext, named by the hash of that ciphertext, and neither the store nor the history sees
plaintext. (The reverse order would leave the large payloads, the prompts and file contents,
readable in the store.) With encryption on, failure messages and stack traces travel as encoded
attributes too, so they are encrypted like any payload.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
    PayloadCodec,
    StorageDriver,
    StorageDriverSelectContext,
)

from agentparallels.blobstore import BlobMissing, default_store_dir, driver_for, drivers
from agentparallels.core import names
from agentparallels.core.errors import UsageError
from agentparallels.encryption import EncryptionCodec, Keyring

__all__ = [
    "BlobMissing",
    "CLAIM_ALL",
    "ConverterCodec",
    "DEFAULT_THRESHOLD",
    "THRESHOLD_VAR",
    "UNIT_CLAIM_VAR",
    "data_converter",
    "default_store_dir",
    "external_storage",
    "payload_codec",
]

DEFAULT_THRESHOLD = 128 * 1024
"""Payloads of at least this many bytes (after encryption) go to the blob store; set
``AGENTPARALLELS_CLAIM_CHECK_BYTES`` (the same on every client and worker) to change it."""
THRESHOLD_VAR = "AGENTPARALLELS_CLAIM_CHECK_BYTES"
CLAIM_ALL = (names.AGENT_UNIT,)
"""Workflow types whose payloads go to the blob store from ``unit_threshold`` bytes on (a
reference costs about 220 bytes of history, so smaller ones stay inline)."""
UNIT_THRESHOLD = 320
UNIT_CLAIM_VAR = "AGENTPARALLELS_UNIT_CLAIM_BYTES"
"""Overrides ``UNIT_THRESHOLD``; ``off`` keeps those workflows to the general threshold."""


def _bytes_from_env(variable: str, default: int, *, off: bool = False) -> int | None:
    text = os.environ.get(variable, "").strip() or str(default)
    if off and text == "off":
        return None
    if not text.isdigit():
        allowed = " (or off)" if off else ""
        raise UsageError(f"{variable}={text} is not a byte count{allowed}: use e.g. {default}")
    return int(text)


def external_storage(
    store_dir: Path | None = None,
    threshold: int | None = None,
    *,
    blob_url: str | None = None,
    unit_threshold: int | None = -1,
) -> ExternalStorage:
    """External storage into ``store_dir``, else the store ``blob_url`` names, else the one the
    environment configures (:func:`agentparallels.blobstore.driver_for`). Payloads of at least
    ``threshold`` bytes are stored, and those of :data:`CLAIM_ALL` workflows from
    ``unit_threshold`` bytes on (-1: from the environment; None: no such rule)."""
    if threshold is None:
        threshold = _bytes_from_env(THRESHOLD_VAR, DEFAULT_THRESHOLD)
    assert threshold is not None
    if unit_threshold == -1:
        unit_threshold = _bytes_from_env(UNIT_CLAIM_VAR, UNIT_THRESHOLD, off=True)
    primary = driver_for(blob_url, store_dir)
    general = threshold
    small = general if unit_threshold is None else min(general, unit_threshold)

    def select(context: StorageDriverSelectContext, payload: Payload) -> StorageDriver | None:
        if payload.ByteSize() >= general:
            return primary
        kind = getattr(context.target, "type", None)
        return primary if kind in CLAIM_ALL else None

    return ExternalStorage(
        drivers=drivers(primary), driver_selector=select, payload_size_threshold=small
    )


def data_converter(
    store_dir: Path | None = None,
    threshold: int | None = None,
    keyring: Keyring | None = None,
    *,
    blob_url: str | None = None,
) -> DataConverter:
    """Pydantic payloads, encrypted by the ``keyring`` (default: from the environment), large
    ones in external storage (see :func:`external_storage`); failure messages are encoded (and
    so encrypted) when the keyring encrypts."""
    keyring = Keyring.from_env() if keyring is None else keyring
    converter = dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        external_storage=external_storage(store_dir, threshold, blob_url=blob_url),
    )
    if keyring.encrypts:
        converter = dataclasses.replace(
            converter, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
        )
    return converter


class ConverterCodec(PayloadCodec):
    """A data converter's payload stages, codec and external storage, as one payload codec:
    what a codec server needs to show the UI a payload stored outside history."""

    def __init__(self, converter: DataConverter) -> None:
        self.converter = converter

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self.converter.encode([RawValue(p) for p in payloads])

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        values = await self.converter.decode(list(payloads), [RawValue] * len(payloads))
        return [value.payload for value in values]


def payload_codec(
    store_dir: Path | None = None,
    threshold: int | None = None,
    keyring: Keyring | None = None,
    *,
    blob_url: str | None = None,
) -> PayloadCodec:
    """Encryption, then external storage, as one codec (for the codec server): decoding
    fetches a stored payload and decrypts it."""
    return ConverterCodec(data_converter(store_dir, threshold, keyring, blob_url=blob_url))
