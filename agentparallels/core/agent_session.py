"""What a long agent unit carries from one run to the next when it continues as new.

A unit of hundreds of turns would outgrow one workflow history; at a turn boundary it continues
as new (``workflows/agent_context.py``), and the next run starts from a :class:`UnitCarry`:
the compacted conversation, where the unit's branch stands and what it changed, every counter
and guard (turns, tool calls, the breaker's failures, loop detection's counts), what the model
calls spent, the ledger's next reservation number, and the tool calls' stats and flags.
Nothing of it is derived again, so the chain of runs behaves as one run would.
"""

from __future__ import annotations

from agentparallels.core._value import Value
from agentparallels.core.baseline import ToolFlag, ToolStats
from agentparallels.core.llm import Message, StepsState


class LoopState(Value):
    """``workflows.loop_detect.ToolLoops``'s counters."""

    state: str = ""
    repeats: dict[str, int] = {}
    edits: dict[str, int] = {}
    warned: bool = False


class UnitCarry(Value):
    """A unit's state at a turn boundary, handed to its next run."""

    conversation: tuple[Message, ...]
    head: str
    changed: tuple[str, ...] = ()
    calls: int = 0
    turns: int = 0
    checked: bool = False
    nudged_finish: bool = False
    last_failure: str = ""
    breaker_failures: int = 0
    loops: LoopState = LoopState()
    steps: StepsState = StepsState()
    """Tokens, cost, model calls and compactions so far (``ModelSteps.state``)."""
    ledger_next: int = 0
    """The last reservation number used: the next run goes on from it, so the parent's ledger
    never sees one number twice from this unit."""
    runs: int = 1
    """Runs so far, this one included in the next."""
    tools: tuple[ToolStats, ...] = ()
    """The tool calls' stats so far, per (tool, command) (``workflows.agent_watch``)."""
    flags: tuple[ToolFlag, ...] = ()
    flagged: int = 0
    """Calls flagged against the baseline so far; ``flags`` keeps the first few."""


__all__ = ["LoopState", "UnitCarry"]
