"""Spans of the steps' own work: each agent tool call and each tool command an ``execute_tool``
span, each model call a ``chat <model>`` span (OpenTelemetry GenAI conventions). They live beside
the activities that open them; exporting and scrubbing spans is the worker's
(``agentparallels.tracing``). A tool call's span names the tool and the call, never its
arguments (an edit's are file contents) nor its output."""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentparallels.core import redact
from agentparallels.core.llm import ModelAnswer

__all__ = ["note_prompt", "tool_name", "traced_command", "traced_model_call", "traced_tool_call"]

P = ParamSpec("P")
R = TypeVar("R")

SCOPE = "agentparallels"
COMMAND_CHARS = 300
MESSAGE_CHARS = 200


def _tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE)


def _first_line(text: str) -> str:
    """The first line of ``text``, shortened and redacted (span statuses are exported)."""
    lines = text.strip().splitlines()
    return redact.text(lines[0][:MESSAGE_CHARS]) if lines else ""


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


def traced_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``run_command(command, cwd, timeout_s, ...) -> Finished`` in an ``execute_tool``
    span: the command line (shortened), exit code, whether it timed out, output size."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        command = str(kwargs.get("command", args[0] if args else ""))
        # read by name or position, as the caller passed it: any number float() takes
        timeout_s: Any = kwargs.get("timeout_s", args[2] if len(args) > 2 else None)
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
            span.set_attributes(
                {
                    "process.exit.code": exit_code,
                    "agentparallels.tool.timed_out": timed_out,
                    "agentparallels.tool.output_bytes": len(output.encode()),
                }
            )
            if exit_code == 0 and not timed_out:
                _outcome(span, "ok")
            else:
                why = "timed out" if timed_out else f"exit code {exit_code}"
                _outcome(span, "error", error_type="timeout" if timed_out else "exit", why=why)
            return done

    return run


# --- agent tool calls ------------------------------------------------------------------------


def _conversation() -> dict[str, Any]:
    """``gen_ai.conversation.id``: the workflow whose conversation made the call (a unit)."""
    try:
        return {"gen_ai.conversation.id": activity.info().workflow_id}
    except RuntimeError:  # not in an activity (a test calling the function)
        return {}


def traced_tool_call(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap the agent's tool step ``(ToolRequest) -> ToolOutcome`` in an ``execute_tool <tool>``
    span (GenAI conventions: ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
    ``gen_ai.tool.type``), with the outcome, the output's size and how long it took."""

    @functools.wraps(fn)
    def run(req: Any) -> Any:
        tool = str(req.call.name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": str(req.call.id),
            "gen_ai.tool.type": "function",
            "agentparallels.tool.key": str(req.key),
            "agentparallels.unit": str(req.unit.name),
            **_conversation(),
        }
        with _span(f"execute_tool {tool}", SpanKind.INTERNAL, attributes) as span:
            try:
                outcome = fn(req)
            except ApplicationError as e:
                _outcome(span, "error", error_type=e.type or type(e).__name__, why=e.message)
                raise
            except BaseException as e:
                _outcome(span, "error", error_type=type(e).__name__, why=str(e))
                raise
            span.set_attributes(
                {
                    "agentparallels.tool.ok": bool(outcome.ok),
                    "agentparallels.tool.output_bytes": len(outcome.output.encode()),
                    "agentparallels.tool.changed_files": len(outcome.changed),
                    "agentparallels.tool.elapsed_ms": int(outcome.elapsed_ms),
                }
            )
            if outcome.check:
                span.set_attribute("agentparallels.tool.check", outcome.check)
            if outcome.ok:
                _outcome(span, "ok")
            else:  # the model is told and goes on: a span error, not a step failure
                _outcome(span, "error", error_type="tool_error", why=f"{tool} was not ok")
            return outcome

    return run


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
        **_conversation(),
    }
    if req.tools:
        attributes["agentparallels.request.tools"] = len(req.tools)
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


def traced_model_call(
    fn: Callable[Concatenate[Any, P], Awaitable[ModelAnswer]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, ModelAnswer]]:
    """Wrap the model-call activity ``async (ModelRequest) -> ModelAnswer`` in a ``chat <model>``
    span with the GenAI semantic-convention attributes, sizes and outcome."""

    @functools.wraps(fn)
    async def call(req: Any, *args: P.args, **kwargs: P.kwargs) -> ModelAnswer:
        name, attributes = _request_attributes(req)
        with _span(f"chat {name}", SpanKind.CLIENT, attributes) as span:
            try:
                answer = await fn(req, *args, **kwargs)
            except ApplicationError as e:
                _outcome(span, "error", error_type=e.type or type(e).__name__, why=e.message)
                raise
            except BaseException as e:  # a failure, or the attempt cancelled (timed out)
                _outcome(span, "error", error_type=type(e).__name__, why=str(e))
                raise
            span.set_attributes(
                {
                    "gen_ai.response.model": answer.model.partition(":")[2] or answer.model,
                    "gen_ai.usage.input_tokens": answer.usage.input_tokens,
                    "gen_ai.usage.output_tokens": answer.usage.output_tokens,
                    "gen_ai.response.finish_reasons": [answer.finish_reason or "unknown"],
                    "agentparallels.response.bytes": len(answer.text.encode()),
                    "agentparallels.response.valid": answer.invalid is None,
                    "agentparallels.response.tool_calls": len(answer.tool_calls),
                }
            )
            _outcome(span, "ok")
            return answer

    return call


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
