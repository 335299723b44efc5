"""MapReduce for agents: sub-agents return condensed summaries, not everything they saw.

A child workflow per input (the *map*), at most ``parallel`` at once (built on
:func:`workflows.fanout.gather_bounded`, so the first failure cancels the rest), each returning
a short summary; then a *reduce* over the summaries in the inputs' order. What a child reads
(files, diffs, long model answers) stays where it is, in git or the blob store, and travels by
reference (a path, a commit, a key): the parent's history holds only the summaries, so its size
does not grow with the size of what the children read.

``max_summary_bytes`` makes the contract checkable: a child whose result serializes to more
fails the map step with an error naming it. (The check runs when the result arrives, so it
cannot keep that first oversized result out of history; it stops the job before more follow.)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from pydantic import Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows.fanout import gather_bounded

with workflow.unsafe.imports_passed_through():
    from agentparallels.core._value import Value
    from agentparallels.core.errors import SUMMARY_TOO_LARGE

R = TypeVar("R")
T = TypeVar("T")


class MapReduceOptions(Value):
    """Bounds of one map step."""

    parallel: int = Field(4, ge=1, le=64)
    """Most children running at once (backpressure on workers and model quotas)."""
    max_summary_bytes: int = Field(16 * 1024, ge=1)
    """Largest result a child may return, in bytes as serialized; over it is an error."""
    task_queue: str | None = None
    """Where the children run (default: the parent's queue)."""


async def map_children(
    child: Any,
    inputs: Sequence[Any],
    options: MapReduceOptions = MapReduceOptions(),
    *,
    result_type: type[R] | None = None,
    id_prefix: str | None = None,
    summary: Callable[[int, Any], str] | None = None,
) -> list[R]:
    """Run workflow ``child`` (a ``run`` method or a name) once per input, bounded; return the
    results in the inputs' order. Child ids are ``<id_prefix>/<index>`` (default prefix: the
    parent's id), so a replayed or retried parent finds the same children."""
    prefix = id_prefix or workflow.info().workflow_id

    async def one(i: int, arg: Any) -> R:
        child_id = f"{prefix}/{i}"
        result = await workflow.execute_child_workflow(
            child,
            arg,
            id=child_id,
            static_summary=summary(i, arg) if summary else None,
            task_queue=options.task_queue or None,
            result_type=result_type,
        )
        check_summary(child_id, result, options.max_summary_bytes)
        return result

    return await gather_bounded(
        [partial(one, i, arg) for i, arg in enumerate(inputs)], options.parallel
    )


def check_summary(child_id: str, result: Any, max_bytes: int) -> None:
    """Fail, naming the child, if its result serializes to more than ``max_bytes``: a child
    returns a condensed summary, and large artefacts stay in git or the blob store."""
    size = workflow.payload_converter().to_payloads([result])[0].ByteSize()
    if size > max_bytes:
        raise ApplicationError(
            f"map step {child_id} returned {size} bytes, over the {max_bytes}-byte limit for a "
            "summary: return a condensed result and leave large artefacts in git or the blob "
            "store, passed by reference",
            type=SUMMARY_TOO_LARGE,
            non_retryable=True,
        )


async def map_reduce(
    child: Any,
    inputs: Sequence[Any],
    reduce: Callable[[list[R]], T | Awaitable[T]],
    options: MapReduceOptions = MapReduceOptions(),
    **kwargs: Any,
) -> T:
    """:func:`map_children`, then ``reduce`` over the summaries: plain workflow code, or an
    async function (e.g. one that calls a synthesising activity or model)."""
    reduced = reduce(await map_children(child, inputs, options, **kwargs))
    return await reduced if inspect.isawaitable(reduced) else reduced


__all__ = ["MapReduceOptions", "check_summary", "map_children", "map_reduce"]
