"""FakeLLM driven by the real openai and anthropic SDKs over TCP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest

from agentparallels.testing.fake_llm import FakeLLM, load_script

MESSAGES = [{"role": "user", "content": "one two three"}]
ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.fake_llm(default={"content": "ok"})
"""The server as it starts by default: a script that runs dry answers "ok"."""


@pytest.fixture
def oai(fake: FakeLLM) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=fake.openai_base_url, api_key="sk-test", max_retries=0, timeout=5.0
    ) as client:
        yield client


@pytest.fixture
def ant(fake: FakeLLM) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake.url, api_key="test", max_retries=0, timeout=5.0
    ) as client:
        yield client


def ask_openai(client: openai.OpenAI, **kwargs):
    return client.chat.completions.create(model="gpt-test", messages=MESSAGES, **kwargs)


def ask_anthropic(client: anthropic.Anthropic, **kwargs):
    return client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, **kwargs)


# --- answers -------------------------------------------------------------------------------


def test_openai_answer_reports_usage(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """A content entry becomes a chat completion with the scripted usage."""
    fake.push({"content": "Hello there world", "usage": {"input": 12, "output": 5}})
    reply = ask_openai(oai, response_format={"type": "json_object"})
    assert reply.choices[0].message.content == "Hello there world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gpt-test"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 5)
    assert reply.usage.total_tokens == 17


def test_openai_stream_sends_chunks_and_a_final_usage_chunk(fake: FakeLLM, oai: openai.OpenAI):
    """Streaming yields a role chunk, one chunk per word, the finish chunk and a usage chunk."""
    fake.push({"content": "Hello there world"})
    chunks = list(ask_openai(oai, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    assert texts == ["", "Hello ", "there ", "world", None]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 3)
    assert chunks[0].usage is None


def test_openai_stream_without_include_usage_has_no_usage(fake: FakeLLM, oai: openai.OpenAI):
    """Without stream_options.include_usage no chunk carries usage."""
    chunks = list(ask_openai(oai, stream=True))
    assert [c.usage for c in chunks] == [None, None, None]
    assert [c.choices[0].delta.content for c in chunks] == ["", "ok", None]


def test_anthropic_answer_reports_usage(fake: FakeLLM, ant: anthropic.Anthropic) -> None:
    """A content entry becomes an Anthropic message with the scripted usage."""
    fake.push({"content": "Hello there world", "usage": {"input": 12, "output": 5}})
    reply = ask_anthropic(ant)
    assert [block.text for block in reply.content] == ["Hello there world"]
    assert reply.stop_reason == "end_turn"
    assert reply.model == "claude-test"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 5)


def test_anthropic_stream_follows_the_real_event_sequence(fake: FakeLLM, ant: anthropic.Anthropic):
    """Raw streaming events come in the API's order (ping is consumed by the SDK)."""
    fake.push({"content": "Hello there world", "usage": {"input": 7, "output": 3}})
    events = list(ask_anthropic(ant, stream=True))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 7
    assert [e.delta.text for e in events[2:5]] == ["Hello ", "there ", "world"]
    assert (events[6].delta.stop_reason, events[6].usage.output_tokens) == ("end_turn", 3)


def test_anthropic_stream_helper_accumulates_text_and_usage(
    fake: FakeLLM, ant: anthropic.Anthropic
) -> None:
    """messages.stream() yields the text and a final message with usage."""
    fake.push({"content": "Hello there world"})
    with ant.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there world"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 3)
    assert final.stop_reason == "end_turn"


def test_content_filter_finish_reasons(fake: FakeLLM, oai: openai.OpenAI, ant: anthropic.Anthropic):
    """content_filter is a 200 answer: finish_reason content_filter / stop_reason refusal."""
    fake.push(*[{"error": "content_filter"}] * 4)
    assert ask_openai(oai).choices[0].finish_reason == "content_filter"
    chunks = list(ask_openai(oai, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = ask_anthropic(ant)
    assert (refused.stop_reason, refused.content) == ("refusal", [])
    events = list(ask_anthropic(ant, stream=True))
    assert [e.type for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1].delta.stop_reason == "refusal"


def test_script_is_one_fifo_across_protocols(
    fake: FakeLLM, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """Entries are consumed in order whichever protocol asks."""
    fake.push({"content": "first"}, {"content": "second"})
    assert ask_anthropic(ant).content[0].text == "first"
    assert ask_openai(oai).choices[0].message.content == "second"


def test_exhausted_script_answers_with_the_default(oai: openai.OpenAI) -> None:
    """Once the script is used up the default entry answers."""
    assert ask_openai(oai).choices[0].message.content == "ok"
    assert ask_openai(oai).choices[0].message.content == "ok"


def test_no_default_answers_500_that_says_do_not_retry() -> None:
    """With default=None an exhausted script gives a 500 with x-should-retry: false."""
    with (
        FakeLLM([{"content": "only"}], default=None) as fake,
        openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0) as client,
    ):
        assert ask_openai(client).choices[0].message.content == "only"
        with pytest.raises(openai.InternalServerError) as caught:
            ask_openai(client)
    assert caught.value.status_code == 500
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_delay_ms_delays_the_answer(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """delay_ms sleeps before answering."""
    fake.push({"content": "slow", "delay_ms": 300})
    started = time.monotonic()
    assert ask_openai(oai).choices[0].message.content == "slow"
    assert time.monotonic() - started >= 0.3


def test_requests_are_recorded_with_auth_headers_and_body(
    fake: FakeLLM, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """Every request is recorded with lower-cased headers and its parsed JSON body."""
    ask_openai(oai)
    ask_anthropic(ant)
    first, second = fake.requests
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.body == {"messages": MESSAGES, "model": "gpt-test"}
    assert second.path == "/v1/messages"
    # anthropic 2.x sends api_key as a bearer token, not as x-api-key.
    assert second.headers["authorization"] == "Bearer test"
    assert "x-api-key" not in second.headers
    assert "anthropic-version" in second.headers
    assert second.body == {"max_tokens": 64, "messages": MESSAGES, "model": "claude-test"}
    assert first.at <= second.at


def test_unknown_paths_are_recorded_and_answered_404(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """Other endpoints get a 404 without consuming the script."""
    fake.push({"content": "kept"})
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert [r.path for r in fake.requests] == ["/v1/models"]
    assert ask_openai(oai).choices[0].message.content == "kept"


# --- HTTP errors ---------------------------------------------------------------------------


def test_openai_rate_limit_exposes_retry_after(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """A 429 raises RateLimitError and the retry-after header is on e.response.headers."""
    fake.push({"status": 429, "retry_after": 2})
    with pytest.raises(openai.RateLimitError) as caught:
        ask_openai(oai)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.request_id == "req_fake1"


def test_anthropic_rate_limit_exposes_retry_after_ms(fake: FakeLLM, ant: anthropic.Anthropic):
    """A 429 raises RateLimitError and retry-after-ms is on e.response.headers."""
    fake.push({"status": 429, "retry_after_ms": 150})
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask_anthropic(ant)
    assert caught.value.response.headers["retry-after-ms"] == "150"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.request_id == "req_fake1"


@pytest.mark.parametrize(
    ("entry", "error_class", "status", "code"),
    [
        ({"status": 500}, openai.InternalServerError, 500, None),
        ({"status": 503, "should_retry": False}, openai.InternalServerError, 503, None),
        ({"status": 408}, openai.APIStatusError, 408, None),
        ({"status": 409}, openai.ConflictError, 409, None),
        ({"error": "rate_limit"}, openai.RateLimitError, 429, "rate_limit_exceeded"),
        ({"error": "insufficient_quota"}, openai.RateLimitError, 429, "insufficient_quota"),
        ({"error": "context_length"}, openai.BadRequestError, 400, "context_length_exceeded"),
        ({"error": "unauthorized"}, openai.AuthenticationError, 401, "invalid_api_key"),
        ({"error": "bad_request"}, openai.BadRequestError, 400, None),
        ({"error": "not_found"}, openai.NotFoundError, 404, "model_not_found"),
        ({"error": "unprocessable"}, openai.UnprocessableEntityError, 422, None),
    ],
)
def test_openai_errors_map_to_sdk_exceptions(
    fake: FakeLLM, oai: openai.OpenAI, entry: dict, error_class: type, status: int, code: str | None
) -> None:
    """Each scripted error raises the matching openai exception with status and code."""
    fake.push(entry)
    with pytest.raises(openai.APIStatusError) as caught:
        ask_openai(oai)
    assert type(caught.value) is error_class
    assert (caught.value.status_code, caught.value.code) == (status, code)


def test_openai_quota_and_503_details(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """insufficient_quota sets error.type too; should_retry=false sets x-should-retry."""
    fake.push({"error": "insufficient_quota"}, {"status": 503, "should_retry": False})
    with pytest.raises(openai.RateLimitError) as quota:
        ask_openai(oai)
    assert quota.value.type == "insufficient_quota"
    with pytest.raises(openai.InternalServerError) as unavailable:
        ask_openai(oai)
    assert unavailable.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("entry", "error_class", "status", "error_type"),
    [
        ({"status": 500}, anthropic.InternalServerError, 500, "api_error"),
        ({"status": 503, "should_retry": False}, anthropic.ServiceUnavailableError, 503, None),
        ({"status": 408}, anthropic.RequestTimeoutError, 408, "timeout_error"),
        ({"status": 409}, anthropic.ConflictError, 409, "conflict_error"),
        ({"error": "rate_limit"}, anthropic.RateLimitError, 429, "rate_limit_error"),
        ({"error": "insufficient_quota"}, anthropic.PaymentRequiredError, 402, "billing_error"),
        ({"error": "context_length"}, anthropic.BadRequestError, 400, "invalid_request_error"),
        ({"error": "unauthorized"}, anthropic.AuthenticationError, 401, "authentication_error"),
        ({"error": "bad_request"}, anthropic.BadRequestError, 400, "invalid_request_error"),
        ({"error": "not_found"}, anthropic.NotFoundError, 404, "not_found_error"),
        ({"error": "unprocessable"}, anthropic.UnprocessableEntityError, 422, None),
    ],
)
def test_anthropic_errors_map_to_sdk_exceptions(
    fake: FakeLLM,
    ant: anthropic.Anthropic,
    entry: dict,
    error_class: type,
    status: int,
    error_type: str | None,
) -> None:
    """Each scripted error raises the matching anthropic exception with status and type."""
    fake.push(entry)
    with pytest.raises(anthropic.APIStatusError) as caught:
        ask_anthropic(ant)
    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    if error_type is not None:
        assert caught.value.type == error_type


def test_anthropic_context_length_says_prompt_is_too_long(fake: FakeLLM, ant: anthropic.Anthropic):
    """context_length's message says the prompt is too long, as the real API does."""
    fake.push({"error": "context_length"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask_anthropic(ant)
    assert caught.value.api_message.startswith("prompt is too long: ")
    assert caught.value.body["type"] == "error"


def test_openai_sdk_retry_honours_retry_after_ms(fake: FakeLLM) -> None:
    """With max_retries=1 the SDK waits retry-after-ms, then gets the next entry."""
    fake.push({"status": 429, "retry_after_ms": 150}, {"content": "after the wait"})
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=1) as client:
        assert ask_openai(client).choices[0].message.content == "after the wait"
    first, second = fake.requests
    assert second.at - first.at >= 0.15
    assert second.headers["x-stainless-retry-count"] == "1"


def test_should_retry_false_stops_sdk_retries(fake: FakeLLM) -> None:
    """x-should-retry: false makes both SDKs give up although retries remain."""
    fake.push({"status": 503, "should_retry": False}, {"status": 503, "should_retry": False})
    with (
        openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=2) as oai,
        anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=2) as ant,
    ):
        with pytest.raises(openai.InternalServerError):
            ask_openai(oai)
        with pytest.raises(anthropic.ServiceUnavailableError):
            ask_anthropic(ant)
    assert len(fake.requests) == 2


# --- faults --------------------------------------------------------------------------------


def test_openai_stream_stall_hits_the_read_timeout(fake: FakeLLM, oai: openai.OpenAI) -> None:
    """A stalled stream delivers after_chunks chunks, then the 1 s read timeout fires."""
    fake.push({"fault": "stall", "after_chunks": 2}, {"fault": "stall"})
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        for chunk in ask_openai(oai.with_options(timeout=1.0), stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "chunk0 ", "chunk1 "]
    assert 0.9 <= time.monotonic() - started < 3
    with pytest.raises(openai.APITimeoutError):
        ask_openai(oai.with_options(timeout=1.0))


def test_anthropic_stall_hits_the_read_timeout(fake: FakeLLM, ant: anthropic.Anthropic) -> None:
    """Anthropic raises APITimeoutError before a stream starts; inside one, raw
    httpx2.ReadTimeout before 2.x, APITimeoutError since: the model step takes either."""
    fake.push({"fault": "stall", "after_chunks": 1}, {"fault": "stall"})
    client = ant.with_options(timeout=1.0)
    received = []
    with pytest.raises((httpx2.ReadTimeout, anthropic.APITimeoutError)):
        for event in ask_anthropic(client, stream=True):
            received.append(event.type)
    assert received == ["message_start", "content_block_start", "content_block_delta"]
    with pytest.raises(anthropic.APITimeoutError):
        ask_anthropic(client)


def test_stop_returns_promptly_with_a_stalled_stream_open() -> None:
    """stop() wakes a stalled stream and closes it; the client sees a connection error."""
    fake = FakeLLM([{"fault": "stall", "after_chunks": 1}]).start()
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    outcome: list[Exception] = []

    def consume() -> None:
        try:
            for _ in ask_openai(client, stream=True):
                pass
        except Exception as err:  # handed to the test thread
            outcome.append(err)

    reader = threading.Thread(target=consume)
    reader.start()
    while not fake.requests:
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    reader.join(timeout=5)
    client.close()
    assert not reader.is_alive()
    assert type(outcome[0]) is openai.APIConnectionError


def test_reset_raises_connection_errors(
    fake: FakeLLM, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """A reset is APIConnectionError in openai; in an anthropic stream raw httpx2 before 2.x,
    APIConnectionError since."""
    fake.push(*[{"fault": "reset", "after_chunks": 1}] * 4)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in ask_openai(oai, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "chunk0 "]
    with pytest.raises(openai.APIConnectionError):
        ask_openai(oai)
    with pytest.raises((httpx2.ReadError, anthropic.APIConnectionError)):
        list(ask_anthropic(ant, stream=True))
    with pytest.raises(anthropic.APIConnectionError):
        ask_anthropic(ant)


def test_malformed_raises_json_decode_errors(
    fake: FakeLLM, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """Malformed bodies and SSE data surface as json.JSONDecodeError from both SDKs."""
    fake.push(*[{"fault": "malformed"}] * 4)
    with pytest.raises(json.JSONDecodeError):
        ask_openai(oai)
    with pytest.raises(json.JSONDecodeError):
        list(ask_openai(oai, stream=True))
    with pytest.raises(json.JSONDecodeError):
        ask_anthropic(ant)
    with pytest.raises(json.JSONDecodeError):
        list(ask_anthropic(ant, stream=True))


async def test_async_clients_work_against_the_same_server(fake: FakeLLM) -> None:
    """The background-thread server serves the async SDK clients too."""
    fake.push({"content": "async answer"}, {"content": "async stream"})
    async with openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="sk-test", max_retries=0, timeout=5.0
    ) as client:
        reply = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert reply.choices[0].message.content == "async answer"
    async with anthropic.AsyncAnthropic(
        base_url=fake.url, api_key="test", max_retries=0, timeout=5.0
    ) as aclient:
        stream = await aclient.messages.create(
            model="claude-test", max_tokens=64, messages=MESSAGES, stream=True
        )
        texts = [e.delta.text async for e in stream if e.type == "content_block_delta"]
    assert texts == ["async ", "stream"]


# --- scripts -------------------------------------------------------------------------------


def test_load_script_accepts_a_list_or_an_object(tmp_path: Path) -> None:
    """A list gets the standard default; an object can set or null the default."""
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"content": "hi"}, {"status": 429, "retry_after": 1}]))
    assert load_script(listed) == (
        [{"content": "hi"}, {"status": 429, "retry_after": 1}],
        {"content": "ok"},
    )
    wrapped = tmp_path / "object.json"
    wrapped.write_text(json.dumps({"responses": [{"fault": "reset"}], "default": None}))
    assert load_script(wrapped) == ([{"fault": "reset"}], None)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            [{"content": "hi"}, {"content": "x", "retry_after": 1}],
            "entry 1: unknown key(s) ['retry_after']; allowed keys: "
            "['content', 'delay_ms', 'usage']",
        ),
        ([{"error": "boom"}], "entry 0: 'error' must be one of ['rate_limit', "),
        ([{"status": 200}], "entry 0: 'status' must be an integer from 400 to 599, got 200"),
        ([{"fault": "stall", "after_chunks": -1}], "entry 0: 'after_chunks' must be a non-neg"),
        ([{"content": "a", "status": 500}], "entry 0: needs exactly one of ['content', 'status'"),
        ([{"content": "a", "usage": {"in": 1}}], "entry 0: 'usage' must be like"),
        ({"responses": [], "default": {"fault": "x"}}, "default: 'fault' must be one of"),
        ({"responses": [], "extra": 1}, "unknown key(s) ['extra']; allowed: "),
        ("just text", "expected a list of entries"),
    ],
)
def test_load_script_names_the_bad_entry(tmp_path: Path, document: object, message: str) -> None:
    """Invalid scripts raise ValueError naming the entry and what is allowed."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_script(path)


def test_load_script_rejects_invalid_json(tmp_path: Path) -> None:
    """A file that is not JSON raises ValueError naming the file."""
    path = tmp_path / "broken.json"
    path.write_text("[{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_script(path)


def test_constructor_and_push_validate_entries() -> None:
    """FakeLLM() and push() reject bad entries before serving anything."""
    with pytest.raises(ValueError, match=re.escape("script entry 0: 'content' must be a string")):
        FakeLLM([{"content": 5}])
    with pytest.raises(ValueError, match=re.escape("default: unknown key(s) ['colour']")):
        FakeLLM(default={"content": "ok", "colour": "red"})
    fake = FakeLLM()
    with pytest.raises(ValueError, match=re.escape("pushed entry 1: 'should_retry' must be")):
        fake.push({"content": "fine"}, {"status": 500, "should_retry": "no"})


def test_serve_prints_its_urls_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """serve() runs in the foreground, answers from the script file and exits 0 on SIGTERM."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"responses": [{"content": "from the CLI"}]}))
    code = (
        "import sys, pathlib, agentparallels.testing.fake_llm as f; "
        f"sys.exit(f.serve(0, pathlib.Path({str(script)!r})))"
    )
    command = [sys.executable, "-c", code]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            url = re.match(r"fake LLM on (http://127\.0\.0\.1:\d+) ", line).group(1)
            assert line == f"fake LLM on {url} (OpenAI: {url}/v1, Anthropic: {url})\n"
            with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as client:
                assert ask_openai(client).choices[0].message.content == "from the CLI"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()
