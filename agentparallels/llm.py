"""Model calls as values: what a step asks a model, what it answered, what it cost.

A request names the model as ``provider:model`` (``openai:gpt-4.1``,
``anthropic:claude-sonnet-4-5``); ``openai`` covers every OpenAI-compatible endpoint (vLLM,
Ollama, llama.cpp, LM Studio, OpenRouter, Azure OpenAI) through ``base_url``. API keys are
never part of a request: workers read them from their own environment (``OPENAI_API_KEY``,
``ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from agentparallels._value import Value

M = TypeVar("M", bound=BaseModel)

PROVIDERS = ("openai", "anthropic")
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def split_model(model: str) -> tuple[str, str]:
    """``"openai:gpt-4.1"`` -> ``("openai", "gpt-4.1")``; ValueError naming the fix otherwise."""
    provider, sep, name = model.partition(":")
    if not sep or provider not in PROVIDERS or not name:
        raise ValueError(
            f"model '{model}' must be written provider:model with provider one of "
            f"{', '.join(PROVIDERS)}, e.g. openai:gpt-4.1 or anthropic:claude-sonnet-4-5"
        )
    return provider, name


class Message(Value):
    role: Literal["system", "user", "assistant"]
    content: str


class FileContext(Value):
    """Files the model-call step reads from git when it runs (lazy loading): the history holds
    this reference, not the files' text."""

    repository: str
    commit: str
    path: str
    related_tokens: int = 0
    """Budget, in tokens, for other files of the same directory, added as context."""


class ModelRequest(Value):
    model: str
    """``provider:model``."""
    base_url: str | None = None
    """For self-hosted or proxy endpoints."""
    messages: tuple[Message, ...]
    context: FileContext | None = None
    """Appended to the last user message by the step that calls the model."""
    temperature: float = 0.0
    seed: int | None = None
    max_tokens: int = Field(4096, ge=1)
    output: str | None = None
    """Name of a registered pydantic model the answer must validate against (JSON)."""
    step: str = "model call"
    """What the call is for, shown in the UI (e.g. ``edit src/pkg/a.py``)."""
    stream_timeout_s: float = 30.0
    """Longest silence allowed between two pieces of a streamed answer."""


class Usage(Value):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class ModelAnswer(Value):
    text: str
    model: str
    usage: Usage
    finish_reason: str = ""
    parsed: dict | None = None
    """The validated structured answer, when the request named an ``output`` model."""
    invalid: str | None = None
    """Why the answer did not validate against the ``output`` model (the step re-prompts)."""


class Price(Value):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


class BudgetLimits(Value):
    """Token budgets checked before every model call."""

    total: int | None = Field(None, ge=1)
    """The whole job."""
    phases: dict[str, int] = {}
    """Per phase (``plan``, ``execute``, ``verify``)."""


_OUTPUTS: dict[str, type[BaseModel]] = {}


def output_model(cls: type[M]) -> type[M]:
    """Register a pydantic model that steps can ask for as a structured answer, by class name."""
    _OUTPUTS[cls.__name__] = cls
    return cls


def lookup_output(name: str) -> type[BaseModel]:
    try:
        return _OUTPUTS[name]
    except KeyError:
        raise ValueError(
            f"no output model named {name!r} is registered (known: {', '.join(sorted(_OUTPUTS))})"
        ) from None
