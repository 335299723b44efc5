"""Tool calling on the wire: our messages and tools in each provider's shape, and the tool
calls read back out of a streamed answer.

The model-call step (``activities/llm.py``) keeps one conversation format (``Message`` with
``tool_calls`` and ``tool_call_id``) whatever the provider; this module translates it:

- OpenAI chat completions: ``tools=[{"type": "function", ...}]``, assistant messages carry
  ``tool_calls`` with JSON-string arguments, results are ``role: "tool"`` messages. Streamed
  calls arrive as fragments keyed by ``index`` (id and name first, arguments in pieces).
- Anthropic messages: ``tools=[{"name", "description", "input_schema"}]``, assistant turns carry
  ``tool_use`` blocks, results are ``tool_result`` blocks in one user turn. Streamed calls
  arrive as ``content_block_start`` plus ``input_json_delta`` pieces.
- The JSON fallback (``tool_format="json"``), for servers without tool calling: no tools on the
  wire; they are described in the system message and one JSON action is read from the text.

Every call read back is checked against the request's tools (``checked_call``): a call whose
arguments are not JSON, name no known tool or do not fit the schema comes back with ``error``
set, for the workflow to send back to the model, never as an exception that would fail or
retry the step.
"""

from __future__ import annotations

import json
from typing import Any

from agentparallels.core.llm import Message
from agentparallels.core.tools import (
    ToolCall,
    ToolSpec,
    checked_call,
    json_instructions,
    parse_json_action,
)


def parsed_call(call_id: str, name: str, raw: str, tools: tuple[ToolSpec, ...]) -> ToolCall:
    """One call from its raw JSON arguments, checked against ``tools`` (empty arguments are
    an empty object: servers send ``""`` for tools without arguments)."""
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        return ToolCall(id=call_id, name=name, error=f"arguments are not valid JSON: {e}")
    return checked_call(ToolCall(id=call_id, name=name), arguments, {t.name: t for t in tools})


# --- OpenAI chat completions -----------------------------------------------------------------


def openai_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


UNNAMED = "unreadable_call"
"""The name sent back for a call the model made without a readable name."""
EMPTY = "(no text)"
"""Sent for a turn that had no text: Anthropic refuses empty turns."""


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as chat-completions messages; plain messages stay ``role``/``content``."""
    wire: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    # A call that could not be read may have no name; the API wants one.
                    "function": {"name": c.name or UNNAMED, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
            wire.append({"role": "assistant", "content": m.content or None, "tool_calls": calls})
        else:
            wire.append({"role": m.role, "content": m.content})
    return wire


class OpenAICalls:
    """Streamed ``delta.tool_calls`` fragments, put back together by their ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}

    def _key(self, f: Any) -> int:
        """The call a fragment belongs to: its ``index``; from servers that send none, its
        ``id`` (a new id is a new call), else the call before."""
        if f.index is not None:
            return int(f.index)
        if f.id and f.id not in self._ids:
            self._ids[f.id] = len(self._calls)
        return self._ids.get(f.id or "", max(self._calls, default=0))

    def add(self, fragments: Any) -> None:
        for f in fragments or ():
            key = self._key(f)
            call = self._calls.setdefault(key, {"id": "", "name": "", "arguments": []})
            call["id"] = f.id or call["id"]
            if f.function is not None:
                call["name"] = f.function.name or call["name"]
                call["arguments"].append(f.function.arguments or "")

    def calls(self, tools: tuple[ToolSpec, ...]) -> tuple[ToolCall, ...]:
        return tuple(
            parsed_call(c["id"] or f"call-{i}", c["name"], "".join(c["arguments"]), tools)
            for i, c in sorted(self._calls.items())
        )


# --- Anthropic messages ----------------------------------------------------------------------


def anthropic_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
    ]


def anthropic_turns(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation without its system messages, as Anthropic turns: tool calls become
    ``tool_use`` blocks, and consecutive tool results one user turn of ``tool_result`` blocks
    (the API wants every result of an answer in the turn right after it)."""
    turns: list[dict[str, Any]] = []
    previous = ""
    for m in messages:
        if m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
            }
            if m.content.startswith("Error:"):
                block["is_error"] = True
            if previous == "tool":
                turns[-1]["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            text = [{"type": "text", "text": m.content}] if m.content.strip() else []
            uses = [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            turns.append({"role": "assistant", "content": text + uses})
        elif m.role != "system":
            # Every turn but a final assistant one must have content.
            turns.append({"role": m.role, "content": m.content if m.content.strip() else EMPTY})
        previous = m.role
    return turns


class AnthropicStream:
    """What a raw Anthropic event stream says: the text, the tool calls, the stop reason and
    the usage. Read from the raw events rather than through the SDK's stream helper, which
    raises on a tool call whose arguments are not JSON instead of letting us report it."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.stop = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self._uses: dict[int, dict[str, Any]] = {}

    def feed(self, event: Any) -> None:
        kind = event.type
        if kind == "message_start":
            self.input_tokens = event.message.usage.input_tokens or 0
            self.output_tokens = event.message.usage.output_tokens or 0
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            self._uses[event.index] = {"id": block.id, "name": block.name, "json": []}
        elif kind == "content_block_delta" and event.delta.type == "text_delta":
            self.text.append(event.delta.text)
        elif kind == "content_block_delta" and event.delta.type == "input_json_delta":
            if event.index in self._uses:
                self._uses[event.index]["json"].append(event.delta.partial_json)
        elif kind == "message_delta":
            self.stop = str(event.delta.stop_reason or self.stop)
            if event.usage is not None:
                self.output_tokens = event.usage.output_tokens or self.output_tokens
                self.input_tokens = getattr(event.usage, "input_tokens", None) or self.input_tokens

    def calls(self, tools: tuple[ToolSpec, ...]) -> tuple[ToolCall, ...]:
        return tuple(
            parsed_call(u["id"], u["name"], "".join(u["json"]), tools)
            for _, u in sorted(self._uses.items())
        )


# --- the JSON fallback -----------------------------------------------------------------------


def json_messages(messages: list[Message], tools: tuple[ToolSpec, ...]) -> list[Message]:
    """The conversation for a server without tool calling: the tools described in the system
    message, each tool result a user message naming its tool, and the user messages that then
    follow each other merged (many chat templates of local models insist that roles alternate)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[Message] = []
    for m in messages:
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", "the tool")
            m = Message(role="user", content=f"Result of {name}:\n{m.content}")
        elif m.tool_calls:
            content = m.content or "\n".join(
                json.dumps({"tool": c.name, "arguments": c.arguments}) for c in m.tool_calls
            )
            m = Message(role=m.role, content=content)
        if out and m.role == out[-1].role == "user":
            out[-1] = Message(role="user", content=f"{out[-1].content}\n\n{m.content}")
        else:
            out.append(m)
    instructions = json_instructions(tools)
    system = next((i for i, m in enumerate(out) if m.role == "system"), None)
    if system is None:
        return [Message(role="system", content=instructions), *out]
    out[system] = Message(role="system", content=f"{out[system].content}\n\n{instructions}")
    return out


def json_action(text: str, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...]) -> ToolCall:
    """The one JSON action of a fallback answer; its id counts the model's answers so far, so
    it is the same on every attempt of the step and unique in the conversation."""
    n = sum(m.role == "assistant" for m in messages) + 1
    return parse_json_action(text, tools, call_id=f"call-{n}")


__all__ = [
    "EMPTY",
    "UNNAMED",
    "AnthropicStream",
    "OpenAICalls",
    "anthropic_tools",
    "anthropic_turns",
    "json_action",
    "json_messages",
    "openai_messages",
    "openai_tools",
    "parsed_call",
]
