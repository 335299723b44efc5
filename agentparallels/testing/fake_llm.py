"""A scripted fake LLM provider for tests and demos.

`FakeLLM` is a real HTTP server on 127.0.0.1 (stdlib `ThreadingHTTPServer` in a background
thread, so it serves sync and async code alike), not a mock: the unmodified `openai` and
`anthropic` SDKs talk to it over TCP, so retries, timeouts, SSE parsing and error mapping are the
SDKs' own. It speaks OpenAI chat completions (`POST /v1/chat/completions`) and Anthropic messages
(`POST /v1/messages`), streaming and not, and answers from a script of responses consumed in order
(one FIFO for both protocols). Each entry is exactly one of:

    {"content": "text", "usage": {"input": 12, "output": 5}}  # usage defaults to word counts
    {"tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
     "content": "optional text", "usage": {...}}  # tool calls, in either provider's format
    {"status": 429, "retry_after": 2}  # an HTTP error with a provider-shaped body
    {"error": "rate_limit"}  # or insufficient_quota, context_length, unauthorized,
                             # content_filter, bad_request, not_found, unprocessable
    {"fault": "stall", "after_chunks": 1}  # or "reset", "malformed"

`status` and `error` entries also take `retry_after` (s), `retry_after_ms` and `should_retry`
(sets `x-should-retry`); every entry takes `delay_ms`. A streamed fault first sends the stream's
preamble and `after_chunks` text deltas ("chunk0 ", "chunk1 ", ...); a non-streamed one fails
before any byte. When the script runs out the `default` entry answers, or a 500 (with
`x-should-retry: false`) if it is None. Entries in `match` (text -> entry) answer every request
whose messages contain that text, ahead of the script and without using it up: a way to answer
one kind of request (a summary, say) the same way wherever it falls in a long run.

A `tool_calls` entry answers as the provider would: OpenAI `message.tool_calls` (streamed as
`delta.tool_calls` fragments with an index, the id and name first, the arguments in pieces) with
finish reason `tool_calls`; Anthropic `tool_use` content blocks (streamed as
`content_block_start` plus `input_json_delta` pieces) with stop reason `tool_use`. Ids are
`call_<n>` / `toolu_<n>` unless a call gives its own `id`. `arguments` may be a string, sent as
is: a way to script malformed JSON.

Threads (`threads=`, `push_thread(marker, *entries)`) give parallel conversations their own
scripts: a request whose messages (any role, any message, system included) contain a thread's
marker takes that thread's next entry, ahead of `match` and the script; the first marker, in
the order the threads were made, that matches and still has entries wins. A script file is a
JSON list of entries, or `{"script": [...], "threads": {marker: [...]}, "default": {...}}`
(`"responses"` is the older name of `"script"`).

Every request is kept in `requests` (`Recorded`: its path, headers and parsed body; `messages`,
`system` and `tools` as sent), for tests to check what the client sent.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STALL_SECONDS = 120.0
_HEADERS = {"retry_after": "retry-after", "retry_after_ms": "retry-after-ms"}
_HEADERS["should_retry"] = "x-should-retry"
_KINDS: dict[str, set[str]] = {
    "content": {"content", "usage", "delay_ms"},
    "status": {"status", "delay_ms", *_HEADERS},
    "error": {"error", "delay_ms", *_HEADERS},
    "fault": {"fault", "after_chunks", "delay_ms"},
    "tool_calls": {"tool_calls", "content", "usage", "delay_ms"},
}
_FAULTS = ("stall", "reset", "malformed")
_ROUTES = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}
_ID_HEADER = {"openai": "x-request-id", "anthropic": "request-id"}
_STOP = {"openai": ("stop", "content_filter"), "anthropic": ("end_turn", "refusal")}
_TOOL_STOP = {"openai": "tool_calls", "anthropic": "tool_use"}
_INVALID = "invalid_request_error"
_ANTHROPIC_TYPES = {400: _INVALID, 401: "authentication_error", 402: "billing_error"}
_ANTHROPIC_TYPES |= {403: "permission_error", 404: "not_found_error", 408: "timeout_error"}
_ANTHROPIC_TYPES |= {409: "conflict_error", 429: "rate_limit_error", 503: "overloaded_error"}
_ANTHROPIC_TYPES |= {504: "timeout_error", 529: "overloaded_error"}
# name: (OpenAI status, type, code; Anthropic status, type; message)
_NAMED: dict[str, tuple[int, str, str | None, int, str, str]] = {
    "rate_limit": (429, "requests", "rate_limit_exceeded", 429, "rate_limit_error", "Rate limit."),
    "insufficient_quota": (
        *(429, "insufficient_quota", "insufficient_quota", 402, "billing_error"),
        "You exceeded your current quota: your credit balance is too low.",
    ),
    "context_length": (
        *(400, _INVALID, "context_length_exceeded", 400, _INVALID),
        "prompt is too long: 210000 tokens > 200000 maximum context length",
    ),
    "unauthorized": (401, _INVALID, "invalid_api_key", 401, "authentication_error", "Bad API key."),
    "bad_request": (400, _INVALID, None, 400, _INVALID, "Invalid request."),
    "not_found": (404, _INVALID, "model_not_found", 404, "not_found_error", "No such model."),
    "unprocessable": (422, _INVALID, None, 422, _INVALID, "Unprocessable entity."),
}
_ERRORS = (*_NAMED, "content_filter")


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    at: float  # time.monotonic()

    @property
    def messages(self) -> list[Any]:
        """The conversation as sent (Anthropic's ``system`` is separate: :attr:`system`)."""
        return list(self.body.get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def system(self) -> Any:
        """Anthropic's ``system`` (a string or blocks), or None."""
        return self.body.get("system") if isinstance(self.body, dict) else None

    @property
    def tools(self) -> list[Any]:
        """The tools as sent, in the request's own wire format; empty if none were."""
        return list(self.body.get("tools") or []) if isinstance(self.body, dict) else []


@dataclass(frozen=True)
class _Call:
    """A scripted tool call as sent: ``raw`` is the arguments' JSON text (or any string)."""

    id: str
    name: str
    raw: str

    def input(self) -> Any:
        """Anthropic's ``input`` (an object): the parsed arguments, or the raw string when it
        is not JSON (only a stream can carry malformed arguments faithfully)."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw

    def openai(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.raw}
        return {"id": self.id, "type": "function", "function": function}


def _fragments(raw: str) -> list[str]:
    """``raw`` in three pieces or so, as providers stream arguments."""
    size = max(1, -(-len(raw) // 3))
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return _count(value) or (isinstance(value, float) and value >= 0)


def _usage_ok(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) <= {"input", "output"}
        and all(map(_count, value.values()))
    )


def _tool_call_ok(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) <= {"name", "arguments", "id"}
        and isinstance(value.get("name"), str)
        and isinstance(value.get("arguments", {}), dict | str)
        and isinstance(value.get("id", ""), str)
    )


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tool_calls": (
        lambda v: isinstance(v, list) and bool(v) and all(map(_tool_call_ok, v)),
        'a non-empty list like [{"name": "read_file", "arguments": {"path": "a.py"}}] '
        "(arguments an object, or a string sent as is; an optional id)",
    ),
    "content": (lambda v: isinstance(v, str), "a string"),
    "usage": (_usage_ok, 'like {"input": 12, "output": 5}'),
    "status": (lambda v: _count(v) and 400 <= v <= 599, "an integer from 400 to 599"),
    "error": (lambda v: v in _ERRORS, f"one of {list(_ERRORS)}"),
    "fault": (lambda v: v in _FAULTS, f"one of {list(_FAULTS)}"),
    "after_chunks": (_count, "a non-negative integer"),
    "delay_ms": (_number, "a non-negative number"),
    "retry_after": (_number, "a non-negative number"),
    "retry_after_ms": (_number, "a non-negative number"),
    "should_retry": (lambda v: isinstance(v, bool), "true or false"),
}


def _validate(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a JSON object, got {entry!r}")
    kinds = ["tool_calls"] if "tool_calls" in entry else [k for k in _KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of {list(_KINDS)}, got keys {sorted(entry)}")
    allowed = _KINDS[kinds[0]]
    if unknown := sorted(set(entry) - allowed):
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")
    for key, value in entry.items():
        check, expected = _CHECKS[key]
        if not check(value):
            raise ValueError(f"{where}: {key!r} must be {expected}, got {value!r}")
    return dict(entry)


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(map(_words, value))
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


def _strings(value: Any) -> list[str]:
    """Every string in a parsed JSON value: the text of a request's messages, whatever their
    shape (plain content, content blocks, tool calls, tool results)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _openai_usage(n_in: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeLLM) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # dropped connections are routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer encoding
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake._record(Recorded(path, headers, body, time.monotonic()))
        self.proto = _ROUTES.get(path, "openai")
        self.rid = f"fake{next(fake._ids)}"
        self.req: dict[str, Any] = body if isinstance(body, dict) else {}
        self.model = str(self.req.get("model", "fake-model"))
        self.stream = self.req.get("stream") is True
        options = self.req.get("stream_options")
        self.usage_chunk = isinstance(options, dict) and options.get("include_usage") is True
        self.prompt_words = _words(self.req.get("messages")) + _words(self.req.get("system"))
        try:
            if path in _ROUTES:
                asked = [self.req.get("messages"), self.req.get("system")]
                prompt = json.dumps(asked, ensure_ascii=False)
                self._reply(fake._next_entry(prompt, "\n".join(_strings(asked))))
            else:
                self._error(404, {"message": f"unknown path {path}"})
        except OSError:  # the client went away mid-answer
            self.close_connection = True

    do_GET = do_POST  # recorded too; answered 404 unless the path is a route

    def _reply(self, entry: dict[str, Any] | None) -> None:
        if entry is None:
            message = "fake LLM script is exhausted and has no default"
            return self._error(500, {"message": message}, {"x-should-retry": "false"})
        headers = {_HEADERS[k]: json.dumps(v) for k, v in entry.items() if k in _HEADERS}
        if self.server.fake._stopping.wait(entry.get("delay_ms", 0) / 1000):
            self.close_connection = True
        elif "tool_calls" in entry:
            calls = [self._call(call) for call in entry["tool_calls"]]
            stop = _TOOL_STOP[self.proto]
            self._answer(entry.get("content", ""), stop, entry.get("usage", {}), calls)
        elif "content" in entry:
            self._answer(entry["content"], _STOP[self.proto][0], entry.get("usage", {}))
        elif "status" in entry:
            self._error(entry["status"], {"message": f"fake HTTP {entry['status']}"}, headers)
        elif "fault" in entry:
            self._fault(entry["fault"], entry.get("after_chunks", 0))
        elif entry["error"] == "content_filter":
            self._answer("", _STOP[self.proto][1], {})
        else:
            o_status, o_type, code, a_status, a_type, message = _NAMED[entry["error"]]
            if self.proto == "openai":
                self._error(o_status, {"message": message, "type": o_type, "code": code}, headers)
            else:
                self._error(a_status, {"message": message, "type": a_type}, headers)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, _ID_HEADER[self.proto]: "req_" + self.rid}.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        length = {"content-type": "application/json", "content-length": str(len(data))}
        self._head(status, {**length, **(headers or {})})
        self.wfile.write(data)

    def _error(
        self, status: int, error: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body: dict[str, Any]
        if self.proto == "openai":
            kind = "server_error" if status >= 500 else _INVALID
            body = {"error": {"type": kind, "param": None, "code": None, **error}}
        else:
            kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else _INVALID)
            body = {
                "type": "error",
                "error": {"type": kind, **error},
                "request_id": "req_" + self.rid,
            }
        self._send(status, body, headers)

    def _call(self, call: dict[str, Any]) -> _Call:
        """A scripted call with its id (``call_<n>`` / ``toolu_<n>`` unless the script gives
        one) and its arguments as the JSON text the server sends."""
        prefix = "call" if self.proto == "openai" else "toolu"
        call_id = call.get("id") or f"{prefix}_{next(self.server.fake._call_ids)}"
        arguments = call.get("arguments", {})
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return _Call(call_id, call["name"], raw)

    def _message(
        self, text: str, stop: str | None, n_in: int, n_out: int, calls: Sequence[_Call] = ()
    ) -> dict[str, Any]:
        if self.proto == "anthropic":
            content = [{"type": "text", "text": text}] if text else []
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input()} for c in calls
            ]
            return {
                "id": "msg_" + self.rid,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out},
            }
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["content"] = text or None
            message["tool_calls"] = [c.openai() for c in calls]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": stop}
        body = self._chunk(None) | {"object": "chat.completion", "choices": [choice]}
        return body | {"usage": _openai_usage(n_in, n_out)}

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        """An OpenAI stream chunk; no choices when `delta` is None."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {
            "id": "chatcmpl-" + self.rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [] if delta is None else [choice],
        }
        return (chunk | {"usage": None}) if self.usage_chunk else chunk

    def _events(
        self,
        pieces: list[str],
        stop: str | None,
        n_in: int,
        n_out: int,
        calls: Sequence[_Call] = (),
    ) -> list[Any]:
        """SSE payloads for a streamed answer; with stop=None only its start and the pieces."""
        if self.proto == "openai":
            return self._openai_events(pieces, stop, n_in, n_out, calls)
        return self._anthropic_events(pieces, stop, n_out, calls, n_in)

    def _openai_events(
        self, pieces: list[str], stop: str | None, n_in: int, n_out: int, calls: Sequence[_Call]
    ) -> list[Any]:
        """Text deltas, then per call a fragment with its index, id and name and its
        arguments in pieces (clients put them back together by index), then the finish."""
        events: list[Any] = [self._chunk({"role": "assistant", "content": ""})]
        events += [self._chunk({"content": piece}) for piece in pieces]
        for i, call in enumerate(calls):
            start = {"index": i, "id": call.id, "type": "function"}
            start["function"] = {"name": call.name, "arguments": ""}
            events.append(self._chunk({"tool_calls": [start]}))
            for part in _fragments(call.raw):
                piece = {"index": i, "function": {"arguments": part}}
                events.append(self._chunk({"tool_calls": [piece]}))
        if stop is not None:
            events.append(self._chunk({}, stop))
            if self.usage_chunk:
                events.append(self._chunk(None) | {"usage": _openai_usage(n_in, n_out)})
            events.append("[DONE]")
        return events

    def _anthropic_events(
        self, pieces: list[str], stop: str | None, n_out: int, calls: Sequence[_Call], n_in: int
    ) -> list[Any]:
        """The real event sequence: message_start, a text block, then per call a tool_use
        block whose input arrives as input_json_delta pieces, then message_delta and stop."""
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": self._message("", None, n_in, 1)}
        ]
        if pieces or stop is None:
            block = {"type": "text", "text": ""}
            events += [{"type": "content_block_start", "index": 0, "content_block": block}]
            events += [{"type": "ping"}]
        for piece in pieces:
            delta = {"type": "text_delta", "text": piece}
            events.append({"type": "content_block_delta", "index": 0, "delta": delta})
        if stop is None:
            return events
        events += [{"type": "content_block_stop", "index": 0}] if pieces else []
        for index, call in enumerate(calls, start=1 if pieces else 0):
            use: dict[str, Any] = {"type": "tool_use", "id": call.id, "name": call.name}
            use["input"] = {}
            events.append({"type": "content_block_start", "index": index, "content_block": use})
            for part in _fragments(call.raw):
                delta = {"type": "input_json_delta", "partial_json": part}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
            events.append({"type": "content_block_stop", "index": index})
        ending: dict[str, Any] = {"stop_reason": stop, "stop_sequence": None}
        usage = {"output_tokens": n_out}
        events += [{"type": "message_delta", "delta": ending, "usage": usage}]
        return [*events, {"type": "message_stop"}]

    def _stream(self, events: list[Any]) -> None:
        sse = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        self._head(200, {**sse, "transfer-encoding": "chunked"})
        for event in events:
            if isinstance(event, str):
                self._write(f"data: {event}\n\n".encode())
            else:
                name = f"event: {event['type']}\n" if self.proto == "anthropic" else ""
                self._write(f"{name}data: {json.dumps(event)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        """Write one HTTP chunk; an empty one ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _answer(
        self, text: str, stop: str, usage: dict[str, int], calls: Sequence[_Call] = ()
    ) -> None:
        n_in = usage.get("input", self.prompt_words)
        n_out = usage.get("output", len(text.split()) + sum(len(c.raw.split()) for c in calls))
        if not self.stream:
            return self._send(200, self._message(text, stop, n_in, n_out, calls))
        pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
        self._stream(self._events(pieces, stop, n_in, n_out, calls))
        self._write(b"")

    def _fault(self, fault: str, after_chunks: int) -> None:
        if self.stream:
            pieces = [f"chunk{i} " for i in range(after_chunks)]
            self._stream(self._events(pieces, None, self.prompt_words, 0))
        if fault == "malformed" and not self.stream:
            self._send(200, b'{"id": "broken", "choices": [')
        elif fault == "malformed":
            name = b"event: content_block_delta\n" if self.proto == "anthropic" else b""
            self._write(name + b'data: {"type": "content_block_delta", "index": 0,\n\n')
            self._write(b"")
        elif fault == "stall":
            self.server.fake._stopping.wait(STALL_SECONDS)
            self.close_connection = True
        else:  # reset: let what was written reach the client, then RST instead of FIN
            time.sleep(0.05)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes
            self.connection.close()
            self.close_connection = True


class FakeLLM:
    """A scripted OpenAI- and Anthropic-compatible HTTP server; see the module docstring."""

    def __init__(
        self,
        script: list[dict] | None = None,
        *,
        default: dict | None = {"content": "ok"},  # noqa: B006 - never mutated, copied below
        host: str = "127.0.0.1",
        port: int = 0,
        match: dict[str, dict] | None = None,
        threads: dict[str, list[dict]] | None = None,
    ) -> None:
        entries = [_validate(e, f"script entry {i}") for i, e in enumerate(script or [])]
        self._match = {k: _validate(e, f"match {k!r}") for k, e in (match or {}).items()}
        self._script: deque[dict[str, Any]] = deque(entries)
        self._threads: dict[str, deque[dict[str, Any]]] = {}
        self._call_ids = itertools.count(1)
        self._default = None if default is None else _validate(default, "default")
        self.requests: list[Recorded] = []
        self._address = (host, port)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for marker, thread in (threads or {}).items():
            self.push_thread(marker, *thread)

    def start(self) -> FakeLLM:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled streams and close open connections; returns promptly."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(server.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server root: the Anthropic SDK's base_url."""
        if self._server is None:
            raise RuntimeError("FakeLLM is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes | bytearray) else host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def push(self, *entries: dict) -> None:
        """Append entries to the script."""
        checked = [_validate(e, f"pushed entry {i}") for i, e in enumerate(entries)]
        with self._lock:
            self._script.extend(checked)

    def push_thread(self, marker: str, *entries: dict) -> None:
        """Append entries to the thread of ``marker``: requests whose messages contain the
        marker take them in order, so parallel conversations each get their own answers."""
        if not marker:
            raise ValueError("a thread's marker must not be empty")
        checked = [_validate(e, f"thread {marker!r} entry {i}") for i, e in enumerate(entries)]
        with self._lock:
            self._threads.setdefault(marker, deque()).extend(checked)

    def _next_entry(self, prompt: str = "", text: str | None = None) -> dict[str, Any] | None:
        """A thread's next entry (the first marker, in the order the threads were made, that
        the request's ``text`` contains and that has entries left), else a ``match`` entry,
        else the script's next, else the default."""
        with self._lock:
            for marker, thread in self._threads.items():
                if thread and marker in (prompt if text is None else text):
                    return thread.popleft()
        for key, entry in self._match.items():
            if key in prompt:
                return entry
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)


@dataclass(frozen=True)
class ScriptFile:
    """What a script file holds: the main script, the default, and per-conversation threads."""

    script: list[dict]
    default: dict | None
    threads: dict[str, list[dict]]


def read_script(path: Path) -> ScriptFile:
    """Read a script file: a JSON list of entries, or an object with the list under
    ``"script"`` (or ``"responses"``), ``"default"`` and ``"threads"`` (marker -> entries)."""
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    default: Any = {"content": "ok"}
    threads: Any = {}
    if isinstance(data, dict):
        allowed = {"responses", "script", "default", "threads"}
        if unknown := sorted(set(data) - allowed):
            raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        default = data.get("default", default)
        threads = data.get("threads", {})
        data = data.get("script", data.get("responses", []))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of entries or an object with 'script'")
    if not isinstance(threads, dict) or not all(isinstance(t, list) for t in threads.values()):
        raise ValueError(f"{path}: 'threads' must map each marker to a list of entries")
    return ScriptFile(
        script=[_validate(entry, f"{path}: entry {i}") for i, entry in enumerate(data)],
        default=None if default is None else _validate(default, f"{path}: default"),
        threads={
            marker: [_validate(e, f"{path}: thread {marker!r} entry {i}") for i, e in enumerate(t)]
            for marker, t in threads.items()
        },
    )


def load_script(path: Path) -> tuple[list[dict], dict | None]:
    """The script and default of a script file (:func:`read_script` has its threads too)."""
    read = read_script(path)
    return read.script, read.default


def serve(port: int, script_path: Path) -> int:
    """Serve `script_path` on 127.0.0.1:`port` in the foreground until SIGINT or SIGTERM."""
    read = read_script(script_path)
    done = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in signals}
    try:
        with FakeLLM(read.script, default=read.default, port=port, threads=read.threads) as fake:
            print(
                f"fake LLM on {fake.url} (OpenAI: {fake.openai_base_url}, Anthropic: {fake.url})",
                flush=True,
            )
            while not done.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = [
    "FakeLLM",
    "Recorded",
    "STALL_SECONDS",
    "ScriptFile",
    "load_script",
    "read_script",
    "serve",
]
