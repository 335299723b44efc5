"""Calling an activity with the settings declared beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.activities._defn import settings_of

T = TypeVar("T")


async def call(
    fn: Callable[..., T], arg: Any, *, summary: str | None = None, **overrides: Any
) -> T:
    """Run activity ``fn`` on ``arg`` with its declared timeouts and retry policy; ``overrides``
    replace single options (e.g. a longer ``start_to_close_timeout``)."""
    options = settings_of(fn).options() | overrides
    return await workflow.execute_activity(fn, arg, summary=summary, **options)  # type: ignore[return-value]
