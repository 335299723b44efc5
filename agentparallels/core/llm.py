"""Model calls as values: what a step asks a model, what it answered, what it cost.

A request names the model as ``provider:model`` (``openai:gpt-4.1``,
``anthropic:claude-sonnet-4-5``); ``openai`` covers every OpenAI-compatible endpoint (vLLM,
Ollama, llama.cpp, LM Studio, OpenRouter, Azure OpenAI) through ``base_url``. API keys are
never part of a request: workers read them from their own environment (``OPENAI_API_KEY``,
``ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, Field, field_validator

from agentparallels.core._value import Value
from agentparallels.core.tools import ToolCall, ToolFormat, ToolSpec

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
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """On an assistant message: the tool calls the model made in that answer."""
    tool_call_id: str | None = None
    """On a ``tool`` message: the call whose result ``content`` is."""


class FileContext(Value):
    """Files the model-call step reads from git when it runs (lazy loading): the history holds
    this reference, not the files' text."""

    repository: str
    commit: str
    path: str
    related_tokens: int = 0
    """Budget, in tokens, for other files of the same directory, added as context."""
    file_tokens: int = 0
    """The file's own size in tokens, as the plan counted it: the workflow never sees the
    file's text, so this is what the budget estimate counts for it."""


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
    stream_timeout_s: float = Field(30.0, gt=0)
    """Longest silence allowed before the first piece of a streamed answer or between two;
    longer fails the attempt (retried)."""
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call (``agentparallels.core.tools``)."""
    tool_format: ToolFormat = "native"
    """``native``: the provider's tool calling; ``json``: tools described in the system
    message, one JSON action read from the answer's text."""


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
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model called, in order; a call it made but that could not be read has
    ``error`` set (sent back to the model, counted against the unit's turns)."""


class Price(Value):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


PHASES = ("plan", "execute", "verify")
"""The budget phases, in the order unspent tokens flow."""
DEFAULT_SHARES = {"plan": 0.1, "execute": 0.7, "verify": 0.2}


class BudgetLimits(Value):
    """Token budgets checked before every model call, and how they move between phases.

    Each phase of ``PHASES`` has a base: its absolute cap in ``phases`` if given, else its
    share of ``total``. The rule for unspent budget: **it flows forward, never back.** A phase
    may spend its own base plus whatever the phases before it have left unspent so far, so
    unspent plan budget flows to execute, and unspent plan and execute budget to verify; plan
    can never spend execute's or verify's part, and execute never verify's. With the default
    shares, execute may use up to 80% of the total while plan has spent nothing, and at least
    20% stays for verification. Every call is also checked against ``total`` itself. Phases
    outside ``PHASES`` are limited by ``total`` only.
    """

    total: int | None = Field(None, ge=1)
    """The whole job, in tokens."""
    phases: dict[str, int] = {}
    """Absolute caps per phase (``plan``, ``execute``, ``verify``), in tokens; they take the
    place of that phase's share."""
    shares: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SHARES))
    """Fraction of ``total`` that is each phase's base; at most 1 together. Empty: phases are
    limited by ``total`` (and ``phases``) only."""

    @field_validator("shares")
    @classmethod
    def _valid_shares(cls, shares: dict[str, float]) -> dict[str, float]:
        if unknown := sorted(set(shares) - set(PHASES)):
            raise ValueError(f"unknown phase(s) {unknown}; the phases are {', '.join(PHASES)}")
        if any(not 0 <= v <= 1 for v in shares.values()):
            raise ValueError("each phase's share must be between 0 and 1")
        if sum(shares.values()) > 1 + 1e-9:
            raise ValueError(f"the shares add up to {sum(shares.values()):g}, more than 1")
        return shares

    def base(self, phase: str) -> int | None:
        """What ``phase`` may spend on its own, before anything flows in; None: unlimited."""
        if phase in self.phases:
            return self.phases[phase]
        if self.total is not None and phase in self.shares:
            return int(self.total * self.shares[phase])
        return None

    def allowance(
        self, phase: str, spent: dict[str, int], *, carry_once: bool = True
    ) -> int | None:
        """Tokens ``phase`` may have spent in all, given what each phase has ``spent``: its
        base plus what the earlier phases left unspent (see the class docstring).

        Unspent tokens are carried phase by phase: what execute used of plan's leftover is not
        left over for verify as well. ``carry_once=False`` is the old rule, which added every
        earlier phase's unspent base, so plan's leftover counted twice once execute had used
        it; workflow histories recorded under it replay with it."""
        own = self.base(phase)
        if own is None or phase not in PHASES:
            return own
        carried = 0
        for earlier in PHASES[: PHASES.index(phase)]:
            base = self.base(earlier)
            if base is None:
                continue
            if carry_once:  # what this phase had (its base and the carry) minus what it used
                carried = max(0, base + carried - spent.get(earlier, 0))
            else:
                carried += max(0, base - spent.get(earlier, 0))
        return own + carried

    @property
    def limited(self) -> bool:
        """Whether any budget applies at all."""
        return self.total is not None or bool(self.phases)

    def refusal(
        self, phase: str, used: dict[str, int], estimate: int, *, carry_once: bool = True
    ) -> tuple[str, int] | None:
        """Why a call of ``estimate`` tokens in ``phase`` could exceed a budget, given the
        tokens ``used`` (spent, or held for calls under way) per phase: the budget it would
        exceed and how much of that is used; None when the call fits."""
        spent = sum(used.values())
        if self.total is not None and spent + estimate > self.total:
            return f"the job's budget of {self.total} tokens", spent
        limit = self.allowance(phase, used, carry_once=carry_once)
        in_phase = used.get(phase, 0)
        if limit is not None and in_phase + estimate > limit:
            return f"the {phase} budget of {limit} tokens", in_phase
        return None

    def remaining(self, phase: str, used: dict[str, int]) -> int | None:
        """The largest call ``phase`` could be granted now; None when nothing limits it."""
        left = [self.total - sum(used.values())] if self.total is not None else []
        limit = self.allowance(phase, used)
        if limit is not None:
            left.append(limit - used.get(phase, 0))
        return max(0, min(left)) if left else None


def budget_message(budget: str, spent: int, estimate: int, used: dict[str, int]) -> str:
    """The reason a model call is refused, naming what was spent where."""
    where = ", ".join(f"{p}: {n}" for p, n in used.items()) or "nothing yet"
    return (
        f"stopped before a model call that could take up to {estimate} tokens: {spent} are "
        f"spent of {budget} ({where}); raise the budget to go on"
    )


class Reservation(Value):
    """A shard's request for tokens from the job's ledger, before one model call."""

    holder: str
    """The workflow id of the shard asking; the grant is signalled back to it."""
    id: int
    """Its number among the holder's reservations."""
    phase: str
    tokens: int
    """The call's estimate."""
    credit: int = 0
    """Tokens asked for beyond this call, for the holder's next calls in the same phase to
    spend without asking (a credit; see ``workflows.ledger``); 0: this call only."""


class Grant(Value):
    """The ledger's answer to a reservation."""

    id: int
    granted: bool
    reason: str = ""
    """Why it was refused (the job then fails with this budget reason)."""
    kind: str = ""
    """The error type a refusal fails the call with; empty: ``BudgetExceeded``."""
    credit: int = 0
    """Tokens granted beyond the call (at most the reservation's ``credit``)."""


class Settlement(Value):
    """What a reserved call actually used; the rest of its reservation returns to the pool."""

    holder: str
    id: int
    phase: str
    tokens: int
    outcome: Literal["", "ok", "unavailable"] = ""
    """How the call went, for the job's provider breaker: ``ok``, ``unavailable`` (the
    provider failed it as ``ModelUnavailable``: 5xx, timeout, connection refused), or empty
    (failed otherwise, or not said)."""
    error: str = ""
    """The provider's message, when unavailable (the job's error quotes the last one)."""
    cost_usd: float | None = None
    """What the call cost, when its model has a price."""


class BudgetAdd(Value):
    """``agentparallels budget JOB --add N``: more tokens for a job's budget."""

    tokens: int = Field(ge=1)
    by: str = ""
    """Who added them (shown in the job's events)."""


class StepsState(Value):
    """What a workflow's model calls have spent, carried across continue-as-new."""

    used: dict[str, Usage] = {}
    calls: int = 0
    cost_usd: float | None = 0.0
    compactions: int = 0


_OUTPUTS: dict[str, type[BaseModel]] = {}


def output_model(cls: type[M]) -> type[M]:
    """Register a pydantic model that steps can ask for as a structured answer, by class name.
    The first registration of a name stands: a workflow module that registers one (say
    ``workflows.routing``) is imported by the worker, then again in each workflow run's
    sandbox, and the sandbox's copies of its classes must not replace the worker's own in this
    module, which the sandbox shares (``plugin.PASSTHROUGH_MODULES``)."""
    _OUTPUTS.setdefault(cls.__name__, cls)
    return cls


def lookup_output(name: str) -> type[BaseModel]:
    try:
        return _OUTPUTS[name]
    except KeyError:
        raise ValueError(
            f"no output model named {name!r} is registered (known: {', '.join(sorted(_OUTPUTS))})"
        ) from None


__all__ = [
    "BudgetAdd",
    "BudgetLimits",
    "DEFAULT_SHARES",
    "FileContext",
    "Grant",
    "KEY_VARIABLES",
    "M",
    "Message",
    "ModelAnswer",
    "ModelRequest",
    "PHASES",
    "PROVIDERS",
    "Price",
    "Reservation",
    "Settlement",
    "StepsState",
    "Usage",
    "budget_message",
    "lookup_output",
    "output_model",
    "split_model",
]
