"""The llm.call activity under ModelSteps.ask, on the real dev server against FakeLLM over TCP:
error classification, retries, heartbeats, compaction, secrets, config errors and replay."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.failure.v1 import Failure
    from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
    from temporalio.testing import ActivityEnvironment
    from temporalio.worker import Worker

    from agentparallels.activities.llm import RETRY, call_model
    from agentparallels.activities.routing import pollers
    from agentparallels.core import steps
    from agentparallels.core.llm import (
        BudgetLimits,
        Message,
        ModelAnswer,
        ModelRequest,
        Price,
        Usage,
    )
    from agentparallels.plugin import plugin_of
    from agentparallels.replay import replayer_for
    from agentparallels.testing.fake_llm import FakeLLM
    from agentparallels.workflows.model_step import ModelSteps

PROVIDERS = ["openai", "anthropic"]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TEMPORAL = str(Path(sys.executable).parent / "temporal")


class Ask(BaseModel):
    request: ModelRequest
    phase: str = "execute"
    reprompts: int = 2


class AskInput(BaseModel):
    asks: list[Ask]
    budget: BudgetLimits | None = None
    prices: dict[str, Price] = {}


class AskResult(BaseModel):
    answers: list[ModelAnswer]
    used: dict[str, Usage]
    calls: int
    cost_usd: float | None


@workflow.defn(name="AskWorkflow")
class AskWorkflow:
    @workflow.run
    async def run(self, inp: AskInput) -> AskResult:
        steps = ModelSteps(inp.budget, inp.prices)
        answers = [
            await steps.ask(a.request, phase=a.phase, reprompts=a.reprompts) for a in inp.asks
        ]
        return AskResult(
            answers=answers, used=steps.used, calls=steps.calls, cost_usd=steps.cost_usd
        )


pytestmark = pytest.mark.usefixtures("model_keys")
"""Keys on the (in-process) worker's environment; ``fake`` answers a non-retryable 500 once its
script is used up, so extra calls fail."""


def request(fake: FakeLLM, provider: str, *turns: str | Message, **fields: object) -> ModelRequest:
    """A request to ``provider:fake`` on ``fake``; plain strings are user messages."""
    base = fake.openai_base_url if provider == "openai" else fake.url
    messages = [Message(role="user", content=t) if isinstance(t, str) else t for t in turns]
    fields = {"max_tokens": 64, **fields}
    return ModelRequest(
        model=f"{provider}:fake",
        base_url=base,
        messages=messages or [Message(role="user", content="hi")],
        **fields,
    )


async def run(
    client: Client, task_queue: str, *asks: Ask | ModelRequest, **inp: object
) -> tuple[WorkflowHandle, AskResult | WorkflowFailureError]:
    """Run AskWorkflow on a fresh worker; its result, or the failure it ended with."""
    items = [a if isinstance(a, Ask) else Ask(request=a) for a in asks]
    async with Worker(
        client, task_queue=task_queue, workflows=[AskWorkflow], activities=[call_model, pollers]
    ):
        handle = await client.start_workflow(
            AskWorkflow.run,
            AskInput(asks=items, **inp),
            id=f"ask-{task_queue}",
            task_queue=task_queue,
        )
        try:
            return handle, await asyncio.wait_for(handle.result(), 60)
        except WorkflowFailureError as e:
            return handle, e


CONVERSATION = (
    Message(role="system", content="Be brief."),
    "first question",
    Message(role="assistant", content="first answer"),
    "second question",
)


async def answers(client: Client, task_queue: str, *asks: Ask | ModelRequest) -> list[str]:
    """The texts the workflow returned (it must succeed)."""
    _, result = await run(client, task_queue, *asks)
    assert isinstance(result, AskResult), result.cause
    return [a.text for a in result.answers]


def activity_error(outcome: object) -> tuple[ActivityError, ApplicationError]:
    """The failed model step's ActivityError and the ApplicationError it was caused by."""
    assert isinstance(outcome, WorkflowFailureError), outcome
    assert isinstance(outcome.cause, ActivityError), outcome.cause
    assert isinstance(outcome.cause.cause, ApplicationError), outcome.cause.cause
    return outcome.cause, outcome.cause.cause


def workflow_error(outcome: object) -> ApplicationError:
    """The ApplicationError that workflow code (not an activity) failed the workflow with."""
    assert isinstance(outcome, WorkflowFailureError), outcome
    assert isinstance(outcome.cause, ApplicationError), outcome.cause
    return outcome.cause


async def last_failures(handle: WorkflowHandle) -> list[tuple[int, Failure]]:
    """(attempt, last_failure) of each ActivityTaskStarted event: one per activity, written
    for its final attempt."""
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    events = [e async for e in handle.fetch_history_events() if e.event_type == kind]
    attrs = [e.activity_task_started_event_attributes for e in events]
    return [(a.attempt, a.last_failure) for a in attrs]


def failure_type(failure: Failure) -> str:
    """The application error type, looking past the server's "exceeds size limit" wrapper
    (see test_retry_reason_survives_in_the_history)."""
    if failure.message == "Failure exceeds size limit.":
        failure = failure.cause
    return failure.application_failure_info.type


# --- retried -------------------------------------------------------------------------------

RETRYABLE = {
    "429 retry-after": {"status": 429, "retry_after": 0.2},
    "429 rate limit retry-after-ms": {"error": "rate_limit", "retry_after_ms": 100},
    "500 back-off": {"status": 500},
    "503": {"status": 503, "retry_after_ms": 50},
    "408": {"status": 408, "retry_after_ms": 50},
    "409": {"status": 409, "retry_after_ms": 50},
    "reset mid-stream": {"fault": "reset", "after_chunks": 2},
    "malformed": {"fault": "malformed", "after_chunks": 1},
    "400 x-should-retry true": {"error": "bad_request", "should_retry": True},
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("failure", RETRYABLE.values(), ids=RETRYABLE.keys())
async def test_transient_failure_is_retried(
    client: Client, task_queue: str, fake: FakeLLM, provider: str, failure: dict
) -> None:
    """A transient failure is retried as ModelUnavailable (ModelRateLimited when throttled)
    and the next answer is returned."""
    fake.push(failure, {"content": "recovered answer"})
    handle, result = await run(client, task_queue, request(fake, provider))
    assert isinstance(result, AskResult), result.cause
    assert [a.text for a in result.answers] == ["recovered answer"]
    assert [r.path for r in fake.requests] == [PATHS[provider]] * 2
    [(attempt, last)] = await last_failures(handle)
    throttled = failure.get("status") == 429 or failure.get("error") == "rate_limit"
    kind = "ModelRateLimited" if throttled else "ModelUnavailable"
    assert (attempt, failure_type(last)) == (2, kind)


async def test_retry_reason_survives_in_the_history(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """The retried attempt's recorded last failure of a reset stream is ModelUnavailable."""
    fake.push({"fault": "reset", "after_chunks": 1}, {"content": "recovered answer"})
    handle, _ = await run(client, task_queue, request(fake, "openai"))
    [(_, failure)] = await last_failures(handle)
    assert failure.application_failure_info.type == "ModelUnavailable", failure.message


@pytest.mark.fake_llm(default={"status": 500, "retry_after_ms": 50})
async def test_every_attempt_failing_stops_after_maximum_attempts(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Endless 500s: ModelUnavailable after exactly RETRY.maximum_attempts requests."""
    _, outcome = await run(client, task_queue, request(fake, "openai"))
    error, cause = activity_error(outcome)
    assert len(fake.requests) == RETRY.maximum_attempts == 6
    assert error.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert cause.type == "ModelUnavailable"
    assert cause.message.startswith("500 from the model provider: ")


@pytest.mark.parametrize(
    ("provider", "header", "wait"),
    [("openai", {"retry_after_ms": 1500}, 1.5), ("anthropic", {"retry_after": 2}, 2.0)],
)
async def test_retry_after_is_honoured(
    client: Client, task_queue: str, fake: FakeLLM, provider: str, header: dict, wait: float
) -> None:
    """The retry waits the 429's retry-after(-ms), not the 0.5-1 s back-off."""
    fake.push({"status": 429, **header}, {"content": "later"})
    assert await answers(client, task_queue, request(fake, provider)) == ["later"]
    first, second = fake.requests
    assert wait <= second.at - first.at < wait + 2.5  # jitter, timers and dispatch


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("where", ["between pieces", "before the first"])
async def test_a_silent_stream_fails_the_attempt_and_the_retry_answers(
    client: Client, task_queue: str, fake: FakeLLM, provider: str, where: str
) -> None:
    """A stream silent for longer than the request's stream timeout, after one piece or
    before any, fails the attempt as ModelUnavailable (the step's heartbeats go on: they
    say only that the worker lives); the retry answers."""
    silent = (
        {"fault": "stall", "after_chunks": 1}
        if where == "between pieces"
        else {"content": "too late", "delay_ms": 30_000}
    )
    fake.push(silent, {"content": "after the silence"})
    req = request(fake, provider, stream_timeout_s=1)
    handle, result = await run(client, task_queue, req)
    assert isinstance(result, AskResult), result.cause
    assert [a.text for a in result.answers] == ["after the silence"]
    [(attempt, failure)] = await last_failures(handle)
    assert attempt == 2
    assert failure_type(failure) == "ModelUnavailable"
    assert "silent for 1 s" in failure.message
    assert len(fake.requests) == 2


async def test_a_model_call_heartbeats_on_a_short_timeout_of_its_own(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """The model step's heartbeat timeout is short (a killed worker's call is asked again
    after seconds), not the stream's silence limit, which the step checks itself."""
    fake.push({"content": "hello"})
    handle, result = await run(client, task_queue, request(fake, "openai", stream_timeout_s=90))
    assert isinstance(result, AskResult), result.cause
    kind = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        async for e in handle.fetch_history_events()
        if e.event_type == kind
        and e.activity_task_scheduled_event_attributes.activity_type.name == steps.CALL_MODEL.name
    ]
    assert scheduled.heartbeat_timeout.ToTimedelta() == steps.MODEL_HEARTBEAT


# --- not retried ---------------------------------------------------------------------------

AUTH = " (check the API key on the worker)"
CREDIT = " (add credit to the account)"
NOT_RETRYABLE = {  # failure: type, HTTP status (per provider if they differ), end of message
    "400 bad request": ({"error": "bad_request"}, "ModelRequestRejected", 400, ""),
    "401": ({"error": "unauthorized"}, "ModelAuthFailed", 401, AUTH),
    "403": ({"status": 403}, "ModelAuthFailed", 403, AUTH),
    "404": ({"error": "not_found"}, "ModelRequestRejected", 404, ""),
    "422": ({"error": "unprocessable"}, "ModelRequestRejected", 422, ""),
    "402": ({"status": 402}, "QuotaExhausted", 402, CREDIT),
    "insufficient quota": (
        {"error": "insufficient_quota"},
        "QuotaExhausted",
        {"openai": 429, "anthropic": 402},
        CREDIT,
    ),
    # one message and no context: compaction cannot help
    "context length": ({"error": "context_length"}, "ContextLengthExceeded", 400, ""),
    # x-should-retry only decides whether to retry; the type is then that of "other 4xx".
    "503 x-should-retry false": (
        {"status": 503, "should_retry": False},
        "ModelUnavailable",
        503,
        "",
    ),
    "content filter": ({"error": "content_filter"}, "ContentFiltered", None, ""),
}
FILTERED = {"openai": "content filter", "anthropic": "refusal"}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("failure", "kind", "status", "end"), NOT_RETRYABLE.values(), ids=NOT_RETRYABLE
)
async def test_permanent_failure_is_not_retried(
    client: Client,
    task_queue: str,
    fake: FakeLLM,
    provider: str,
    failure: dict,
    kind: str,
    status: int | dict | None,
    end: str,
) -> None:
    """One request, and the workflow fails with the error's type as the ActivityError's cause."""
    fake.push(failure, {"content": "never asked for"})
    _, outcome = await run(client, task_queue, request(fake, provider))
    error, cause = activity_error(outcome)
    assert len(fake.requests) == 1
    assert (error.retry_state, cause.type) == (RetryState.NON_RETRYABLE_FAILURE, kind)
    if status is None:
        assert cause.message == f"{provider}:fake withheld its answer ({FILTERED[provider]})"
        return
    status = status[provider] if isinstance(status, dict) else status
    # Then the SDK's own words, which name the status too ("Error code: 401 - {...}" from
    # openai and anthropic before 2.x, "401 Bad API key. (request_id: ...)" from anthropic 2.x).
    assert cause.message.startswith(f"{status} from the model provider: ")
    assert str(status) in cause.message.removeprefix(f"{status} from the model provider: ")
    assert cause.message.endswith(end)


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
async def test_missing_key_fails_before_any_call(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch, provider: str, variable: str
) -> None:
    """No key and no base_url: no worker holding the key polls the provider's model queue, so
    the step fails before any call, naming the variable; a worker that runs the call all the
    same (its key unset since it started) fails it with ModelConfigError, not retried."""
    monkeypatch.delenv(variable)
    req = ModelRequest(
        model=f"{provider}:some-model", messages=[Message(role="user", content="hi")]
    )
    handle, outcome = await run(client, task_queue, req)
    cause = workflow_error(outcome)
    assert cause.type == "NoCapability"
    assert cause.message.startswith(
        f"no worker with {variable} polls {task_queue}.model.{provider}, so none can make the "
        f"model call 'model call' ({provider}:some-model): set {variable}"
    )
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    steps = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in handle.fetch_history_events()
        if e.event_type == scheduled
    ]
    assert steps == ["route.pollers"]  # a look at the queue's pollers, and no model call
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(call_model, req)
    assert (refused.value.type, refused.value.non_retryable) == ("ModelConfigError", True)
    assert refused.value.message.startswith(f"{variable} is not set in the worker's environment")


async def test_bad_model_name_is_a_config_error(client: Client, task_queue: str) -> None:
    """A model without a provider prefix is ModelConfigError, not retried."""
    req = ModelRequest(model="gpt-4.1", messages=[Message(role="user", content="hi")])
    _, outcome = await run(client, task_queue, req)
    error, cause = activity_error(outcome)
    assert (error.retry_state, cause.type) == (RetryState.NON_RETRYABLE_FAILURE, "ModelConfigError")
    assert "model 'gpt-4.1' must be written provider:model" in cause.message


# --- secrets, replay, the Anthropic SDK ----------------------------------------------------


def decoded(node: object) -> Iterator[str]:
    """The text of every payload in a JSON history (``data`` is base64 there)."""
    if isinstance(node, dict):
        if {"metadata", "data"} <= node.keys():
            yield base64.b64decode(node["data"]).decode()
        for value in node.values():
            yield from decoded(value)
    elif isinstance(node, list):
        for value in node:
            yield from decoded(value)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_api_key_never_reaches_the_history(
    client: Client, task_queue: str, fake: FakeLLM, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    """The key is sent to the provider but is nowhere in `temporal workflow show` output."""
    secret = f"sk-secret-{provider}-5f0c2a9e77d1"
    monkeypatch.setenv(f"{provider.upper()}_API_KEY", secret)
    fake.push({"status": 500, "retry_after_ms": 50}, {"content": "visible answer text"})
    handle, result = await run(client, task_queue, request(fake, provider))
    assert isinstance(result, AskResult), result.cause
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {secret}"] * 2
    address = client.service_client.config.target_host
    proc = await asyncio.create_subprocess_exec(
        TEMPORAL,
        "workflow",
        "show",
        "--workflow-id",
        handle.id,
        "--output",
        "json",
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    raw = out.decode()
    payloads = "\n".join(decoded(json.loads(raw)))
    assert '"text":"visible answer text"' in payloads
    assert "500 from the model provider" in raw  # the retried attempt's failure is there too
    assert secret not in raw + payloads


@workflow.defn(name="AskWorkflow")
class ChangedAskWorkflow:
    """AskWorkflow changed incompatibly: a timer before the first model call."""

    @workflow.run
    async def run(self, inp: AskInput) -> AskResult:
        await workflow.sleep(1)
        return await AskWorkflow().run(inp)


async def replays(client: Client, handle: WorkflowHandle) -> None:
    """Replay ``handle``'s history on AskWorkflow; fail on any non-determinism."""
    replayer = replayer_for(plugin_of(client), workflows=[AskWorkflow])
    replayed = await replayer.replay_workflow(await handle.fetch_history())
    assert replayed.replay_failure is None


async def test_history_replays_without_nondeterminism(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """A history with a retry and a compaction replays cleanly (and a changed workflow not)."""
    fake.push(
        {"status": 503, "retry_after_ms": 50},
        {"content": "first"},
        {"error": "context_length"},
        {"content": "second"},
    )
    req = request(fake, "openai")
    handle, result = await run(client, task_queue, req, request(fake, "openai", *CONVERSATION))
    assert isinstance(result, AskResult), result.cause
    assert [a.text for a in result.answers] == ["first", "second"]
    await replays(client, handle)
    changed = replayer_for(plugin_of(client), workflows=[ChangedAskWorkflow])
    history = await handle.fetch_history()
    replayed = await changed.replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(replayed.replay_failure, workflow.NondeterminismError)


async def test_anthropic_sdk_accepts_the_call(
    fake: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unpatched Anthropic SDK accepts the activity's call and the answer comes back."""
    fake.push({"content": "claude says hi"})
    answer = await ActivityEnvironment().run(call_model, request(fake, "anthropic"))
    assert answer.text == "claude says hi"
