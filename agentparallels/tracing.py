"""Tracing: every tool command and model call is an OpenTelemetry span, inside the job's trace.

Temporal's ``TracingInterceptor`` (on every client, so on the workers built from it) carries the
trace from the command that starts a job through its workflows, child workflows and activities;
the two places where tools and models are called add a span per call, with sizes and outcome:

- ``execute_tool <name>`` around ``activities._proc.run_command`` (codemods, checks, ruff, tests);
- ``chat <model>`` around the model-call activity, with the OpenTelemetry GenAI attributes
  (``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` ...).

Spans carry sizes, never contents: prompts, answers, file contents and command output stay
out of telemetry. A tool span keeps the command line the user configured (shortened). Every
span this process exports goes through :class:`Scrubbed` first: credentials in URLs become
``***`` in every string attribute and status, a status or exception message keeps only its
first line (a failure's message can quote a command's output, and so a file's lines), and
exception stack traces are dropped (the worker's log has them).

Replay-safe: workflow-side spans are made by the interceptor outside the sandbox and skipped
while a workflow replays history; the spans here are made in activities, which never replay.

Export: :func:`configure` (once per process, by the CLI and the worker) sends spans over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, honouring
the standard ``OTEL_*`` variables (protocol, headers, service name, resource attributes);
otherwise nothing is exported and tracing costs next to nothing.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio.client import Client, OutboundInterceptor, QueryWorkflowInput
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agentparallels.core import redact
from agentparallels.core.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

SCOPE = "agentparallels"
SERVICE = "agentparallels"
"""``service.name`` unless ``OTEL_SERVICE_NAME`` says otherwise."""
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
COMMAND_CHARS = 300
"""Characters of a command line kept on its span."""

_provider: Any = None
_configured = False


def _tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE)


# --- setup -----------------------------------------------------------------------------------


def _exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    raise UsageError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: use http/protobuf or grpc"
    )


def configure() -> bool:
    """Set up this process's tracer provider, once: OTLP export when an endpoint is configured
    (returns True), nothing otherwise (False). Later calls change nothing."""
    global _configured, _provider
    if _configured:
        return _provider is not None
    _configured = True
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if disabled or not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; explicit
    # attributes would win over them, so the default name is given only when none is set.
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": SERVICE}))
    provider.add_span_processor(Scrubbed(BatchSpanProcessor(_exporter())))
    install(provider)
    return True


MESSAGE_CHARS = 200
"""Characters of a status or exception message kept on a span (its first line)."""


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return redact.text(lines[0][:MESSAGE_CHARS]) if lines else ""


class Scrubbed:
    """A span processor that hands ``inner`` each ended span scrubbed (module docstring):
    spans made by Temporal's interceptor carry failure messages this project does not
    write itself."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:  # the SDK's hook before a span ends
        if hasattr(self._inner, "_on_ending"):
            self._inner._on_ending(span)

    def on_end(self, span: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan

        def clean(attributes: Any) -> dict[str, Any]:
            return {
                k: redact.text(v) if isinstance(v, str) else v
                for k, v in (attributes or {}).items()
                if k != "exception.stacktrace"
            }

        events = []
        for e in span.events:
            attributes = clean(e.attributes)
            if "exception.message" in attributes:
                attributes["exception.message"] = _first_line(attributes["exception.message"])
            events.append(Event(e.name, attributes, e.timestamp))
        status = span.status
        if status.description:
            status = Status(status.status_code, _first_line(status.description))
        self._inner.on_end(
            ReadableSpan(
                name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                attributes=clean(span.attributes), events=events, links=span.links,
                kind=span.kind, status=status, start_time=span.start_time,
                end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
            )
        )  # fmt: skip

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def install(provider: Any) -> None:
    """Make ``provider`` this process's tracer provider (tests install one that keeps spans in
    memory). OpenTelemetry allows this once per process."""
    global _provider, _configured
    trace.set_tracer_provider(provider)
    _provider, _configured = provider, True


def flush(timeout_s: float = 5.0) -> None:
    """Send spans still queued (before a process exits without running ``atexit``)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


class _Interceptor(TracingInterceptor):
    """Temporal's interceptor, less the spans of queries: progress is polled twice a second
    while a job is followed, and a trace per poll would bury the jobs' own traces."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _UntracedQueries(super().intercept_client(next), next)


class _UntracedQueries(OutboundInterceptor):
    def __init__(self, traced: OutboundInterceptor, plain: OutboundInterceptor) -> None:
        super().__init__(traced)
        self._plain = plain

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        return await self._plain.query_workflow(input)


def interceptors() -> list[TracingInterceptor]:
    """For ``Client.connect``: the trace follows the job into workflows and activities."""
    return [_Interceptor()]


def worker_options(client: Client) -> dict[str, Any]:
    """``Worker`` arguments: the tracing interceptor unless the client already has it (never
    both), and ``opentelemetry`` passed through the workflow sandbox, as the SDK's own plugin
    does. That is safe: workflow code makes no spans itself; the interceptor's workflow side only
    moves trace contexts, and its spans are made outside the sandbox, skipped during replay."""
    traced = any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])
    restrictions = SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
    return {
        "interceptors": [] if traced else interceptors(),
        "workflow_runner": SandboxedWorkflowRunner(restrictions=restrictions),
    }


# --- tool commands ---------------------------------------------------------------------------


def tool_name(command: str) -> str:
    """What a command runs, for the span's name: ``/x/bin/ruff check ...`` -> ``ruff``,
    ``python -m pytest -q`` -> ``pytest``, ``FOO=1 sh -c ...`` -> ``sh``."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # leading VAR=value assignments
    if not words:
        return "shell"
    name = PurePath(words[0]).name
    if name.startswith("python") and len(words) > 2 and words[1] == "-m":
        return words[2]
    return name


def traced_command(fn: F) -> F:
    """Wrap ``run_command(command, cwd, timeout_s, ...) -> Finished`` in an ``execute_tool``
    span: the command line (shortened), exit code, whether it timed out, output size."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        command = str(kwargs.get("command", args[0] if args else ""))
        timeout_s = kwargs.get("timeout_s", args[2] if len(args) > 2 else None)
        name = tool_name(command)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "process.command_line": redact.text(command)[:COMMAND_CHARS],
            "agentparallels.tool.command_bytes": len(command.encode()),
        }
        if timeout_s is not None:
            attributes["agentparallels.tool.timeout_s"] = float(timeout_s)
        policy = kwargs.get("policy", args[3] if len(args) > 3 else None)
        if policy is not None:
            attributes["agentparallels.tool.sandbox"] = str(getattr(policy, "mode", policy))
        with _span(f"execute_tool {name}", SpanKind.INTERNAL, attributes) as span:
            try:
                done = fn(*args, **kwargs)
            except BaseException as e:  # could not start it, or the step was cancelled
                _outcome(span, "error", error_type=type(e).__name__, why=str(e))
                raise
            output = str(getattr(done, "output", ""))
            exit_code = int(getattr(done, "exit_code", 0))
            timed_out = bool(getattr(done, "timed_out", False))
            if getattr(done, "limited", False):  # stopped by the sandbox's process cap
                exit_code = exit_code or 1
            span.set_attributes({
                "process.exit.code": exit_code,
                "agentparallels.tool.timed_out": timed_out,
                "agentparallels.tool.output_bytes": len(output.encode()),
            })  # fmt: skip
            if exit_code == 0 and not timed_out:
                _outcome(span, "ok")
            else:
                why = "timed out" if timed_out else f"exit code {exit_code}"
                _outcome(span, "error", error_type="timeout" if timed_out else "exit", why=why)
            return done

    return run  # type: ignore[return-value]


# --- model calls -----------------------------------------------------------------------------


def _request_attributes(req: Any) -> tuple[str, dict[str, Any]]:
    provider, _, name = str(req.model).partition(":")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name of the same attribute
        "gen_ai.request.model": name or provider,
        "gen_ai.request.max_tokens": req.max_tokens,
        "gen_ai.request.temperature": req.temperature,
        "agentparallels.model.step": req.step,
        "agentparallels.prompt.messages": len(req.messages),
        "agentparallels.prompt.bytes": sum(len(m.content.encode()) for m in req.messages),
    }
    if req.seed is not None:
        attributes["gen_ai.request.seed"] = req.seed
    if req.output:
        attributes["gen_ai.output.type"] = "json"
    if req.base_url:
        url = urlsplit(req.base_url)
        if url.hostname:
            attributes["server.address"] = url.hostname
        if url.port:
            attributes["server.port"] = url.port
    return name or provider, attributes


def traced_model_call(fn: F) -> F:
    """Wrap the model-call activity ``async (ModelRequest) -> ModelAnswer`` in a ``chat <model>``
    span with the GenAI semantic-convention attributes, sizes and outcome."""

    @functools.wraps(fn)
    async def call(req: Any, *args: Any, **kwargs: Any) -> Any:
        name, attributes = _request_attributes(req)
        with _span(f"chat {name}", SpanKind.CLIENT, attributes) as span:
            try:
                answer = await fn(req, *args, **kwargs)
            except ApplicationError as e:
                _outcome(span, "error", error_type=e.type or type(e).__name__, why=e.message)
                raise
            except Exception as e:
                _outcome(span, "error", error_type=type(e).__name__, why=str(e))
                raise
            span.set_attributes({
                "gen_ai.response.model": answer.model.partition(":")[2] or answer.model,
                "gen_ai.usage.input_tokens": answer.usage.input_tokens,
                "gen_ai.usage.output_tokens": answer.usage.output_tokens,
                "gen_ai.response.finish_reasons": [answer.finish_reason or "unknown"],
                "agentparallels.response.bytes": len(answer.text.encode()),
                "agentparallels.response.valid": answer.invalid is None,
            })  # fmt: skip
            _outcome(span, "ok")
            return answer

    return call  # type: ignore[return-value]


def note_prompt(messages: Any) -> None:
    """Record the size of the prompt as actually sent (context files included) on the current
    model-call span."""
    size = sum(len(m.content.encode()) for m in messages)
    trace.get_current_span().set_attributes(
        {"agentparallels.prompt.bytes": size, "agentparallels.prompt.messages": len(messages)}
    )


# --- helpers ---------------------------------------------------------------------------------


@contextmanager
def _span(name: str, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
    with _tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, set_status_on_exception=False
    ) as span:
        yield span


def _outcome(span: Span, outcome: str, *, error_type: str = "", why: str = "") -> None:
    span.set_attribute("agentparallels.outcome", outcome)
    if outcome == "ok":
        span.set_status(Status(StatusCode.OK))
        return
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, _first_line(why) or error_type))


__all__ = [
    "Scrubbed",
    "configure",
    "flush",
    "install",
    "interceptors",
    "note_prompt",
    "tool_name",
    "traced_command",
    "traced_model_call",
    "worker_options",
]
