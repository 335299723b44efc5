"""Saga: compensating transactions for multi-step edits.

After each step that succeeded, the workflow registers the step that undoes it. If anything
fails, or the job is cancelled, :meth:`Saga.compensate` runs the compensations in reverse order.
Compensation is shielded from cancellation (a second cancel request cannot stop a half-done
rollback) and keeps going past a compensation that fails, so as much as possible is undone; the
failures are returned, and :func:`incomplete` makes them part of the workflow's failure: a
compensation that fails is reported, never swallowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.errors import ROLLBACK_INCOMPLETE

Compensation = Callable[[], Awaitable[Any]]
T = TypeVar("T")


class Saga:
    """An undo log of compensations, kept in workflow state (so it survives worker crashes)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Compensation]] = []

    def add(self, name: str, compensation: Compensation) -> None:
        """Register how to undo the step ``name``, which has just succeeded."""
        self._steps.append((name, compensation))

    @property
    def pending(self) -> list[str]:
        """Names of the registered steps, oldest first."""
        return [name for name, _ in self._steps]

    async def compensate(self) -> list[str]:
        """Undo every registered step, newest first; returns the errors of those that failed.
        A cancel request that arrives meanwhile is raised once the rollback is complete."""
        return await shielded(self._undo_all())

    async def _undo_all(self) -> list[str]:
        errors = []
        while self._steps:
            name, undo = self._steps.pop()
            try:
                await undo()
            except Exception as e:  # keep undoing the rest; report this one
                found = root_cause(e)
                detail = found.message if found is not None else str(e) or type(e).__name__
                workflow.logger.warning("compensation of %s failed: %s", name, detail)
                errors.append(f"{name}: {detail}")
        return errors


def root_cause(err: BaseException) -> ApplicationError | None:
    """The innermost application error under ``err`` (through child and activity errors)."""
    cause: BaseException | None = err
    found: ApplicationError | None = None
    while cause is not None:
        if isinstance(cause, ApplicationError):
            found = cause
        cause = cause.__cause__
    return found


def rolled_back(err: BaseException) -> ApplicationError:
    """The innermost application error under ``err`` (through child and activity errors), so a
    job fails with the message that says what went wrong, and its type, after its rollback.
    Whether the repository is as it was is for the client to check (``agentparallels`` does),
    not to assume."""
    found = root_cause(err)
    if found is None:
        return ApplicationError(str(err), type=type(err).__name__, non_retryable=True)
    message = f"{found.message}\nThe job was rolled back."
    return ApplicationError(message, type=found.type, non_retryable=True)


async def failure_of(step: Awaitable[object]) -> str | None:
    """Await ``step``; what it failed with, or None when it succeeded."""
    try:
        await step
    except Exception as e:  # a failed cleanup is reported with the job's failure
        cause = root_cause(e)
        return cause.message if cause is not None else str(e)
    return None


def incomplete(err: BaseException, failures: list[str]) -> ApplicationError:
    """The error to end with when the compensations in ``failures`` failed after ``err``: what
    went wrong first (and its type; a cancellation becomes ``RollbackIncomplete``), then which
    undo steps failed. Raise it ``from None``: it carries the whole story in its message."""
    found = root_cause(err)
    kind: str | None  # an application error may carry no type
    if isinstance(err, asyncio.CancelledError):
        first, kind = "cancelled", ROLLBACK_INCOMPLETE
    elif found is not None:
        first, kind = found.message, found.type
    else:
        first, kind = str(err) or type(err).__name__, type(err).__name__
    failed = "\n".join(f"- {failure}" for failure in failures)
    return ApplicationError(
        f"{first}\nThe rollback did not complete; these undo steps failed:\n{failed}",
        type=kind,
        non_retryable=True,
    )


async def shielded(work: Awaitable[T], *, raise_cancel: bool = True) -> T:
    """Await ``work`` to completion even if the workflow is cancelled meanwhile. A cancel that
    arrived is then raised (Temporal delivers it only once, so it must not be lost), unless
    ``raise_cancel`` is False: for work past the point of no return, where it is too late."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise  # the work itself was cancelled
            cancelled = True  # finish the work first
    result = task.result()
    if cancelled and raise_cancel:
        raise asyncio.CancelledError()
    if cancelled:
        workflow.logger.info("cancel request arrived past the point of no return: ignored")
    return result


__all__ = [
    "Compensation",
    "Saga",
    "failure_of",
    "incomplete",
    "rolled_back",
    "root_cause",
    "shielded",
]
