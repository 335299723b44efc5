"""One place that makes a function the implementation of a step.

``@implements(steps.MERGE)`` registers the activity under the spec's stable name (a Python
rename cannot break a running workflow) and checks that its signature takes the spec's input
and returns its output; the timeouts and retry policy live in the spec
(:mod:`agentparallels.core.steps`), where workflow code reads them without importing this
floor. ``defn(name, **settings)`` does the same for an activity without a spec (a test's).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from temporalio import activity
from temporalio.activity import _Definition

from agentparallels.core.steps import Settings, Step

__all__ = ["defn", "implements"]

P = ParamSpec("P")
R = TypeVar("R")


def implements(step: Step[Any, Any]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register ``fn`` as the activity of ``step``, after checking its types match the spec."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        body = _register(fn, step.name, step.settings)
        defined = _Definition.must_from_callable(body)
        if defined.arg_types != [step.input] or defined.ret_type != step.output:
            raise TypeError(
                f"{fn.__qualname__} takes {defined.arg_types} and returns {defined.ret_type}; "
                f"the step {step.name} says [{step.input}] -> {step.output}"
            )
        return body

    return wrap


def defn(name: str, **settings: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register ``fn`` as the activity ``name`` with the given :class:`Settings` fields."""
    return lambda fn: _register(fn, name, Settings(**settings))


def _register(fn: Callable[P, R], name: str, config: Settings) -> Callable[P, R]:
    """With a ``heartbeat`` timeout, a background thread heartbeats while the (blocking)
    activity runs, so that a worker that dies mid-step is noticed within that timeout."""
    blocking = not inspect.iscoroutinefunction(fn)  # async steps heartbeat themselves
    body = _heartbeating(fn, config.heartbeat) if config.heartbeat and blocking else fn
    return activity.defn(name=name)(body)


def _heartbeating(fn: Callable[P, R], every: timedelta) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
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

    return run
