"""Long sessions for agent units: the conversation compacted by the model, runs continued as new.

A unit's conversation grows with every turn, and a model's window does not. Before each model
call :class:`AgentUnitWorkflow` estimates the request (``model_step.estimate_tokens``, the
figure the ledger reserves); past ``AgentLimits.context_threshold`` of the window the oldest
turns go to a summarising model call (its system message and the summary's prefix are
``workflows/compaction.py``'s) and one message holding the summary takes their place. Cuts
fall only where no tool call is parted from its result: an assistant message that called
tools stays with every ``tool`` message answering it, on the same side of the cut, or the
provider would refuse the request.
A context-length error from the provider forces the same compaction, and the call is made once
more.

A run's history is bounded too: at a turn boundary, past ``AgentLimits.run_events`` or
``run_bytes`` (or when the server suggests it), the unit continues as new with a
:class:`~agentparallels.core.agent_session.UnitCarry` of everything it knows. The history a
turn adds is bounded whatever the files and the conversation hold, because every payload of a
unit's history is a claim check reference (``agentparallels.codec.CLAIM_ALL``).

Units started before :data:`LONG_SESSION` replay as they ran: no compaction of their own, no
continue-as-new, and the model step's own compaction after a context-length error.
"""

from __future__ import annotations

import json

from temporalio import workflow

from agentparallels.workflows.compaction import SUMMARISE_SYSTEM, SUMMARY_PREFIX
from agentparallels.workflows.model_step import CHARS_PER_TOKEN, ModelSteps

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import tokens
    from agentparallels.core.agentjob import AgentLimits
    from agentparallels.core.llm import Message, ModelRequest

LONG_SESSION = "agent-long-session"
"""Patch id: agent units started before it replay without compaction by the model and without
continue-as-new, a context-length error answered by ``ModelSteps``' own compaction. A run
started by continue-as-new (only patched runs continue as new) keeps the long session."""
KEEP_TURNS = 4
"""The newest messages (at least) never summarised: the model's working memory."""
SUMMARY_TOKENS = 1024
"""Longest summary, in tokens."""
RESULT_CHARS = 20_000
"""Most of one tool result the summariser reads (its head and tail)."""


def threshold_tokens(limits: AgentLimits, model: str) -> int:
    """Past this estimate a unit's request is compacted before it is sent."""
    window = limits.context_window or tokens.window_of(model)
    return int(window * limits.context_threshold)


def size(message: Message) -> int:
    """``message``'s estimated tokens, as ``estimate_tokens`` counts them."""
    calls = sum(len(json.dumps(c.arguments)) for c in message.tool_calls)
    return (len(message.content) + calls) // CHARS_PER_TOKEN


def split(
    messages: tuple[Message, ...], keep: int
) -> tuple[tuple[Message, ...], tuple[Message, ...], tuple[Message, ...]]:
    """(head, oldest, newest): the system messages and the task's first message; the turns
    that may be summarised; at least the newest ``keep`` messages, starting at a message that
    is no tool result (so every call stays with its results)."""
    system = tuple(m for m in messages if m.role == "system")
    turns = tuple(m for m in messages if m.role != "system")
    head, middle = system + turns[:1], turns[1:]
    cut = max(0, len(middle) - keep)
    while cut > 0 and middle[cut].role == "tool":
        cut -= 1
    return head, middle[:cut], middle[cut:]


def render(messages: tuple[Message, ...]) -> str:
    """The turns as a transcript for the summariser: text, tool calls and their results."""
    parts = []
    for m in messages:
        text = m.content
        if len(text) > RESULT_CHARS:
            half = RESULT_CHARS // 2
            text = f"{text[:half]}\n[... {len(text) - RESULT_CHARS} characters ...]\n{text[-half:]}"
        calls = "".join(f"\ncall {c.name} {json.dumps(c.arguments)}" for c in m.tool_calls)
        parts.append(f"[{m.role}]\n{text}{calls}")
    return "\n\n".join(parts)


async def compact(
    steps: ModelSteps, req: ModelRequest, limit: int, *, force: bool = False
) -> ModelRequest | None:
    """``req`` with its oldest turns summarised by the model, when its estimate passes
    ``limit`` tokens (or ``force``: the provider said it is too long); None when there is
    nothing old enough to summarise. The summariser reads as many of the oldest turns as fit
    in ``limit`` less its answer, never parting a call from its results; the rest stay for
    the next compaction, where this summary is among the oldest turns (summaries roll up)."""
    head, oldest, newest = split(req.messages, KEEP_TURNS)
    if not oldest:
        return None
    room = limit - SUMMARY_TOKENS - len(SUMMARISE_SYSTEM) // CHARS_PER_TOKEN
    taken, used = 0, 0
    while taken < len(oldest) and (taken == 0 or used + size(oldest[taken]) <= room):
        used += size(oldest[taken])
        taken += 1
    while taken < len(oldest) and oldest[taken].role == "tool":  # results stay with calls
        taken += 1
    chosen, rest = oldest[:taken], oldest[taken:]
    answer = await steps.ask(
        ModelRequest(
            model=req.model,
            base_url=req.base_url,
            messages=(
                Message(role="system", content=SUMMARISE_SYSTEM),
                Message(role="user", content=render(chosen)),
            ),
            max_tokens=SUMMARY_TOKENS,
            step=f"{req.step}: summarise {len(chosen)} messages",
        )
    )
    steps.compactions += 1
    summary = Message(
        role="user", content=f"{SUMMARY_PREFIX} ({len(chosen)} messages):\n{answer.text.strip()}"
    )
    return req.model_copy(update={"messages": (*head, summary, *rest, *newest)})


def history_full(limits: AgentLimits) -> bool:
    """This run's history has passed the unit's bounds, or the server suggests a new run."""
    info = workflow.info()
    return (
        info.is_continue_as_new_suggested()
        or info.get_current_history_length() >= limits.run_events
        or info.get_current_history_size() >= limits.run_bytes
    )


__all__ = [
    "KEEP_TURNS",
    "LONG_SESSION",
    "SUMMARY_TOKENS",
    "compact",
    "history_full",
    "render",
    "size",
    "split",
    "threshold_tokens",
]
