"""Job events and user hooks: the values that choreography sends around.

A job publishes :class:`JobEvent` values (it started, a file was edited, a check failed, a
breaker opened, it is paused, it ended ...). Subscribers get them as the ``job_events`` signal;
``agentparallels events JOB`` reads them with the ``events_since`` query. :class:`Hook` values
are user commands the job runs before and after its steps; a hook that fails vetoes the step.
The workflow side lives in ``workflows/events.py`` and ``workflows/hooks.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, TypeGuard, get_args

from pydantic import Field

from agentparallels.core import names, redact
from agentparallels.core._value import Sandbox, Value
from agentparallels.core.errors import UsageError

EventKind = Literal[
    "started",
    "resumed",
    "planned",
    "unit_done",
    "file_edited",
    "check_failed",
    "breaker_opened",
    "tool_flagged",
    "budget_paused",
    "budget_added",
    "budget_refused",
    "provider_breaker_opened",
    "provider_breaker_closed",
    "waiting_for_approval",
    "approved",
    "rejected",
    "reviewed",
    "paused",
    "unpaused",
    "done",
    "failed",
    "cancelled",
]
ENDINGS: frozenset[str] = frozenset({"done", "failed", "cancelled"})
"""The kinds that end a job: nothing comes after one of them."""

EVENTS_SIGNAL = names.EVENTS_SIGNAL
"""The signal a subscriber workflow receives: a list of :class:`JobEvent`, oldest first."""
EVENTS_QUERY = names.EVENTS_QUERY
"""The query ``events_since(cursor) -> EventPage`` on a job."""
SUBSCRIBE_SIGNAL = names.SUBSCRIBE_SIGNAL
"""Signal a job with a workflow id to make that workflow a subscriber."""
PAUSE_SIGNAL = names.PAUSE_SIGNAL
UNPAUSE_SIGNAL = names.UNPAUSE_SIGNAL
PAUSED_QUERY = names.PAUSED_QUERY


class JobEvent(Value):
    """One thing that happened in a job."""

    seq: int
    """Position in the job's event stream, from 1; a cursor names the last one seen."""
    kind: EventKind
    time: datetime
    """When the workflow recorded it (workflow time, so a replay records the same)."""
    shard: str | None = None
    file: str | None = None
    detail: str = ""
    """What a person needs to know: the failing command and its output, the job's outcome.
    A job records it with any credential in a URL replaced by ``***`` (:mod:`.redact`)."""

    def line(self) -> str:
        """The event as ``agentparallels events`` prints it: one line, and the rest of a
        detail of several lines (a command's output) indented below it."""
        where = " ".join(part for part in (self.shard and f"[{self.shard}]", self.file) if part)
        text = f"{self.time.astimezone():%H:%M:%S} #{self.seq:<4} {self.kind:<14}"
        if where:
            text += f" {where}"
        first, *more = redact.text(self.detail).strip().splitlines() or [""]
        if first:
            text = f"{text.rstrip()}: {first}"
        return "\n".join([text.rstrip(), *(f"    {line}" for line in more)])


class EventPage(Value):
    """The answer to ``events_since(cursor)``: the events after the cursor that are still kept."""

    events: tuple[JobEvent, ...]
    last: int
    """The newest event's number (0 before the first): the next cursor once these are read."""
    dropped: int = 0
    """Events after the cursor no longer kept (only the newest are kept); see ``counts``."""
    counts: dict[str, int] = {}
    """Events of each kind since the job started, kept or not."""


HookPoint = Literal["pre-edit", "post-edit", "pre-merge"]
HOOK_POINTS: tuple[str, ...] = get_args(HookPoint)


class Hook(Value):
    """A user command run at one point of the job; a non-zero exit vetoes that step."""

    point: HookPoint
    command: str = Field(min_length=1)


class HookInput(Value):
    """One hook run: where (a worktree of the job at ``commit``) and for which files."""

    job_id: str
    repository: str
    point: HookPoint
    command: str
    worktree: str
    """Name of the job's worktree to run it in (a shard's, or a scratch one)."""
    commit: str
    files: tuple[str, ...]
    shard: str | None = None
    timeout_s: float
    sandbox: Sandbox = Sandbox()
    """How the command is confined, as the job's other tool commands (``--sandbox``)."""


class HookRun(Value):
    exit_code: int
    output: str = ""
    passed: bool


def parse_hooks(specs: Iterable[str]) -> tuple[Hook, ...]:
    """``--hook POINT=CMD`` flags as hooks, in the order given; a UsageError for a bad one."""
    hooks = []
    for spec in specs:
        point, sep, command = spec.partition("=")
        point = point.strip()
        if not sep or not command.strip():
            raise UsageError(f"--hook takes POINT=CMD (e.g. pre-edit='make lint'), got '{spec}'")
        if not _is_point(point):
            raise UsageError(
                f"unknown hook point '{point}' in --hook; use one of {', '.join(HOOK_POINTS)}"
            )
        hooks.append(Hook(point=point, command=command.strip()))
    return tuple(hooks)


def _is_point(text: str) -> TypeGuard[HookPoint]:
    """Whether ``text`` names a hook point (so the type checker knows it is one)."""
    return text in HOOK_POINTS


__all__ = [
    "ENDINGS",
    "EVENTS_QUERY",
    "EVENTS_SIGNAL",
    "EventKind",
    "EventPage",
    "HOOK_POINTS",
    "Hook",
    "HookInput",
    "HookPoint",
    "HookRun",
    "JobEvent",
    "PAUSED_QUERY",
    "PAUSE_SIGNAL",
    "SUBSCRIBE_SIGNAL",
    "UNPAUSE_SIGNAL",
    "parse_hooks",
]
