"""A codec server: Temporal's remote codec protocol over HTTP, for the UI and the CLI.

The Temporal UI and ``temporal workflow show --codec-endpoint URL`` send the payloads they display
to ``POST URL/decode`` (and ``URL/encode`` for what a user types in) as ``{"payloads": [...]}`` in
protobuf JSON, and show what comes back. This server answers with the project's own codecs
(:func:`agentparallels.codec.payload_codec`): a reference to a payload in external storage is
fetched from the blob store this process is configured with (``AGENTPARALLELS_BLOB_URL`` or
``AGENTPARALLELS_BLOB_DIR``), and encrypted payloads are decrypted with the keyring of *this*
process. So only whoever runs it with the key sees plaintext; the Temporal server and the UI's
host never hold the key, and without a codec server the UI shows only the reference (bucket,
key and hash).

Browsers call it cross-origin, from the UI's page: requests from the ``--cors-origin`` origins
get CORS headers (credentials allowed, so the UI's "include credentials" setting works). When
``AGENTPARALLELS_CODEC_AUTH_TOKEN`` is set, every encode/decode request must carry
``Authorization: Bearer <token>`` (``temporal ... --codec-auth 'Bearer <token>'``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from agentparallels.core.errors import AgentParallelsError, UsageError
from agentparallels.encryption import Keyring

DEFAULT_PORT = 8081
DEFAULT_ORIGIN = "http://localhost:8233"
TOKEN_VAR = "AGENTPARALLELS_CODEC_AUTH_TOKEN"
MAX_BODY = 64 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], codec: PayloadCodec, origins: Sequence[str], token: str
    ) -> None:
        self.codec = codec
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.token = token
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per payload batch is noise; errors are answered, not logged

    def _cors(self) -> dict[str, str]:
        origin = (self.headers.get("Origin") or "").rstrip("/")
        if origin not in self.server.origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, X-Namespace, Authorization",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        for name, value in {**self._cors(), "Content-Type": content_type}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fail(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"message": message}).encode())

    def do_OPTIONS(self) -> None:  # CORS preflight: no auth header is sent with it
        self._send(204, b"", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._fail(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        path = self.path.split("?", 1)[0].rstrip("/")
        operation = path.rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            return self._fail(404, f"unknown path {self.path}: POST .../encode or .../decode")
        if self.server.token and not hmac.compare_digest(
            (self.headers.get("Authorization") or "").encode(),
            f"Bearer {self.server.token}".encode(),
        ):
            return self._fail(401, "missing or wrong Authorization header")
        try:
            payloads = json_format.Parse(raw or b"{}", Payloads())
        except json_format.ParseError as e:
            return self._fail(400, f'the body is not {{"payloads": [...]}} in protobuf JSON: {e}')
        codec = self.server.codec
        run = codec.encode if operation == "encode" else codec.decode
        try:
            result = asyncio.run(run(list(payloads.payloads)))
        except (AgentParallelsError, RuntimeError, ValueError) as e:
            # unknown key id, missing blob, a store that refused: say which (the SDK's S3
            # driver names the bucket and key, never a credential)
            return self._fail(422, str(e))
        body = json_format.MessageToJson(Payloads(payloads=result), indent=None)
        self._send(200, body.encode())

    def do_GET(self) -> None:
        self._fail(405, "POST .../encode or .../decode")


class CodecServer:
    """The codec server on a background thread (``port=0``: any free port)."""

    def __init__(
        self,
        codec: PayloadCodec,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        origins: Sequence[str] = (DEFAULT_ORIGIN,),
        token: str | None = None,
    ) -> None:
        token = os.environ.get(TOKEN_VAR, "") if token is None else token
        self._server = _Server((host, port), codec, origins, token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes | bytearray) else host}:{port}"

    def start(self) -> CodecServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CodecServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(host: str, port: int, origins: Sequence[str] | None) -> int:
    """``agentparallels codec-server``: serve the environment's codecs in the foreground until
    SIGINT or SIGTERM."""
    from agentparallels.codec import payload_codec

    keyring = Keyring.from_env()
    codec = payload_codec(keyring=keyring)
    origins = origins or [DEFAULT_ORIGIN]
    try:
        server = CodecServer(codec, host=host, port=port, origins=origins)
    except OSError as e:
        raise UsageError(f"cannot serve on {host}:{port}: {e.strerror}") from None
    note = f"keys {', '.join(keyring.keys)}" if keyring.encrypts else "no key: blob store only"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(f"codec server on {server.url} ({note}); CORS for {', '.join(origins)}")
        print(f"use it as the UI's codec endpoint: --ui-codec-endpoint {server.url}")
        sys.stdout.flush()
        stop.wait()
    return 0


__all__ = ["CodecServer", "DEFAULT_ORIGIN", "DEFAULT_PORT", "MAX_BODY", "TOKEN_VAR", "command"]
