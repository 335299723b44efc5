"""Fan-out / fan-in with a bound on concurrency.

Runs one piece of work per item (typically a child workflow), at most ``limit`` at once, and
gathers the results in the items' order. The first failure cancels the work still running, waits
until it has finished cancelling (children roll themselves back), and is then raised. Cancelling
the caller cancels all the work the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from temporalio import workflow

T = TypeVar("T")


async def gather_bounded(work: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run every ``work()`` with at most ``limit`` running at once; results in order."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    slots = asyncio.Semaphore(limit)
    failed = False

    async def bounded(make: Callable[[], Awaitable[T]]) -> T:
        nonlocal failed
        async with slots:
            if failed:  # a slot freed by a failure: start nothing new
                raise asyncio.CancelledError()
            try:
                return await make()
            except (Exception, asyncio.CancelledError):  # not GeneratorExit (eviction)
                failed = True  # set while the slot is still held
                raise

    tasks = [asyncio.ensure_future(bounded(make)) for make in work]
    if not tasks:
        return []
    try:
        pending: Collection[asyncio.Task[T]] = set(tasks)
        while pending:
            _, pending = await workflow.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            errors = (t.exception() for t in tasks if t.done() and not t.cancelled())
            error = next((e for e in errors if e is not None), None)
            if error is not None:
                raise error
        return [t.result() for t in tasks]
    except (Exception, asyncio.CancelledError):  # not GeneratorExit (eviction)
        await _cancel_and_wait(tasks)
        raise


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[T]]) -> None:
    for task in tasks:
        task.cancel()
    while not all(t.done() for t in tasks):
        try:
            await workflow.wait([t for t in tasks if not t.done()])
        except asyncio.CancelledError:
            continue  # cancelled again while waiting: the work must still finish cancelling


__all__ = ["gather_bounded"]
