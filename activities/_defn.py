"""One place that makes a function the implementation of a step.

``@implements(steps.MERGE)`` registers the activity under the spec's stable name (a Python
rename cannot break a running workflow) and checks that its signature takes the spec's input
and returns its output; the timeouts and retry policy live in the spec
(:mod:`agentparallels.core.steps`), where workflow code reads them without importing this
floor. ``defn(name, **settings)`` does the same for an activity without a spec (a test's).
"""

from __future__ import annotations

import asyncio
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
    """With a ``heartbeat`` timeout, a background thread (a task, for an async step)
    heartbeats while the activity runs, so that a worker that dies mid-step is noticed within
    that timeout. The heartbeat says only that the worker lives: a step that can stall in
    another way (a silent model stream) watches for that itself."""
    body: Any = fn
    if config.heartbeat and inspect.iscoroutinefunction(fn):
        body = _heartbeating_async(fn, config.heartbeat)
    elif config.heartbeat:
        body = _heartbeating(fn, config.heartbeat)
    return activity.defn(name=name)(body)


def _remote() -> bool:
    """Whether the step runs as an activity of the server's that heartbeats: not when called
    as a plain function (a test, a bench), nor as a local activity, which the workflow task's
    timeout watches instead."""
    return activity.in_activity() and not activity.info().is_local


def _heartbeating_async(fn: Callable[P, Any], every: timedelta) -> Callable[P, Any]:
    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> Any:
        async def beat() -> None:  # at once, then every 1/5 of the timeout
            while True:
                activity.heartbeat()
                await asyncio.sleep(every.total_seconds() / 5)

        beating = asyncio.create_task(beat()) if _remote() else None
        try:
            return await fn(*args, **kwargs)
        finally:
            if beating is not None:
                beating.cancel()

    return run


def _heartbeating(fn: Callable[P, R], every: timedelta) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        done = threading.Event()
        ctx = contextvars.copy_context()

        def beat() -> None:  # at once (the step may have waited to start), then every 1/5
            if not _remote():
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
