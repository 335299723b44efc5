"""Garbage collection for conversations: the oldest turns replaced by a model-written summary.

Before a model call the conversation is measured in tokens (``agentparallels.core.tokens``, a
deterministic count, so workflow code may do it). Past ``Compaction.threshold`` of the model's
window, the oldest turns (everything between the task, which stays, and the newest
``keep_turns``) go to a summarising model call, and one message holding the summary takes their
place. The summary is an ``llm.call`` activity's result, so it is in the history: a replay
uses the same summary instead of asking again. An earlier summary is among the oldest turns the
next time, so summaries roll up instead of piling up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import tokens
    from agentparallels.core.llm import Compaction, Message, ModelRequest

if TYPE_CHECKING:
    from agentparallels.workflows.model_step import ModelSteps

MESSAGE_OVERHEAD = 4
"""Tokens a chat format adds per message (role and separators), roughly."""
SUMMARY_PREFIX = "Summary of earlier turns"

SUMMARISE_SYSTEM = (
    "You compress the history of an agent's work so it can go on without it. Write a short "
    "summary of the turns you are given: decisions made, facts learnt, results of tool runs, "
    "and what is still open. Plain text, no preamble."
)


def count(text: str) -> int:
    """``tokens.count``, callable from workflow code. The first count in a process loads the
    encoding (the same installed file every time, so still deterministic) through tiktoken's
    plugin import, which the sandbox must let through unrestricted. Workers load it at start,
    so this matters only where nothing has yet: a standalone replayer, say."""
    with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
        return tokens.count(text)


def context_tokens(messages: tuple[Message, ...] | list[Message]) -> int:
    """The conversation's size in tokens."""
    return sum(count(m.content) + MESSAGE_OVERHEAD for m in messages)


def window(model: str, policy: Compaction) -> int:
    return policy.window_tokens or tokens.window_of(model)


def over_threshold(messages: tuple[Message, ...], model: str, policy: Compaction) -> bool:
    return context_tokens(messages) > policy.threshold * window(model, policy)


def split(
    messages: tuple[Message, ...], keep_turns: int
) -> tuple[tuple[Message, ...], tuple[Message, ...], tuple[Message, ...]]:
    """(head, oldest, newest): the system messages and the first turn (the task); the turns
    that can be summarised; the newest ``keep_turns`` turns."""
    system = tuple(m for m in messages if m.role == "system")
    turns = tuple(m for m in messages if m.role != "system")
    head = system + turns[:1]
    middle = turns[1:]
    cut = max(0, len(middle) - keep_turns)
    return head, middle[:cut], middle[cut:]


def transcript(turns: tuple[Message, ...]) -> str:
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in turns)


async def compact(
    steps: ModelSteps,
    messages: tuple[Message, ...],
    *,
    model: str,
    base_url: str | None,
    policy: Compaction,
    phase: str = "execute",
) -> tuple[Message, ...]:
    """``messages``, with the oldest turns summarised if the conversation is past the threshold;
    unchanged when it is not, or when there is nothing old enough to summarise. The summarising
    call takes what the summary request can hold (its window's threshold less the summary),
    oldest first; what does not fit is left for the next compaction."""
    if not over_threshold(messages, model, policy):
        return messages
    head, oldest, newest = split(messages, policy.keep_turns)
    if not oldest:
        return messages
    room = int(policy.threshold * window(model, policy)) - policy.summary_tokens
    room -= count(SUMMARISE_SYSTEM) + 2 * MESSAGE_OVERHEAD
    taken = 1
    while taken < len(oldest) and context_tokens(oldest[: taken + 1]) <= room:
        taken += 1
    chosen, rest = oldest[:taken], oldest[taken:]
    answer = await steps.ask(
        ModelRequest(
            model=model,
            base_url=base_url,
            messages=(
                Message(role="system", content=SUMMARISE_SYSTEM),
                Message(role="user", content=transcript(chosen)),
            ),
            max_tokens=policy.summary_tokens,
            step=f"compact: summarise {len(chosen)} messages",
        ),
        phase=phase,
    )
    steps.compactions += 1
    summary = Message(
        role="user", content=f"{SUMMARY_PREFIX} ({len(chosen)} messages):\n{answer.text.strip()}"
    )
    return (*head, summary, *rest, *newest)


__all__ = [
    "MESSAGE_OVERHEAD",
    "SUMMARISE_SYSTEM",
    "SUMMARY_PREFIX",
    "compact",
    "context_tokens",
    "count",
    "over_threshold",
    "split",
    "transcript",
    "window",
]
