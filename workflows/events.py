"""Event-driven choreography: a job publishes what happens in it, and can be paused.

:class:`JobEvents` is the building block a job workflow holds. It

- records :class:`~agentparallels.core.events.JobEvent` values in workflow state (the newest
  ``keep`` of them, plus a count of every kind), time-stamped with ``workflow.now()``;
- answers the ``events_since(cursor)`` query, which ``agentparallels events`` polls;
- delivers every event to subscriber workflows (named in the job's input or by the
  ``subscribe`` signal) as the ``job_events`` signal: one sender per subscriber, never awaited
  by the job, batching whatever piled up while the previous signal was in flight. A subscriber
  that does not exist (or has ended) is dropped with a warning; it never fails the job;
- holds a :class:`PauseGate`: the ``pause`` and ``unpause`` signals, passed on to the children
  that were attached to it.

Children (shards) do not publish themselves: they hand their events to the parent with their
progress reports, so subscribers see one ordered stream per job.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows._call import cancel_requested

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import redact
    from agentparallels.core.events import (
        EVENTS_QUERY,
        EVENTS_SIGNAL,
        PAUSE_SIGNAL,
        PAUSED_QUERY,
        SUBSCRIBE_SIGNAL,
        UNPAUSE_SIGNAL,
        EventKind,
        EventPage,
        JobEvent,
    )

KEEP = 1000
"""Events a job keeps in its state; older ones are only counted."""
PAGE = 200
"""Most events one ``events_since`` answer carries."""
BATCH = 100
"""Most events one ``job_events`` signal carries."""
HOLDS_THROUGH_PAUSE = frozenset({"rolling back", "failed", "cancelled", "done"})
"""Phases shown even while paused: ending or undoing a job does not wait for ``unpause``."""


def ending(err: BaseException) -> tuple[EventKind, str]:
    """The last event of a job that raised ``err``: cancelled, or failed with the innermost
    application error's message (through child workflow and activity errors)."""
    if isinstance(err, asyncio.CancelledError):
        return "cancelled", "cancelled: everything the job did was rolled back"
    found: ApplicationError | None = None
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError):
            found = cause
        cause = cause.__cause__
    return "failed", found.message if found else f"{type(err).__name__}: {err}"


def child_event(
    kind: EventKind, *, shard: str, file: str | None = None, detail: str = ""
) -> JobEvent:
    """An event of a child workflow, for its parent's log (which numbers it)."""
    return JobEvent(seq=0, kind=kind, time=workflow.now(), shard=shard, file=file, detail=detail)


class PauseGate:
    """The ``pause`` / ``unpause`` signals of a workflow, and :meth:`wait` before each step.

    A paused workflow finishes the step it is in, then waits in :meth:`wait` until unpaused.
    ``on_change`` is called with the new state when it changes. Create it in the workflow's
    ``__init__``, so the signals are handled from the workflow's first task on.
    """

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        self.paused = False
        self._on_change = on_change
        workflow.set_signal_handler(PAUSE_SIGNAL, lambda: self.set(True))
        workflow.set_signal_handler(UNPAUSE_SIGNAL, lambda: self.set(False))
        workflow.set_query_handler(PAUSED_QUERY, lambda: self.paused)

    def set(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            if self._on_change is not None:
                self._on_change(paused)

    async def wait(self) -> None:
        """Return at once when not paused (no yield, nothing in the history); otherwise when
        the workflow is unpaused. Raise ``CancelledError`` when the workflow was asked to
        cancel, paused or not: pausing holds new steps, never the rollback, and a cancel
        request that the step before outlived must not let the next one start (see
        :mod:`agentparallels.workflows._call`)."""
        if self.paused:
            await workflow.wait_condition(
                lambda: not self.paused or workflow.cancellation_reason() is not None
            )
        if workflow.cancellation_reason() is not None:
            if cancel_requested():
                raise asyncio.CancelledError()
            if self.paused:  # a job started before the patch: only an unpause ends the wait
                await workflow.wait_condition(lambda: not self.paused)


class _Subscriber:
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.queue: list[JobEvent] = []
        self.sender: asyncio.Future[None] | None = None
        self.gone = False


class JobEvents:
    """A job's event log, its subscribers, and its pause gate (see the module docstring)."""

    def __init__(self, *, keep: int = KEEP, on_pause: Callable[[bool], None] | None = None) -> None:
        self._kept: deque[JobEvent] = deque(maxlen=keep)
        self._counts: Counter[str] = Counter()
        self._last = 0
        self._subscribers: dict[str, _Subscriber] = {}
        self._children: list[workflow.ChildWorkflowHandle[Any, Any]] = []
        self._on_pause = on_pause
        self.gate = PauseGate(self._paused)
        workflow.set_query_handler(EVENTS_QUERY, self.since)
        workflow.set_signal_handler(SUBSCRIBE_SIGNAL, self.subscribe)

    def record(
        self,
        kind: EventKind,
        *,
        shard: str | None = None,
        file: str | None = None,
        detail: str = "",
        time: datetime | None = None,
    ) -> JobEvent:
        """Record an event (at ``time``, default now) and send it to every subscriber. Its
        detail is shown with credentials in URLs replaced by ``***``: events reach subscribers,
        the CLI and the UI (a job's repository URL, a git error quoting it)."""
        self._last += 1
        event = JobEvent(
            seq=self._last,
            kind=kind,
            time=time or workflow.now(),
            shard=shard,
            file=file,
            detail=redact.text(detail),
        )
        self._kept.append(event)
        self._counts[kind] += 1
        for sub in self._subscribers.values():
            self._send(sub, [event])
        return event

    def extend(self, events: Iterable[JobEvent]) -> None:
        """Record events a child reported (numbered again, in this log's order)."""
        for e in events:
            self.record(e.kind, shard=e.shard, file=e.file, detail=e.detail, time=e.time)

    def since(self, cursor: int) -> EventPage:
        """The events after ``cursor`` (at most a page of them), oldest first."""
        first = self._kept[0].seq if self._kept else self._last + 1
        dropped = max(0, first - cursor - 1)
        events = tuple(e for e in self._kept if e.seq > cursor)[:PAGE]
        return EventPage(
            events=events,
            last=events[-1].seq if events else max(cursor, self._last),
            dropped=dropped,
            counts=dict(self._counts),
        )

    def subscribe(self, workflow_id: str) -> None:
        """Make ``workflow_id`` a subscriber; it first gets the events kept so far."""
        if workflow_id in self._subscribers:
            return
        sub = self._subscribers[workflow_id] = _Subscriber(workflow_id)
        self._send(sub, list(self._kept))

    def attach(self, child: workflow.ChildWorkflowHandle[Any, Any]) -> None:
        """Have a started child follow this job's pause state until it ends."""
        self._children.append(child)
        if self.gate.paused:
            self._forward(child, PAUSE_SIGNAL)

    async def finish(self, kind: EventKind, detail: str = "") -> None:
        """Record the job's last event and wait until every subscriber has been sent all."""
        self.record(kind, detail=detail)
        while pending := [
            s.sender for s in self._subscribers.values() if s.sender and not s.sender.done()
        ]:
            await asyncio.gather(*pending)

    def _paused(self, paused: bool) -> None:
        self.record("paused" if paused else "unpaused")
        self._children = [c for c in self._children if not c.done()]
        for child in self._children:
            self._forward(child, PAUSE_SIGNAL if paused else UNPAUSE_SIGNAL)
        if self._on_pause is not None:
            self._on_pause(paused)

    def _forward(self, child: workflow.ChildWorkflowHandle[Any, Any], signal: str) -> None:
        async def send() -> None:
            try:
                await child.signal(signal)
            except Exception as e:  # it ended meanwhile: nothing to pause
                workflow.logger.info("%s not passed on to %s: %s", signal, child.id, e)

        asyncio.ensure_future(send())

    def _send(self, sub: _Subscriber, events: list[JobEvent]) -> None:
        if sub.gone or not events:
            return
        sub.queue.extend(events)
        if sub.sender is None or sub.sender.done():
            sub.sender = asyncio.ensure_future(self._deliver(sub))

    async def _deliver(self, sub: _Subscriber) -> None:
        """Send the subscriber's queue, in order, a batch per signal, until it is empty."""
        handle = workflow.get_external_workflow_handle(sub.workflow_id)
        while sub.queue and not sub.gone:
            batch, sub.queue = sub.queue[:BATCH], sub.queue[BATCH:]
            try:
                await handle.signal(EVENTS_SIGNAL, batch)
            except Exception as e:  # it does not exist, or has ended: stop sending to it
                workflow.logger.warning(
                    "subscriber %s dropped: cannot signal it: %s", sub.workflow_id, e
                )
                sub.gone = True
                sub.queue.clear()


__all__ = [
    "BATCH",
    "HOLDS_THROUGH_PAUSE",
    "JobEvents",
    "KEEP",
    "PAGE",
    "PauseGate",
    "child_event",
    "ending",
]
