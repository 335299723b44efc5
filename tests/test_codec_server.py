"""The codec server over real HTTP on loopback: Temporal's remote codec protocol, CORS for the
UI, the optional bearer token, and the ``agentparallels codec-server`` command."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentparallels import devserver
from agentparallels.cli import build_parser
from agentparallels.cli.server import server_options
from agentparallels.codec import payload_codec
from agentparallels.codec_server import CodecServer
from agentparallels.encryption import Keyring
from tests.support.cli import cli_env, cli_process, run_cli
from tests.support.ports import free_port

KEY = base64.b64encode(b"s" * 32).decode()
KEYRING = Keyring.parse([f"ui-key:{KEY}"], source="test")
UI = "http://localhost:8233"
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}}
PLAIN["data"] = base64.b64encode(b'"the wombat prompt"').decode()


def post(url: str, body: object, **headers: str) -> tuple[int, dict[str, str], dict]:
    """POST JSON; the status, headers (lower-cased names) and parsed JSON body."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-Namespace": "default", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, got, raw = e.code, e.headers, e.read()
    return status, {k.lower(): v for k, v in got.items()}, json.loads(raw or b"{}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CodecServer]:
    with CodecServer(
        payload_codec(tmp_path, keyring=KEYRING), port=0, origins=[UI], token=""
    ) as running:
        yield running


def test_encode_then_decode_round_trips_with_cors_headers(server: CodecServer) -> None:
    """/encode seals a payload under the current key id, /decode opens it; a request from the
    UI's origin gets CORS headers that allow credentials."""
    status, headers, sealed = post(f"{server.url}/encode", {"payloads": [PLAIN]}, Origin=UI)
    assert status == 200
    assert headers["access-control-allow-origin"] == UI
    assert headers["access-control-allow-credentials"] == "true"
    [payload] = sealed["payloads"]
    assert base64.b64decode(payload["metadata"]["encryption-key-id"]) == b"ui-key"
    assert b"wombat" not in base64.b64decode(payload["data"])
    status, _, opened = post(f"{server.url}/decode", sealed, Origin=UI)
    assert (status, opened) == (200, {"payloads": [PLAIN]})


def test_preflight_allows_the_ui_origin_only(server: CodecServer) -> None:
    """OPTIONS from the UI's origin names the allowed methods and headers; another origin
    gets no CORS grant."""
    for origin, allowed in ((UI, True), ("http://evil.example", False)):
        request = urllib.request.Request(
            f"{server.url}/decode",
            method="OPTIONS",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
        if allowed:
            assert headers["access-control-allow-origin"] == UI
            assert "POST" in headers["access-control-allow-methods"]
            assert "x-namespace" in headers["access-control-allow-headers"].lower()
        else:
            assert "access-control-allow-origin" not in headers


def test_unknown_key_id_and_bad_requests_are_answered_with_reasons(server: CodecServer) -> None:
    """A payload under a key this server lacks is a 422 naming the id; a bad body a 400; an
    unknown path a 404."""
    other = Keyring.parse([f"gone:{base64.b64encode(b'g' * 32).decode()}"], source="test")
    with CodecServer(payload_codec(Path("/nonexistent"), keyring=other), port=0) as elsewhere:
        _, _, sealed = post(f"{elsewhere.url}/encode", {"payloads": [PLAIN]})
    status, _, body = post(f"{server.url}/decode", sealed)
    assert status == 422 and "key id 'gone'" in body["message"]
    assert post(f"{server.url}/decode", {"payloads": "nope"})[0] == 400
    assert post(f"{server.url}/transcode", {"payloads": []})[0] == 404


def test_token_is_required_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With AGENTPARALLELS_CODEC_AUTH_TOKEN set, requests without the matching bearer header
    get 401."""
    monkeypatch.setenv("AGENTPARALLELS_CODEC_AUTH_TOKEN", "let-me-in")
    with CodecServer(payload_codec(tmp_path, keyring=KEYRING), port=0) as server:
        assert post(f"{server.url}/decode", {"payloads": [PLAIN]})[0] == 401
        wrong = post(f"{server.url}/decode", {"payloads": [PLAIN]}, Authorization="Bearer no")
        assert wrong[0] == 401
        right = post(
            f"{server.url}/decode", {"payloads": [PLAIN]}, Authorization="Bearer let-me-in"
        )
        assert right[:1] == (200,) and right[2] == {"payloads": [PLAIN]}


def test_codec_server_command_serves_with_the_environment_keys(tmp_path: Path) -> None:
    """`agentparallels codec-server --port 0` prints its URL, decrypts with the keyring from
    the environment, and stops on SIGTERM."""
    env = cli_env(AGENTPARALLELS_CODEC_KEYS=f"ui-key:{KEY}", AGENTPARALLELS_BLOB_DIR=str(tmp_path))
    with cli_process(
        "codec-server",
        "--port",
        "0",
        "--cors-origin",
        "http://ui.example:8080",
        env=env,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "keys ui-key" in first and "CORS for http://ui.example:8080" in first, first
        url = first.split("codec server on ", 1)[1].split()[0]
        with CodecServer(payload_codec(tmp_path, keyring=KEYRING), port=0) as reference:
            _, _, sealed = post(f"{reference.url}/encode", {"payloads": [PLAIN]})
        status, headers, opened = post(f"{url}/decode", sealed, Origin="http://ui.example:8080")
        assert (status, opened) == (200, {"payloads": [PLAIN]})
        assert headers["access-control-allow-origin"] == "http://ui.example:8080"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_codec_server_command_refuses_a_bad_key() -> None:
    """A malformed key is a one-line usage error, exit 2, before anything listens."""
    env = cli_env(AGENTPARALLELS_CODEC_KEY="not-a-key")
    done = run_cli("codec-server", "--port", "0", env=env, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "agentparallels: error: AGENTPARALLELS_CODEC_KEY, entry 1: the key is not 32 random "
        "bytes in base64 or hex (generate one with `openssl rand -base64 32`)"
    ]


def ui_settings(port: int) -> dict:
    """The UI's settings; its HTTP server can lag the frontend by a moment."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/settings") as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def test_server_command_gives_the_ui_its_codec_endpoint(tmp_path: Path) -> None:
    """`agentparallels server --ui-codec-endpoint URL` runs a dev server whose UI decodes
    payloads through URL, as the UI's own settings API reports."""
    endpoint = "http://localhost:8081"
    args = build_parser().parse_args(
        [
            "server",
            "--db",
            str(tmp_path / "t.db"),
            "--port",
            str(free_port()),
            "--ui-port",
            str(free_port()),
            "--ui-codec-endpoint",
            endpoint,
        ]
    )
    opts = server_options(args)
    proc = devserver.spawn(opts)
    try:
        await devserver.wait_healthy(opts, proc)
        settings = await asyncio.to_thread(ui_settings, opts.ui_port)
        assert settings["Codec"]["Endpoint"] == endpoint
    finally:
        proc.kill()
        proc.wait()
