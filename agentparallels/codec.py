"""The data converter: pydantic payloads, encrypted when a key is configured, large ones
claim-checked into a blob store.

Claim check: large payloads live in a blob store, and workflow history holds only their key.

Model prompts and answers can be hundreds of kilobytes; recorded in every event that carries
them, they would push a workflow's history toward Temporal's limits (2 MiB a payload, 50 MiB a
history). :class:`ClaimCheckCodec` stores every payload of at least ``threshold`` bytes in a
content-addressed :class:`BlobStore` (a directory shared by all workers and clients of a
deployment) and puts a small reference in its place. The same codecs must be installed on every
client, worker, replayer and codec server: :func:`data_converter` builds them.

Encryption (:mod:`agentparallels.encryption`) comes first on the way out and last on the way
back: a payload is encrypted, then claim-checked if the ciphertext is large. The blob store
therefore holds only ciphertext, named by the hash of that ciphertext, and neither the store
nor the history sees plaintext. (The reverse order would leave the large payloads, the prompts
and file contents, readable in the blob store.) With encryption on, failure messages and stack
traces travel as encoded attributes too, so they are encrypted like any payload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from agentparallels.encryption import EncryptionCodec, Keyring
from agentparallels.errors import AgentParallelsError

ENCODING = b"agentparallels/claim-check/v1"
DEFAULT_THRESHOLD = 128 * 1024
"""Payloads of at least this many bytes (serialized) go to the blob store; set
``AGENTPARALLELS_CLAIM_CHECK_BYTES`` (the same on every client and worker) to change it."""


class BlobMissing(AgentParallelsError):
    """A history refers to a blob that is not in this process's store."""


def default_store_dir() -> Path:
    """``$AGENTPARALLELS_BLOB_DIR``, else ``blobs/`` under the state directory."""
    explicit = os.environ.get("AGENTPARALLELS_BLOB_DIR")
    if explicit:
        return Path(explicit)
    from agentparallels.devserver import state_dir

    return state_dir() / "blobs"


@dataclasses.dataclass(frozen=True, slots=True)
class BlobStore:
    """Content-addressed files: a blob's name is the SHA-256 of its bytes."""

    root: Path

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)  # atomic: a reader never sees half a blob
        return key

    def get(self, key: str) -> bytes:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(
                f"blob {key} is not in the blob store {self.root}: every worker and client "
                "must use the same store (set AGENTPARALLELS_BLOB_DIR to a shared directory)"
            ) from None
        if hashlib.sha256(data).hexdigest() != key:
            raise BlobMissing(f"blob {key} in {self.root} is corrupt (its hash does not match)")
        return data


class ClaimCheckCodec(PayloadCodec):
    """Swap large payloads for references to the blob store, and back."""

    def __init__(self, store: BlobStore, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.store = store
        self.threshold = threshold

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            raw = payload.SerializeToString()
            if len(raw) < self.threshold:
                out.append(payload)
                continue
            key = await asyncio.to_thread(self.store.put, raw)
            out.append(Payload(metadata={"encoding": ENCODING}, data=key.encode()))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)
                continue
            raw = await asyncio.to_thread(self.store.get, payload.data.decode())
            original = Payload()
            original.ParseFromString(raw)
            out.append(original)
        return out


class CodecChain(PayloadCodec):
    """Codecs applied in order when encoding, in reverse order when decoding."""

    def __init__(self, *codecs: PayloadCodec) -> None:
        self.codecs = codecs

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = list(payloads)
        for codec in self.codecs:
            out = await codec.encode(out)
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = list(payloads)
        for codec in reversed(self.codecs):
            out = await codec.decode(out)
        return out


def payload_codec(
    store_dir: Path | None = None, threshold: int | None = None, keyring: Keyring | None = None
) -> CodecChain:
    """Encryption (with ``keyring``, default: from the environment), then claim check."""
    if threshold is None:
        threshold = int(os.environ.get("AGENTPARALLELS_CLAIM_CHECK_BYTES", DEFAULT_THRESHOLD))
    return CodecChain(
        EncryptionCodec(Keyring.from_env() if keyring is None else keyring),
        ClaimCheckCodec(BlobStore(store_dir or default_store_dir()), threshold),
    )


def data_converter(
    store_dir: Path | None = None, threshold: int | None = None, keyring: Keyring | None = None
) -> DataConverter:
    """Pydantic payloads through :func:`payload_codec`; failure messages are encoded (and so
    encrypted) when the keyring encrypts."""
    keyring = Keyring.from_env() if keyring is None else keyring
    codec = payload_codec(store_dir, threshold, keyring)
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    if keyring.encrypts:
        converter = dataclasses.replace(
            converter, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
        )
    return converter
