"""An S3-protocol server on loopback for tests: moto's server mode in a thread of the test
process, and the standard AWS variables that point clients (ours and worker processes') at it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "AKIAAGENTPARALLELSTEST"
SECRET_KEY = "s3-secret-key-that-must-never-appear-anywhere"


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    bucket: str
    aws_home: Path
    """An empty directory: AWS config and credential files are looked up there, not in ~."""

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS configuration of a process that uses this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.aws_home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, key to bytes, read raw over the S3 protocol."""
        client = self._client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"]
                found[item["Key"]] = body.read()
        return found

    def _client(self):  # noqa: ANN202 - boto3's client type is generated
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1, a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def new_store(endpoint: str, aws_home: Path) -> S3Store:
    """A fresh bucket on the server."""
    aws_home.mkdir(parents=True, exist_ok=True)
    store = S3Store(endpoint, f"ap-{uuid.uuid4().hex[:16]}", aws_home)
    store._client().create_bucket(Bucket=store.bucket)
    return store
