"""The model-call step: one request to a language model, streamed, classified, recorded.

Clients are the official SDKs with their own retries off (``max_retries=0``): Temporal's retry
policy below is the only one. The step heartbeats on a timer, so a worker that dies mid-call is
noticed within the short heartbeat timeout of every step; a stream silent for longer than the
request's ``stream_timeout_s`` (before its first piece or between two) fails the attempt as
``ModelUnavailable``, and the retry asks again.

With ``req.tools`` the step sends the tools in the provider's own tool-calling format, or, with
``tool_format="json"``, describes them in the system message and reads one JSON action from the
text; either way the answer's ``tool_calls`` are checked against the tools, and a call that
cannot be read carries its ``error`` rather than failing the step (``activities/_tool_wire.py``).

Error classification (also in docs/model-calls.md):

=============================================  ==========  ====================================
What happened                                  Retried?    Raised as (``ApplicationError.type``)
=============================================  ==========  ====================================
408, 409, 5xx                                  yes         ModelUnavailable, next retry after
                                                           ``retry-after-ms`` / ``retry-after``
                                                           or exponential back-off with jitter
429 rate limit                                 yes         ModelRateLimited, next retry as
                                                           above (the provider breaker does
                                                           not count it: the provider is up)
connection error, timeout, garbled response    yes         ModelUnavailable
``x-should-retry: true`` / ``false``           as it says  (overrides the rows above and below)
429 ``insufficient_quota``, 402 billing        no          QuotaExhausted
context length exceeded (400)                  no          ContextLengthExceeded (compact, call
                                                           again once)
answer withheld (content filter, refusal)      no          ContentFiltered
401, 403                                       no          ModelAuthFailed
other 4xx (400, 404, 422, ...)                 no          ModelRequestRejected
no API key on the worker, bad model name       no          ModelConfigError
=============================================  ==========  ====================================
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import os
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable
from datetime import timedelta
from typing import Any

import httpx2
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git, _spans, _tool_wire
from agentparallels.activities._defn import implements
from agentparallels.core import errors, steps
from agentparallels.core.llm import (
    KEY_VARIABLES,
    FileContext,
    Message,
    ModelAnswer,
    ModelRequest,
    Usage,
    lookup_output,
    split_model,
)

RETRY = steps.MODEL_RETRY
"""Finite and bounded: a model that keeps failing stops the step after six attempts."""
BACKOFF_CAP_S = 60.0
READ_TIMEOUT_S = 600.0
"""The SDK's own read timeout, kept long: stalls are :func:`_paced`'s job."""

CONTEXT_PATTERN = re.compile(r"context.length|too long|maximum context|context window", re.I)


def _retry_delay(headers: Any, attempt: int) -> timedelta:
    """The provider's ``retry-after-ms`` / ``retry-after`` if given, else exponential back-off
    (1 s, 2 s, 4 s ... capped at 60 s) with jitter; either way a little jitter is added so that
    many workers throttled at once do not come back at once."""
    jitter = random.uniform(0.0, 0.1)
    if headers is not None:
        if ms := headers.get("retry-after-ms"):
            try:
                return timedelta(seconds=float(ms) / 1000 * (1 + jitter))
            except ValueError:
                pass
        if after := headers.get("retry-after"):
            try:
                seconds = float(after)
            except ValueError:
                parsed = email.utils.parsedate_to_datetime(after)
                seconds = max(parsed.timestamp() - time.time(), 0.0) if parsed else 0.0
            return timedelta(seconds=seconds * (1 + jitter))
    base = min(BACKOFF_CAP_S, 2.0 ** (attempt - 1))
    return timedelta(seconds=base * random.uniform(0.5, 1.0))


def _error(
    kind: str,
    message: str,
    *,
    retry_after: timedelta | None = None,
    retryable: bool | None = None,
) -> ApplicationError:
    if retryable is None:
        retryable = kind == errors.MODEL_RETRYABLE
    return ApplicationError(
        message, type=kind, non_retryable=not retryable, next_retry_delay=retry_after
    )


@functools.cache
def _sdks() -> tuple[Any, Any]:
    """The provider SDKs, imported on first use: together they take seconds to import, which
    every command of the CLI would otherwise pay."""
    import anthropic
    import openai

    return openai, anthropic


def classify(e: BaseException, attempt: int) -> ApplicationError:
    """Map an SDK or transport error onto a project error (see the table above)."""
    openai, anthropic = _sdks()
    if isinstance(e, openai.APIStatusError | anthropic.APIStatusError):
        status, headers = e.status_code, e.response.headers
        body = e.body if isinstance(e.body, dict) else {}
        inner = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        code = str(inner.get("code") or "") + " " + str(inner.get("type") or "")
        text = f"{status} from the model provider: {e.message}"
        should = (headers.get("x-should-retry") or "").lower()
        too_long = status in (400, 413, 422) and CONTEXT_PATTERN.search(str(e.message))
        if too_long or "context_length" in code:
            return _error(errors.CONTEXT_LENGTH, text)
        if "insufficient_quota" in code or status == 402 or "billing" in code:
            return _error(errors.QUOTA_EXHAUSTED, text + " (add credit to the account)")
        transient = status in (408, 409, 429) or status >= 500
        kind = errors.MODEL_THROTTLED if status == 429 else errors.MODEL_RETRYABLE
        if should in ("true", "false"):  # the provider's own word wins
            delay = _retry_delay(headers, attempt) if should == "true" else None
            if transient or should == "true":
                return _error(kind, text, retry_after=delay, retryable=should == "true")
        elif transient:
            return _error(kind, text, retry_after=_retry_delay(headers, attempt), retryable=True)
        if status in (401, 403):
            return _error(errors.MODEL_AUTH, text + " (check the API key on the worker)")
        return _error(errors.MODEL_REJECTED, text)
    transient = (
        openai.APIConnectionError,
        anthropic.APIConnectionError,
        httpx2.TransportError,
        TimeoutError,
        ConnectionError,
        json.JSONDecodeError,
    )
    if isinstance(e, _Stalled):
        return _error(errors.MODEL_RETRYABLE, str(e), retry_after=_retry_delay(None, attempt))
    if isinstance(e, transient):
        return _error(
            errors.MODEL_RETRYABLE,
            f"the model provider's answer was cut off or garbled ({type(e).__name__}: {e})",
            retry_after=_retry_delay(None, attempt),
        )
    return ApplicationError(f"{type(e).__name__}: {e}", type=type(e).__name__)  # retried, finitely


def _key(provider: str, base_url: str | None) -> str:
    variable = KEY_VARIABLES[provider]
    key = os.environ.get(variable)
    if key:
        return key
    if base_url:  # self-hosted endpoints often need none
        return "no-key"
    raise _error(
        errors.MODEL_CONFIG,
        f"{variable} is not set in the worker's environment: set it where the worker runs "
        "(keys never travel with jobs)",
    )


def _load_context(ctx: FileContext) -> str:
    """The file (and, within the token budget, its siblings) as fenced blocks."""
    cache = _git.cached_repo(ctx.repository)
    _git.ensure_commit(cache, ctx.repository, ctx.commit)

    def show(path: str) -> str:
        return _git.run(cache, "show", f"{ctx.commit}:{path}")

    blocks = [f"File `{ctx.path}`:\n```\n{show(ctx.path)}\n```"]
    budget = ctx.related_tokens * 4  # characters, at about four per token
    folder = ctx.path.rsplit("/", 1)[0] + "/" if "/" in ctx.path else ""
    siblings = _git.run(cache, "ls-tree", "--name-only", ctx.commit, folder or ".").splitlines()
    for path in sorted(p for p in siblings if p.endswith(".py") and p != ctx.path):
        text = show(path)
        if len(text) > budget:
            break
        budget -= len(text)
        blocks.append(f"Related file `{path}` (read only):\n```\n{text}\n```")
    return "\n\n".join(blocks)


def _messages(req: ModelRequest) -> list[Message]:
    messages = list(req.messages)
    if req.output:
        schema = json.dumps(lookup_output(req.output).model_json_schema())
        messages.insert(
            0,
            Message(
                role="system",
                content=(
                    f"Answer with one JSON object, and nothing else, that validates against this "
                    f"JSON schema:\n{schema}"
                ),
            ),
        )
    if req.context is not None:
        last = messages[-1]
        messages[-1] = Message(
            role=last.role, content=f"{last.content}\n\n{_load_context(req.context)}"
        )
    return messages


_clients: dict[tuple[str, str | None, str], Any] = {}


def _client(provider: str, base_url: str | None) -> Any:
    """One SDK client per provider, endpoint and key in this worker (building one loads TLS
    certificates: tens of milliseconds), with the SDK's own retries off."""
    key = _key(provider, base_url)
    found = _clients.get((provider, base_url, key))
    if found is None:
        openai, anthropic = _sdks()
        sdk = openai if provider == "openai" else anthropic
        cls = openai.AsyncOpenAI if provider == "openai" else anthropic.AsyncAnthropic
        found = cls(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=sdk.Timeout(READ_TIMEOUT_S, connect=10.0),
        )
        _clients[(provider, base_url, key)] = found
    return found


def _native(req: ModelRequest) -> bool:
    """Whether the request's tools go to the provider as tools (else: none, or the JSON
    fallback, which is all text)."""
    return bool(req.tools) and req.tool_format == "native"


class _Stalled(Exception):
    pass


async def _paced(opened: Awaitable[Any], stall_s: float) -> AsyncGenerator[Any, None]:
    """The pieces of a streamed answer, each within ``stall_s`` of the one before (the first
    within ``stall_s`` of the request): a silent provider fails the attempt, retried. The
    stream (its HTTP response) is closed however the reading ends."""
    stream = None
    try:
        async with asyncio.timeout(stall_s):
            stream = await opened
        pieces = aiter(stream)
        while True:
            async with asyncio.timeout(stall_s):
                piece = await anext(pieces, _END)
            if piece is _END:
                return
            yield piece
    except TimeoutError:
        raise _Stalled(f"the model's stream was silent for {stall_s:g} s") from None
    finally:
        if stream is not None:
            await stream.close()


_END = object()


async def _openai(
    req: ModelRequest, name: str, messages: list[Message], client: Any
) -> ModelAnswer:
    extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if req.output else {}
    if req.seed is not None:
        extra["seed"] = req.seed
    if _native(req):
        extra["tools"] = _tool_wire.openai_tools(req.tools)
    text, finish, usage, calls = [], "", Usage(), _tool_wire.OpenAICalls()
    opened = client.chat.completions.create(
        model=name,
        messages=_tool_wire.openai_messages(messages),
        temperature=req.temperature,
        max_tokens=req.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    async with contextlib.aclosing(_paced(opened, req.stream_timeout_s)) as pieces:
        async for chunk in pieces:
            if chunk.usage:
                usage = Usage(
                    input_tokens=chunk.usage.prompt_tokens,
                    output_tokens=chunk.usage.completion_tokens,
                )
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                calls.add(choice.delta.tool_calls)
                finish = choice.finish_reason or finish
    if finish == "content_filter":
        raise _error(errors.CONTENT_FILTERED, f"{req.model} withheld its answer (content filter)")
    return ModelAnswer(
        text="".join(text),
        model=req.model,
        usage=usage,
        finish_reason=finish,
        tool_calls=calls.calls(req.tools),
    )


async def _anthropic(
    req: ModelRequest, name: str, messages: list[Message], client: Any
) -> ModelAnswer:
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    extra: dict[str, Any] = {"system": system} if system else {}
    if _native(req):
        extra["tools"] = _tool_wire.anthropic_tools(req.tools)
    read = _tool_wire.AnthropicStream()
    opened = client.messages.create(
        model=name,
        messages=_tool_wire.anthropic_turns(messages),
        max_tokens=req.max_tokens,
        stream=True,
        # This SDK takes temperature only as part of the request body.
        extra_body={"temperature": req.temperature},
        **extra,
    )
    async with contextlib.aclosing(_paced(opened, req.stream_timeout_s)) as pieces:
        async for event in pieces:  # pings count as pieces
            read.feed(event)
    if read.stop == "refusal":
        raise _error(errors.CONTENT_FILTERED, f"{req.model} withheld its answer (refusal)")
    return ModelAnswer(
        text="".join(read.text),
        model=req.model,
        usage=Usage(input_tokens=read.input_tokens, output_tokens=read.output_tokens),
        finish_reason=read.stop,
        tool_calls=read.calls(req.tools),
    )


def _validated(req: ModelRequest, answer: ModelAnswer) -> ModelAnswer:
    if not req.output:
        return answer
    text = answer.text.strip()
    if fenced := re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S):
        text = fenced.group(1)
    try:
        parsed = lookup_output(req.output).model_validate_json(text)
    except ValidationError as e:
        return answer.model_copy(update={"invalid": str(e)[:2000]})
    return answer.model_copy(update={"parsed": parsed.model_dump(mode="json")})


def _prepared(req: ModelRequest) -> tuple[str, str, list[Message], Any]:
    """Everything before the request that may block: importing the SDK and building its
    client (seconds on a loaded machine, the first time), reading attached files from git. Run
    off the event loop, which must stay free to send the step's heartbeats."""
    try:
        provider, name = split_model(req.model)
    except ValueError as e:
        raise _error(errors.MODEL_CONFIG, str(e)) from None
    messages = _messages(req)
    if req.tools and req.tool_format == "json":
        messages = _tool_wire.json_messages(messages, req.tools)
    _spans.note_prompt(messages)
    return provider, name, messages, _client(provider, req.base_url)


@implements(steps.CALL_MODEL)
@_spans.traced_model_call
async def call_model(req: ModelRequest) -> ModelAnswer:
    """Ask the model; the answer (and its token usage) is recorded in the workflow's history."""
    provider, name, messages, client = await asyncio.to_thread(_prepared, req)
    call = _openai if provider == "openai" else _anthropic
    try:
        answer = await call(req, name, messages, client)
    except ApplicationError:
        raise
    except Exception as e:
        # Without the SDK's exception chain: the failure recorded in history must stay small.
        raise classify(e, activity.info().attempt) from None
    if req.tools and req.tool_format == "json":
        action = _tool_wire.json_action(answer.text, req.messages, req.tools)
        answer = answer.model_copy(update={"tool_calls": (action,)})
    return _validated(req, answer)


__all__ = ["BACKOFF_CAP_S", "CONTEXT_PATTERN", "READ_TIMEOUT_S", "RETRY", "call_model", "classify"]
