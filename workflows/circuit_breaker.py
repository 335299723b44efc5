"""Circuit breaker, iteration caps: stop retrying after repeated failures, stop loops.

An agent that fails the same way three times will very likely fail a fourth time; each retry
burns budget. The breaker counts *consecutive* failures (a success resets the count). At
``threshold`` it opens: callers must stop. With a ``cooldown`` it turns half-open once that much
workflow time has passed, lets one trial through, and closes on its success or re-opens on its
failure. State lives in workflow memory, so it is rebuilt exactly on replay. Something else
that knows the work is stuck (a loop detector) can :meth:`~CircuitBreaker.trip` it at once.

:class:`IterationCap` bounds a loop that has no natural end (an agent asked to iterate "until
done"): past ``limit`` iterations it raises a non-retryable ``IterationCapReached`` error that
says what was looping and why it stopped.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.errors import ITERATION_CAP

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(self, threshold: int = 3, cooldown: timedelta | None = None) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if cooldown is not None and cooldown <= timedelta(0):
            raise ValueError("cooldown must be positive")
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        """Consecutive failures so far."""
        self._opened_at: datetime | None = None
        self._trial = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.cooldown is not None and workflow.now() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allows(self) -> bool:
        """Whether a call may go ahead now. Half-open, only one trial is let through until its
        outcome is recorded."""
        state = self.state
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return state == "closed"

    @property
    def reopens_at(self) -> datetime | None:
        """When the cool-down ends and a trial may go (None: closed, no cool-down, or a
        trial already out): a workflow that waits for it sets a timer for this moment."""
        if self._opened_at is None or self.cooldown is None or self._trial:
            return None
        return self._opened_at + self.cooldown

    def abandon_trial(self) -> None:
        """The trial ended without saying anything about the protected call (it failed for
        another reason, or its caller went away): the next caller may try instead."""
        self._trial = False

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._trial = False

    def trip(self) -> None:
        """Open now, whatever the count (the cool-down, if any, starts now)."""
        self._trial = False
        self._opened_at = workflow.now()

    def record_failure(self) -> State:
        """Count a failure; returns the state after it."""
        self._trial = False
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            self._opened_at = workflow.now()
        return self.state


class IterationCap:
    """At most ``limit`` iterations of one loop; call :meth:`tick` at the top of each."""

    def __init__(self, limit: int, what: str = "loop") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.what = what
        """Named in the error, e.g. ``"review of src/app.py"``."""
        self.count = 0

    def tick(self, why: str = "") -> int:
        """Count one iteration and return its number (from 1); past the cap, raise an error
        naming the loop, the cap and ``why`` (what the last iteration left unresolved)."""
        if self.count >= self.limit:
            reason = f": {why}" if why else ""
            raise ApplicationError(
                f"{self.what} stopped after {self.limit} iterations, its cap{reason}",
                type=ITERATION_CAP,
                non_retryable=True,
            )
        self.count += 1
        return self.count


__all__ = ["CircuitBreaker", "IterationCap", "State"]
