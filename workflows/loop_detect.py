"""Loop and deadlock detection: notice an agent going round in circles, and stop it.

An agent that edits the same file over and over, or repeats one action and gets the same
outcome each time, is stuck: at temperature 0 the same prompt gets the same answer, so the next
attempt will fail the same way. :class:`LoopDetector` keeps, in workflow state (rebuilt exactly
on replay), a count of attempts per file and a fingerprint (SHA-256) of each
(action, file, outcome) seen. When a file has had ``max_edits_per_file`` attempts, or one
fingerprint has been seen ``max_repeats`` times, it trips the circuit breaker it guards (if
any) and raises a non-retryable ``LoopDetected`` error naming the file and the action.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from pydantic import Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows.circuit_breaker import CircuitBreaker

with workflow.unsafe.imports_passed_through():
    from agentparallels.core._value import Value
    from agentparallels.core.errors import LOOP_DETECTED


class LoopLimits(Value):
    """When going round in circles becomes a loop."""

    max_edits_per_file: int = Field(10, ge=1)
    """Most attempts at one file, whatever their outcomes."""
    max_repeats: int = Field(3, ge=2)
    """How often one identical (action, file, outcome) may occur; at this count it is a loop."""


def fingerprint(action: str, path: str, *outcome: str) -> str:
    """A short, stable digest of one action on one file and what came of it."""
    digest = hashlib.sha256()
    for part in (action, path, *outcome):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class LoopDetector:
    """Counters of one workflow's actions; :meth:`record` each attempt."""

    def __init__(
        self, limits: LoopLimits | None = None, *, breaker: CircuitBreaker | None = None
    ) -> None:
        self.limits = limits or LoopLimits()
        self.breaker = breaker
        self.edits: Counter[str] = Counter()
        """Attempts per file."""
        self.seen: Counter[str] = Counter()
        """Occurrences per fingerprint."""

    def record(self, action: str, path: str, *outcome: str) -> None:
        """Count ``action`` on ``path`` with its ``outcome`` (e.g. the model's answer and the
        feedback it got); raise ``LoopDetected`` when a bound is crossed."""
        self.edits[path] += 1
        key = fingerprint(action, path, *outcome)
        self.seen[key] += 1
        if self.seen[key] >= self.limits.max_repeats:
            gist = " ".join(outcome[-1].split()) if outcome else ""
            self._trip(
                f"loop detected at {path}: {action} ended the same way {self.seen[key]} times "
                f"(fingerprint {key}: {gist[:300]}); stopped instead of repeating it"
            )
        if self.edits[path] >= self.limits.max_edits_per_file:
            self._trip(
                f"loop detected at {path}: {self.edits[path]} attempts at this one file "
                f"(limit {self.limits.max_edits_per_file}); the last {action} did not settle it"
            )

    def _trip(self, message: str) -> None:
        if self.breaker is not None:
            self.breaker.trip()
        raise ApplicationError(message, type=LOOP_DETECTED, non_retryable=True)


class ToolLoops:
    """Loop detection for a tool-using agent, that sees progress.

    It fingerprints each tool call (the tool and its normalised arguments) and knows the
    worktree's state after it (a tree id): the same call made ``repeat_limit`` times with no
    change to the worktree in between is a loop, and so is one file edited more than
    ``edits_without_check`` times with no passing check in between. The first time either
    happens, :meth:`after` returns one corrective message for the model; the next time, it
    raises ``LoopDetected`` naming the call or the file.
    """

    def __init__(self, repeat_limit: int = 3, edits_without_check: int = 8) -> None:
        self.repeat_limit = repeat_limit
        self.edits_without_check = edits_without_check
        self.state = ""
        """The worktree's state after the last call."""
        self.repeats: Counter[str] = Counter()
        """Calls since the worktree last changed, by fingerprint."""
        self.edits: Counter[str] = Counter()
        """Edits per file since the last passing check."""
        self.warned = False

    def after(self, call: str, state: str, *, edited: str | None, checked: bool | None) -> str:
        """Count one tool call (``call``: its fingerprint) that left the worktree at ``state``,
        edited ``edited`` (a path) and, for a check, passed or not. Returns a corrective
        message for the model ("" if none); raises ``LoopDetected`` once warned."""
        if state != self.state:
            self.repeats.clear()
            self.state = state
        self.repeats[call] += 1
        if checked:
            self.edits.clear()
        if edited:
            self.edits[edited] += 1
        if self.repeats[call] >= self.repeat_limit:
            return self._loop(
                f"the same call {call[:200]} {self.repeats[call]} times with no change to the "
                "files in between",
                "It gives the same result each time: do something different.",
            )
        if edited and self.edits[edited] > self.edits_without_check:
            return self._loop(
                f"{edited} edited {self.edits[edited]} times with no passing check in between",
                f"Stop editing {edited} blindly: run run_check, read the errors, then fix them.",
            )
        return ""

    def _loop(self, what: str, advice: str) -> str:
        if self.warned:
            raise ApplicationError(
                f"loop detected: {what}; stopped instead of repeating it",
                type=LOOP_DETECTED,
                non_retryable=True,
            )
        self.warned = True
        return f"Loop warning: {what}. {advice} Next time the unit is stopped."


__all__ = ["LoopDetector", "LoopLimits", "ToolLoops", "fingerprint"]
