"""Where large payloads go: storage drivers for the SDK's external storage.

Temporal's ``ExternalStorage`` (see :mod:`agentparallels.codec`) hands every payload of at least
the threshold to a :class:`~temporalio.converter.StorageDriver` and records only the driver's
claim (a key and a content hash) in history. Two drivers, chosen by the environment:

- :class:`LocalDirectoryDriver`, the one-machine default: content-addressed files under
  ``$AGENTPARALLELS_BLOB_DIR``, else ``blobs/`` under the state directory. Every process that
  reads a history must see that directory, so it suits one machine (or a shared volume).
- :class:`S3BlobDriver`, for clusters: the SDK's S3 driver on any S3-compatible store, set by
  ``AGENTPARALLELS_BLOB_URL=s3://BUCKET/PREFIX``. The endpoint, region and credentials come from
  the standard AWS configuration (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
  ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or pod
  role), which the project never reads, copies or logs: claims carry the bucket and key, never
  a credential.

Both are registered in every process, so a history written with one still reads with the other
configured (the S3 driver takes the bucket from the claim). The payloads a driver receives are
already encoded by the payload codec, so with a key configured they are ciphertext.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from agentparallels.core.errors import AgentParallelsError, UsageError

BLOB_DIR_VAR = "AGENTPARALLELS_BLOB_DIR"
BLOB_URL_VAR = "AGENTPARALLELS_BLOB_URL"


class BlobMissing(AgentParallelsError):
    """A history refers to a stored payload that this process's store lacks."""


def default_store_dir() -> Path:
    """``$AGENTPARALLELS_BLOB_DIR``, else ``blobs/`` under the state directory."""
    explicit = os.environ.get(BLOB_DIR_VAR)
    if explicit:
        return Path(explicit)
    from agentparallels.core.places import state_dir

    return state_dir() / "blobs"


class LocalDirectoryDriver(StorageDriver):
    """Payloads as files named by the SHA-256 of their bytes, under ``root``."""

    NAME = "agentparallels.local-dir"

    def __init__(self, root: Path) -> None:
        self.root = root

    def name(self) -> str:
        return self.NAME

    def type(self) -> str:
        return self.NAME

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        target = self.path(key)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)  # atomic: a reader never sees half a blob
        return key

    def _get(self, key: str) -> bytes:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise BlobMissing(f"stored payload key {key!r} is not a SHA-256 hex digest")
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(
                f"blob {key} is not in the blob store {self.root}: every worker and client "
                f"must reach the same store (set {BLOB_DIR_VAR} to a shared directory, or "
                f"{BLOB_URL_VAR}=s3://BUCKET/PREFIX on a cluster)"
            ) from None
        if hashlib.sha256(data).hexdigest() != key:
            raise BlobMissing(f"blob {key} in {self.root} is corrupt (its hash does not match)")
        return data

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = []
        for payload in payloads:
            key = await asyncio.to_thread(self._put, payload.SerializeToString())
            claims.append(StorageDriverClaim(claim_data={"key": key}))
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        out = []
        for claim in claims:
            data = await asyncio.to_thread(self._get, claim.claim_data.get("key", ""))
            out.append(Payload.FromString(data))
        return out


class _S3Client(S3StorageDriverClient):
    """The SDK's aioboto3 adapter around a client opened for each call, from a session of the
    running event loop.

    A client or session used once belongs to the event loop that used it (refreshed
    credentials hold a lock of that loop), and this process may have several: the codec server
    runs one per request. ``prefix`` is put before the keys the driver writes; it reads the
    full keys its claims hold."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _open(self) -> Any:
        import aioboto3  # only where an S3 store is used

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            for name in ("botocore", "aiobotocore", "aioboto3"):  # a line per call at INFO
                if logging.getLogger(name).level == logging.NOTSET:
                    logging.getLogger(name).setLevel(logging.WARNING)
            session = self._sessions[loop] = aioboto3.Session()
        return session.client("s3")

    async def _call(self, method: str, **kwargs: Any) -> Any:
        from temporalio.contrib.aws.s3driver.aioboto3 import new_aioboto3_client

        async with self._open() as s3:
            return await getattr(new_aioboto3_client(s3), method)(**kwargs)

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        await self._call("put_object", bucket=bucket, key=self.prefix + key, data=data)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        return bool(await self._call("object_exists", bucket=bucket, key=self.prefix + key))

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        return bytes(await self._call("get_object", bucket=bucket, key=key))


class S3BlobDriver(S3StorageDriver):
    """The SDK's S3 driver, writing under ``prefix`` in ``bucket``."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        super().__init__(client=_S3Client(self.prefix), bucket=bucket)

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = await super().store(context, payloads)
        # The claim names the whole key, so it reads back whatever prefix is configured later.
        return [
            StorageDriverClaim(
                claim_data={**c.claim_data, "key": self.prefix + c.claim_data["key"]}
            )
            for c in claims
        ]


def driver_for(url: str | None = None, store_dir: Path | None = None) -> StorageDriver:
    """The driver that stores: ``store_dir`` if given, else the one ``url`` (default:
    ``$AGENTPARALLELS_BLOB_URL``) names, else the local directory of
    :func:`default_store_dir`."""
    if store_dir is not None:
        return LocalDirectoryDriver(store_dir)
    url = url if url is not None else os.environ.get(BLOB_URL_VAR, "")
    if not url:
        return LocalDirectoryDriver(default_store_dir())
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        return S3BlobDriver(parts.netloc, parts.path)
    if parts.scheme == "file" and parts.path and not parts.netloc:
        return LocalDirectoryDriver(Path(parts.path))
    raise UsageError(
        f"{BLOB_URL_VAR}={url} is not a blob store URL: use s3://BUCKET/PREFIX (the endpoint and "
        "credentials come from the standard AWS variables, e.g. AWS_ENDPOINT_URL) or "
        "file:///ABSOLUTE/DIRECTORY"
    )


def drivers(primary: StorageDriver) -> list[StorageDriver]:
    """``primary`` first (it stores), then one of the other kind, to read claims it wrote."""
    other = (
        LocalDirectoryDriver(default_store_dir())
        if isinstance(primary, S3BlobDriver)
        else S3BlobDriver(bucket="")
    )
    return [primary, other]


__all__ = [
    "BLOB_DIR_VAR",
    "BLOB_URL_VAR",
    "BlobMissing",
    "LocalDirectoryDriver",
    "S3BlobDriver",
    "default_store_dir",
    "driver_for",
    "drivers",
]
