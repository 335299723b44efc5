"""Inputs, state and results of the reusable agent loop (``workflows/agent_loop.py``)."""

from __future__ import annotations

from pydantic import Field

from agentparallels.core._value import Sandbox, Value
from agentparallels.core.llm import BudgetLimits, Compaction, Message, Price, StepsState, Usage


class AgentLoopState(Value):
    """What one run hands the next when the loop continues as new."""

    conversation: tuple[Message, ...]
    """The conversation so far, compacted."""
    turn: int = 0
    """Turns completed."""
    runs: int = 1
    """Runs of the chain so far, this one included."""
    steps: StepsState = StepsState()
    """Tokens spent per phase, calls, cost, compactions."""
    feedback: tuple[str, ...] = ()
    """Feedback received by signal and not yet given to the model."""
    last_answer: str = ""


class AgentLoopInput(Value):
    """An agent working on a task for up to ``turns`` turns: each turn is one model call,
    then a feedback step whose output is the next user message."""

    task: str
    """The first user message: what the agent is to do."""
    system: str | None = None
    """A system message, kept through every compaction."""
    model: str
    """``provider:model``, e.g. ``openai:gpt-4.1``."""
    base_url: str | None = None
    """For self-hosted or proxy endpoints."""
    turns: int = Field(10, ge=1)
    """Most model calls the loop makes (summaries not counted)."""
    done_marker: str | None = None
    """An answer containing this text ends the loop early."""
    max_tokens: int = Field(1024, ge=1)
    """Longest answer, in tokens."""
    tool_cmd: str | None = None
    """The feedback step: a shell command run in ``workdir`` after each answer, ``{answer}``
    replaced by the path of a file holding the answer; its exit code and output (the tail)
    are the next user message. Without it, feedback sent by signal is, else ``next_prompt``."""
    workdir: str | None = None
    """Where ``tool_cmd`` runs (a path on the workers); a scratch folder when not given."""
    tool_timeout_s: float = Field(60.0, gt=0)
    """Wall-clock limit of one tool run, in seconds."""
    sandbox: Sandbox = Sandbox()
    """How ``tool_cmd`` is confined: in the bubblewrap sandbox (``workdir`` its only writable
    folder), or, with ``none``, as a plain process of the worker."""
    next_prompt: str = "Continue."
    """The next user message when there is no tool and no feedback was sent."""
    compaction: Compaction = Compaction()
    """When the conversation is summarised: by default past 60% of the model's window."""
    budget: BudgetLimits = BudgetLimits()
    """Token budgets; turns and summaries are ``execute`` phase calls."""
    prices: dict[str, Price] = {}
    """Prices of the models used, for the estimated cost."""
    max_run_events: int = Field(5000, ge=50)
    """History bound of one run, in events: past it, at a turn boundary, the loop continues as
    new (as it does when the server suggests it), carrying its state."""
    max_run_bytes: int = Field(4_000_000, ge=50_000)
    """History bound of one run, in bytes (same rule)."""
    state: AgentLoopState | None = None
    """Set by the loop itself when it continues as new; leave it out when starting one."""


class AgentLoopProgress(Value):
    turn: int
    turns: int
    runs: int
    compactions: int
    tokens: int
    context_tokens: int
    """The conversation's size now, as counted before the next call."""


class AgentLoopResult(Value):
    turns: int
    runs: int
    """Runs in the continue-as-new chain."""
    compactions: int
    usage: Usage
    cost_usd: float | None
    last_answer: str


class ToolInput(Value):
    command: str
    workdir: str | None
    answer: str
    timeout_s: float
    sandbox: Sandbox = Sandbox()


class ToolResult(Value):
    exit_code: int
    output: str


__all__ = [
    "AgentLoopInput",
    "AgentLoopProgress",
    "AgentLoopResult",
    "AgentLoopState",
    "ToolInput",
    "ToolResult",
]
