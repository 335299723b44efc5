"""Garbage collection for conversations: the oldest turns replaced by a model-written summary.

What the summary is made of: the summarising model call's system message, and the prefix of the
one message that takes the summarised turns' place. ``workflows/agent_context.py`` decides when
an agent unit's conversation is compacted and which turns go, and makes the call.
"""

from __future__ import annotations

SUMMARY_PREFIX = "Summary of earlier turns"

SUMMARISE_SYSTEM = (
    "You compress the history of an agent's work so it can go on without it. Write a short "
    "summary of the turns you are given: decisions made, facts learnt, results of tool runs, "
    "and what is still open. Plain text, no preamble."
)


__all__ = [
    "SUMMARISE_SYSTEM",
    "SUMMARY_PREFIX",
]
