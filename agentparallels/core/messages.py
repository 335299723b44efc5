"""Message types of steps whose values have no other home in the core: what a workflow sends
to the result check and to the pollers look-up, and what comes back."""

from __future__ import annotations

from agentparallels.core._value import Value
from agentparallels.core.models import JobRef

__all__ = ["PollersInput", "QueuePollers", "ResultCheckInput", "ShardClaim"]


class PollersInput(Value):
    task_queues: tuple[str, ...]
    grace_s: float = 2.0
    """Keep looking this long, in seconds, for queues without pollers (a worker starting up)."""
    activity: bool = False
    """Count the pollers of activity tasks (workers that only run activities, such as model
    calls) instead of workflow tasks."""


class QueuePollers(Value):
    task_queue: str
    workflow_pollers: int = 0
    """Workers (poller identities) the server has seen polling its workflow tasks lately."""
    activity_pollers: int = 0
    """The same for its activity tasks (looked at when asked)."""


class ShardClaim(Value):
    """What one shard says it did: its verified head and the files it changed there."""

    name: str
    head: str
    files_changed: tuple[str, ...]


class ResultCheckInput(Value):
    job: JobRef
    commit: str
    """The result about to be published."""
    shards: tuple[ShardClaim, ...]
    checked: str | None = None
    """The commit the checklist voted on, when not ``commit`` (it voted early, on the plan's
    change set): its tree must be ``commit``'s, else ``CheckedTreeDiffers``."""
