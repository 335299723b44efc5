"""Tool calling as values: the tools a model may call, the calls it made, and the JSON
fallback for servers without native tool calling.

A request lists its tools (``ModelRequest.tools``); the model-call step sends them in the
provider's own format (OpenAI chat-completions ``tools``, Anthropic ``tool_use``) or, with
``tool_format="json"``, describes them in the system message and reads one JSON action from
the answer's text (:func:`json_instructions`, :func:`parse_json_action`). Either way the answer
carries :class:`ToolCall` values; a call that could not be read carries ``error`` instead of
arguments, and the workflow sends that error back to the model.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field

from agentparallels.core._value import Value

_SPACES = re.compile(r"\s+")
ToolFormat = Literal["native", "json"]
"""How tools reach the model: the provider's tool calling, or a JSON action in the text."""


class ToolSpec(Value):
    """One tool as the model sees it: a name, what it does, its arguments' JSON schema."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    parameters: dict[str, Any]
    """A JSON schema of type ``object``."""


class ToolCall(Value):
    """One call the model asked for. ``error`` says why it could not be read (bad JSON,
    unknown tool, missing argument); then ``arguments`` is empty and the call is not run."""

    id: str
    """The provider's call id (made up for the JSON fallback); a tool result names it."""
    name: str
    arguments: dict[str, Any] = {}
    error: str | None = None

    def fingerprint(self) -> str:
        """The tool and its arguments, normalised (sorted keys, collapsed whitespace): equal
        for two calls that ask for the same thing."""
        args = json.dumps(self.arguments, sort_keys=True, separators=(",", ":"))
        return f"{self.name}({_SPACES.sub(' ', args)})"


def check_arguments(spec: ToolSpec, arguments: Any) -> str | None:
    """Why ``arguments`` do not fit the tool's schema (object, required keys, no unknown
    keys, the JSON types of the properties), or None if they do."""
    if not isinstance(arguments, dict):
        return f"the arguments of {spec.name} must be a JSON object"
    props: dict[str, Any] = spec.parameters.get("properties", {})
    missing = [k for k in spec.parameters.get("required", ()) if k not in arguments]
    if missing:
        return f"{spec.name} needs the argument(s) {', '.join(missing)}"
    if unknown := sorted(set(arguments) - set(props)):
        return f"{spec.name} has no argument(s) {', '.join(unknown)}; it takes {', '.join(props)}"
    kinds = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}
    for key, value in arguments.items():
        want = kinds.get(props[key].get("type", ""))
        if want is int and isinstance(value, bool) or want and not isinstance(value, want):
            return f"argument {key} of {spec.name} must be of type {props[key]['type']}"
    return None


def json_instructions(tools: tuple[ToolSpec, ...]) -> str:
    """The system-message text that describes ``tools`` to a model without tool calling."""
    lines = [
        "You act by calling tools. Answer with exactly one JSON object and nothing else:",
        '{"tool": "<tool name>", "arguments": {...}}',
        "The tools:",
    ]
    for t in tools:
        lines.append(
            f"- {t.name}: {t.description} Arguments (JSON schema): "
            f"{json.dumps(t.parameters, sort_keys=True)}"
        )
    return "\n".join(lines)


def parse_json_action(text: str, tools: tuple[ToolSpec, ...], call_id: str) -> ToolCall:
    """The one JSON action in ``text`` (a fenced block or the first ``{`` to the last ``}``),
    checked against ``tools``; a call with ``error`` set when it cannot be read."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    start, end = text.find("{"), text.rfind("}")
    raw = fenced.group(1) if fenced else text[start : end + 1] if 0 <= start < end else ""
    known = {t.name: t for t in tools}
    try:
        action = json.loads(raw)
    except ValueError:
        action = None
    if not isinstance(action, dict) or not isinstance(action.get("tool"), str):
        return ToolCall(
            id=call_id,
            name="",
            error='answer with one JSON object {"tool": "<name>", "arguments": {...}} and '
            "nothing else",
        )
    name, arguments = action["tool"], action.get("arguments", {})
    return checked_call(ToolCall.model_construct(id=call_id, name=name), arguments, known)


def checked_call(call: ToolCall, arguments: Any, known: dict[str, ToolSpec]) -> ToolCall:
    """``call`` with ``arguments`` if they fit the named tool, else with ``error`` set."""
    spec = known.get(call.name)
    if spec is None:
        error: str | None = f"there is no tool {call.name!r}; the tools are {', '.join(known)}"
    else:
        error = check_arguments(spec, arguments)
    if error:
        return ToolCall(id=call.id, name=call.name, error=error)
    return ToolCall(id=call.id, name=call.name, arguments=arguments)


__all__ = [
    "ToolCall",
    "ToolFormat",
    "ToolSpec",
    "check_arguments",
    "checked_call",
    "json_instructions",
    "parse_json_action",
]
