"""Tool calling through the model-call step: the real openai and anthropic SDKs, streamed, over
TCP to the scripted fake model server, in each provider's wire format and through the JSON
fallback; and the fake server's tool-call answers and per-conversation threads themselves."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest
from temporalio.testing import ActivityEnvironment

from agentparallels.activities.llm import call_model
from agentparallels.core.agentjob import TOOLS
from agentparallels.core.llm import Message, ModelAnswer, ModelRequest
from agentparallels.core.tools import ToolCall, json_instructions
from agentparallels.testing.fake_llm import FakeLLM, load_script, read_script

PROVIDERS = ["openai", "anthropic"]
READ_A = {"name": "read_file", "arguments": {"path": "a.py"}}


def request(fake: FakeLLM, provider: str, *turns: str | Message, **fields: object) -> ModelRequest:
    """A request to ``provider:fake`` with the agent's tools; plain strings are user messages."""
    base = fake.openai_base_url if provider == "openai" else fake.url
    messages = [Message(role="user", content=t) if isinstance(t, str) else t for t in turns]
    return ModelRequest(
        model=f"{provider}:fake",
        base_url=base,
        messages=messages or [Message(role="user", content="fix the bug")],
        max_tokens=64,
        **{"tools": TOOLS, **fields},
    )


async def ask(req: ModelRequest) -> ModelAnswer:
    return await ActivityEnvironment().run(call_model, req)


# --- native tool calling ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_tool_call_comes_back_parsed(fake: FakeLLM, provider: str) -> None:
    """The tools go out in the provider's format; the streamed call comes back as a ToolCall."""
    fake.push({"tool_calls": [READ_A]})
    answer = await ask(request(fake, provider))
    assert answer.tool_calls == (
        ToolCall(id="call_1" if provider == "openai" else "toolu_1", **READ_A),
    )
    assert answer.finish_reason == ("tool_calls" if provider == "openai" else "tool_use")
    (sent,) = fake.requests
    assert sent.body["stream"] is True
    names = [t["function"]["name"] if provider == "openai" else t["name"] for t in sent.tools]
    assert names == [t.name for t in TOOLS]
    read = next(t for t in sent.tools if (t.get("function") or t)["name"] == "read_file")
    if provider == "openai":
        assert read["type"] == "function"
        assert read["function"]["parameters"] == TOOLS[1].parameters
    else:
        assert read["input_schema"] == TOOLS[1].parameters


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_several_calls_and_text_in_one_answer(fake: FakeLLM, provider: str) -> None:
    """Calls keep their order and arguments (streamed in fragments); the text is kept too."""
    edit = {"path": "a.py", "old": "def f(x):\n    return x", "new": "def g(x):\n    return x"}
    fake.push(
        {
            "content": "Reading, then editing.",
            "tool_calls": [READ_A, {"name": "edit_file", "arguments": edit, "id": "mine"}],
        }
    )
    answer = await ask(request(fake, provider))
    assert answer.text == "Reading, then editing."
    assert [(c.id, c.name, c.arguments, c.error) for c in answer.tool_calls] == [
        ("call_1" if provider == "openai" else "toolu_1", "read_file", {"path": "a.py"}, None),
        ("mine", "edit_file", edit, None),
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_arguments_are_a_call_with_an_error(fake: FakeLLM, provider: str) -> None:
    """Arguments that are not JSON do not fail the step: the call says why it is unreadable."""
    fake.push({"tool_calls": [{"name": "read_file", "arguments": '{"path": "a.py"'}, READ_A]})
    answer = await ask(request(fake, provider))
    bad, good = answer.tool_calls
    assert bad.name == "read_file" and bad.arguments == {}
    assert bad.error is not None and bad.error.startswith("arguments are not valid JSON: ")
    assert good.error is None and good.arguments == {"path": "a.py"}
    assert len(fake.requests) == 1  # not retried


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_tool_and_bad_arguments_are_errors(fake: FakeLLM, provider: str) -> None:
    """A call is checked against the request's tools: its name, required and known arguments."""
    fake.push(
        {
            "tool_calls": [
                {"name": "delete_everything", "arguments": {}},
                {"name": "read_file", "arguments": {"file": "a.py"}},
                {"name": "read_file", "arguments": {"path": "a.py", "start": "one"}},
            ]
        }
    )
    unknown, missing, wrong_type = (await ask(request(fake, provider))).tool_calls
    assert unknown.error is not None and "there is no tool 'delete_everything'" in unknown.error
    assert missing.error == "read_file needs the argument(s) path"
    assert wrong_type.error == "argument start of read_file must be of type integer"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_without_calls_sends_and_returns_no_tools(
    fake: FakeLLM, provider: str
) -> None:
    """Without tools in the request nothing about tools goes out, and text answers are as before."""
    fake.push({"content": "just text"})
    answer = await ask(request(fake, provider, tools=()))
    assert (answer.text, answer.tool_calls) == ("just text", ())
    assert "tools" not in fake.requests[0].body


CALLS = (
    ToolCall(id="c1", name="read_file", arguments={"path": "a.py"}),
    ToolCall(id="c2", name="search", arguments={"pattern": "def f"}),
)
HISTORY = (
    Message(role="system", content="You are unit `one`."),
    Message(role="user", content="rename f to g"),
    Message(role="assistant", content="Looking first.", tool_calls=CALLS),
    Message(role="tool", tool_call_id="c1", content="def f(x): ..."),
    Message(role="tool", tool_call_id="c2", content="a.py:1:def f(x): ..."),
)


async def test_openai_conversation_with_tool_results_is_sent_in_its_shape(
    fake: FakeLLM,
) -> None:
    """Assistant tool_calls carry JSON-string arguments; each result is a role "tool" message."""
    fake.push({"content": "done"})
    await ask(request(fake, "openai", *HISTORY))
    assert fake.requests[0].messages == [
        {"role": "system", "content": "You are unit `one`."},
        {"role": "user", "content": "rename f to g"},
        {
            "role": "assistant",
            "content": "Looking first.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"pattern": "def f"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "def f(x): ..."},
        {"role": "tool", "tool_call_id": "c2", "content": "a.py:1:def f(x): ..."},
    ]


async def test_anthropic_conversation_with_tool_results_is_sent_in_its_shape(
    fake: FakeLLM,
) -> None:
    """System apart; tool_use blocks on the assistant turn; both results in ONE user turn."""
    fake.push({"content": "done"})
    await ask(request(fake, "anthropic", *HISTORY, Message(role="user", content="go on")))
    (sent,) = fake.requests
    assert sent.system == "You are unit `one`."
    assert sent.messages == [
        {"role": "user", "content": "rename f to g"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking first."},
                {"type": "tool_use", "id": "c1", "name": "read_file", "input": {"path": "a.py"}},
                {"type": "tool_use", "id": "c2", "name": "search", "input": {"pattern": "def f"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "def f(x): ..."},
                {"type": "tool_result", "tool_use_id": "c2", "content": "a.py:1:def f(x): ..."},
            ],
        },
        {"role": "user", "content": "go on"},
    ]


# --- the JSON fallback -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_json_fallback_describes_tools_and_reads_a_fenced_action(
    fake: FakeLLM, provider: str
) -> None:
    """No tools on the wire: they are in the system message; the history is plain text; the
    fenced JSON action in the answer comes back as the call, numbered by the model's turns."""
    action = {"tool": "edit_file", "arguments": {"path": "a.py", "old": "f", "new": "g"}}
    fake.push({"content": f"I will edit.\n```json\n{json.dumps(action)}\n```"})
    history = [*HISTORY[:2], HISTORY[2].model_copy(update={"content": ""}), *HISTORY[3:]]
    answer = await ask(request(fake, provider, *history, tool_format="json"))
    assert answer.tool_calls == (
        ToolCall(id="call-2", name="edit_file", arguments=action["arguments"]),
    )
    (sent,) = fake.requests
    assert sent.tools == []
    turns = sent.messages
    system = sent.system if provider == "anthropic" else turns.pop(0)["content"]
    assert system == f"You are unit `one`.\n\n{json_instructions(TOOLS)}"
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    spoken = json.loads(turns[1]["content"].splitlines()[0])
    assert spoken == {"tool": "read_file", "arguments": {"path": "a.py"}}
    assert turns[2]["content"] == (
        "Result of read_file:\ndef f(x): ...\n\nResult of search:\na.py:1:def f(x): ..."
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_json_fallback_prose_is_a_call_with_an_error(fake: FakeLLM, provider: str) -> None:
    """An answer with no JSON action is one call with an error, and a system message is added
    when the conversation had none."""
    fake.push({"content": "I think we should rename the function."})
    answer = await ask(request(fake, provider, tool_format="json"))
    (call,) = answer.tool_calls
    assert call.id == "call-1" and call.error is not None and '{"tool": "<name>"' in call.error
    sent = fake.requests[0]
    system = sent.system if provider == "anthropic" else sent.messages[0]["content"]
    assert system == json_instructions(TOOLS)


# --- the fake server itself ------------------------------------------------------------------


def test_fake_answers_tool_calls_unstreamed_in_both_formats(fake: FakeLLM) -> None:
    """Without streaming: OpenAI message.tool_calls, Anthropic tool_use blocks."""
    fake.push({"tool_calls": [READ_A]}, {"tool_calls": [READ_A], "content": "hm"})
    messages = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as oai:
        reply = oai.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.function.name) == ("call_1", "read_file")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"path": "a.py"}  # type: ignore[union-attr]
    with anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0) as ant:
        message = ant.messages.create(model="m", max_tokens=9, messages=messages)  # type: ignore[arg-type]
    assert message.stop_reason == "tool_use"
    text, use = message.content
    assert text.type == "text" and text.text == "hm"
    assert use.type == "tool_use" and (use.id, use.name, use.input) == (
        "toolu_2",
        "read_file",
        {"path": "a.py"},
    )


def test_fake_rejects_bad_tool_call_entries() -> None:
    with pytest.raises(ValueError, match="'tool_calls' must be a non-empty list"):
        FakeLLM([{"tool_calls": [{"arguments": {}}]}])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['status'\]"):
        FakeLLM([{"tool_calls": [READ_A], "status": 500}])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.usefixtures("model_keys")
async def test_threads_answer_each_conversation_in_its_own_order(provider: str) -> None:
    """Interleaved requests of two conversations each take their own thread's next entry,
    ahead of match and the script; a thread used up leaves its requests to the script."""
    fake = FakeLLM(
        [{"content": "from the script"}],
        default=None,
        match={"unit": {"content": "matched"}},
        threads={"unit `one`": [{"content": "one-1"}, {"content": "one-2"}]},
    ).start()
    try:
        fake.push_thread("unit `two`", {"tool_calls": [READ_A]}, {"content": "two-2"})

        def unit(name: str) -> ModelRequest:
            return request(fake, provider, Message(role="system", content=f"unit `{name}`"))

        texts = [(await ask(unit(n))).text for n in ("two", "one", "one", "two")]
        assert texts == ["", "one-1", "one-2", "two-2"]
        assert (await ask(unit("one"))).text == "matched"
        assert (await ask(request(fake, provider, "plain"))).text == "from the script"
    finally:
        fake.stop()


def test_script_file_with_threads(tmp_path: Path) -> None:
    """A script file holds threads next to the script; the older ``responses`` still loads."""
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            {
                "script": [{"content": "plan"}],
                "threads": {"unit `one`": [{"tool_calls": [READ_A]}]},
                "default": None,
            }
        )
    )
    read = read_script(path)
    assert read.script == [{"content": "plan"}] and read.default is None
    assert read.threads == {"unit `one`": [{"tool_calls": [READ_A]}]}
    path.write_text(json.dumps({"responses": [{"content": "x"}]}))
    assert load_script(path) == ([{"content": "x"}], {"content": "ok"})
    path.write_text(json.dumps({"threads": {"m": [{"colour": 1}]}}))
    with pytest.raises(ValueError, match=r"thread 'm' entry 0: needs exactly one of"):
        read_script(path)


def test_wire_shapes_the_providers_insist_on() -> None:
    """Anthropic refuses empty turns and wants errors flagged; OpenAI wants a name on every
    call; fragments from servers that send no index still make separate calls."""
    from types import SimpleNamespace

    from agentparallels.activities._tool_wire import (
        EMPTY,
        UNNAMED,
        OpenAICalls,
        anthropic_turns,
        openai_messages,
    )
    from agentparallels.core.agentjob import TOOLS

    bad = ToolCall(id="c1", name="", error="not JSON")
    messages = [
        Message(role="user", content="go"),
        Message(role="assistant", content=" ", tool_calls=(bad,)),
        Message(role="tool", content="Error: not JSON", tool_call_id="c1"),
        Message(role="assistant", content=""),
        Message(role="user", content="Call a tool."),
    ]
    turns = anthropic_turns(messages)
    assert turns[1]["content"][0]["type"] == "tool_use"  # no blank text block
    assert turns[2]["content"][0]["is_error"] is True
    assert turns[3] == {"role": "assistant", "content": EMPTY}
    assert openai_messages(messages)[1]["tool_calls"][0]["function"]["name"] == UNNAMED

    def fragment(id: str | None, name: str | None, args: str) -> SimpleNamespace:
        function = SimpleNamespace(name=name, arguments=args)
        return SimpleNamespace(index=None, id=id, function=function)

    calls = OpenAICalls()
    calls.add([fragment("a", "read_file", '{"path": ')])
    calls.add([fragment(None, None, '"x.py"}')])
    calls.add([fragment("b", "run_check", "{}")])
    got = calls.calls(TOOLS)
    assert [(c.id, c.name, c.arguments) for c in got] == [
        ("a", "read_file", {"path": "x.py"}),
        ("b", "run_check", {}),
    ]
