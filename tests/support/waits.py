"""Waiting on a condition, never on a clock: the helpers tests poll a job's state with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio.client import WorkflowHandle

from agentparallels.core.models import Progress

__all__ = ["progress", "until"]


async def until(check: Callable[[], Any], what: str, timeout_s: float) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that; fail
    naming ``what`` after ``timeout_s`` (a generous bound for a busy machine, not a timing)."""

    async def poll() -> Any:
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.05)

    try:
        return await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def progress(handle: WorkflowHandle[Any, Any]) -> Progress:
    """The job's progress, as its query reports it."""
    return await handle.query("progress", result_type=Progress)
