"""Tracing: every tool command and model call is an OpenTelemetry span, inside the job's trace.

Temporal's ``TracingInterceptor`` (on every client, so on the workers built from it) carries the
trace from the command that starts a job through its workflows, child workflows and activities;
the two places where tools and models are called add a span per call, with sizes and outcome:

- ``execute_tool <tool>`` around each agent tool call (``read_file``, ``edit_file``,
  ``run_tests`` ...), with the GenAI attributes ``gen_ai.operation.name=execute_tool``,
  ``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.tool.type`` and
  ``gen_ai.conversation.id`` (the unit's workflow id), the outcome and the duration;
- ``execute_tool <name>`` around ``activities._proc.run_command`` (codemods, checks, ruff, tests;
  inside the agent's ``run_check`` / ``run_tests`` span when the agent runs them);
- ``chat <model>`` around the model-call activity, with the OpenTelemetry GenAI attributes
  (``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``gen_ai.response.finish_reasons`` ...).

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

import os
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Status
from temporalio.client import OutboundInterceptor, QueryWorkflowInput
from temporalio.contrib.opentelemetry import TracingInterceptor

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


class Scrubbed(SpanProcessor):
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
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=clean(span.attributes),
                events=events,
                links=span.links,
                kind=span.kind,
                status=status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

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
    """For the plugin (:mod:`agentparallels.plugin`), which puts them on the client and so on
    its workers: the trace follows the job into workflows and activities."""
    return [_Interceptor()]


from agentparallels.activities._spans import (  # noqa: E402 - re-exported
    note_prompt,
    tool_name,
    traced_command,
    traced_model_call,
    traced_tool_call,
)

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
    "traced_tool_call",
]
