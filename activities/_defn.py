"""One place that names an activity and sets how it is run.

``@implements(steps.MERGE)`` registers the activity under a stable name (a Python
rename cannot break a running workflow) and attaches its timeouts and retry policy, so workflow
code calls ``workflows._call.call(merge, arg)`` without repeating them at each call site.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from agentparallels.core.errors import NON_RETRYABLE_TYPES

F = TypeVar("F", bound=Callable[..., Any])

HEARTBEAT = timedelta(seconds=5)
"""Heartbeat timeout of long steps: how soon a worker that died mid-step is noticed. Steps
heartbeat when they start and every fifth of it, and workers send each at once
(``worker.HEARTBEAT_EVERY``), so a live but starved worker has 4 s of slack before its step is
retried elsewhere (3 s was too little at a load average of 55 on 2 cores: one step timed out
eight times in a row and its job failed)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How Temporal runs one activity."""

    start_to_close: timedelta
    """Longest a single attempt may take."""
    heartbeat: timedelta | None = HEARTBEAT
    """A worker that dies mid-step is noticed after this, not after ``start_to_close``; the
    step heartbeats from a background thread while it runs."""
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial_interval=timedelta(milliseconds=200),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=8,
            non_retryable_error_types=NON_RETRYABLE_TYPES,
        )
    )
    """Retries are for infrastructure faults (a crashed worker, a git lock); a finite number."""
    cancellation: ActivityCancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    """A cancelled job waits until the step has really stopped before it rolls back."""

    def options(self) -> dict[str, Any]:
        return {
            "start_to_close_timeout": self.start_to_close,
            "heartbeat_timeout": self.heartbeat,
            "retry_policy": self.retry,
            "cancellation_type": self.cancellation,
        }


def defn(name: str, **settings: Any) -> Callable[[F], F]:
    """Register ``fn`` as the activity ``name`` with the given :class:`Settings` fields.

    With a ``heartbeat`` timeout, a background thread heartbeats while the (blocking) activity
    runs, so that a worker that dies mid-step is noticed within that timeout.
    """

    def wrap(fn: F) -> F:
        config = Settings(**settings)
        blocking = not inspect.iscoroutinefunction(fn)  # async steps heartbeat themselves
        body = _heartbeating(fn, config.heartbeat) if config.heartbeat and blocking else fn
        body = activity.defn(name=name)(body)
        body.__agentparallels_settings__ = config  # type: ignore[attr-defined]
        return body  # type: ignore[return-value]

    return wrap


def _heartbeating(fn: F, every: timedelta) -> F:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        done = threading.Event()
        ctx = contextvars.copy_context()

        def beat() -> None:  # at once (the step may have waited to start), then every 1/5
            if not activity.in_activity():  # called as a plain function (a test, a bench)
                return
            activity.heartbeat()
            while not done.wait(every.total_seconds() / 5):
                activity.heartbeat()

        thread = threading.Thread(target=ctx.run, args=(beat,), daemon=True)
        thread.start()
        try:
            return fn(*args, **kwargs)
        finally:
            done.set()
            thread.join()

    return run  # type: ignore[return-value]


def settings_of(fn: Callable[..., Any]) -> Settings:
    return fn.__agentparallels_settings__  # type: ignore[attr-defined]
