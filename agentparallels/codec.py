"""The data converter: pydantic payloads, encrypted when a key is configured, large ones kept
out of history in the SDK's external storage.

Model prompts and answers can be hundreds of kilobytes; recorded in every event that carries
them, they would push a workflow's history toward Temporal's limits (2 MiB a payload, 50 MiB a
history). Temporal's ``ExternalStorage`` hands every payload of at least ``threshold`` bytes to a
storage driver (:mod:`agentparallels.blobstore`: a local directory by default, an S3-compatible
store on a cluster) and puts a small reference, the driver's name and claim, in its place. The
same converter must be installed on every client, worker, replayer and codec server:
:func:`data_converter` builds it from the environment.

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
)

from agentparallels.blobstore import BlobMissing, default_store_dir, driver_for, drivers
from agentparallels.core.errors import UsageError
from agentparallels.encryption import EncryptionCodec, Keyring

__all__ = [
    "BlobMissing",
    "ConverterCodec",
    "DEFAULT_THRESHOLD",
    "THRESHOLD_VAR",
    "data_converter",
    "default_store_dir",
    "external_storage",
    "payload_codec",
]

DEFAULT_THRESHOLD = 128 * 1024
"""Payloads of at least this many bytes (after encryption) go to the blob store; set
``AGENTPARALLELS_CLAIM_CHECK_BYTES`` (the same on every client and worker) to change it."""
THRESHOLD_VAR = "AGENTPARALLELS_CLAIM_CHECK_BYTES"


def external_storage(
    store_dir: Path | None = None, threshold: int | None = None, *, blob_url: str | None = None
) -> ExternalStorage:
    """External storage into ``store_dir``, else the store ``blob_url`` names, else the one the
    environment configures (:func:`agentparallels.blobstore.driver_for`)."""
    if threshold is None:
        text = os.environ.get(THRESHOLD_VAR, str(DEFAULT_THRESHOLD))
        try:
            threshold = int(text)
        except ValueError:
            threshold = -1
        if threshold < 0:
            raise UsageError(f"{THRESHOLD_VAR}={text} is not a byte count: use e.g. 131072")
    primary = driver_for(blob_url, store_dir)
    return ExternalStorage(
        drivers=drivers(primary),
        driver_selector=lambda _context, _payload: primary,
        payload_size_threshold=threshold,
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
