"""Every activity as a typed spec: its name, input and output types, and how it is run.

Workflows call a step by its spec (``workflows._call.call(steps.MERGE, arg)``) and activities
implement one (``@implements(steps.MERGE)``), so the two floors share this module and never
import each other: a workflow names the step it needs, and the worker registers the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from temporalio.common import Priority, RetryPolicy
from temporalio.workflow import ActivityCancellationType

from agentparallels.core import names
from agentparallels.core.agentjob import (
    RepoMap,
    RepoMapInput,
    ToolOutcome,
    ToolRequest,
    UnitMerge,
    UnitMergeInput,
)
from agentparallels.core.agentresume import Recovered, RecoverInput
from agentparallels.core.checklist import CheckVote, VoteInput
from agentparallels.core.consensus import DiffRequest, ReviewDiff
from agentparallels.core.errors import NON_RETRYABLE_TYPES
from agentparallels.core.events import HookInput, HookRun
from agentparallels.core.llm import ModelAnswer, ModelRequest
from agentparallels.core.messages import PollersInput, QueuePollers, ResultCheckInput
from agentparallels.core.models import (
    CheckInput,
    CheckRun,
    EditBatchInput,
    EditBatchResult,
    JobRef,
    MergeInput,
    Plan,
    PlanInput,
    Published,
    PublishInput,
    RefUpdate,
    ShardRef,
    ShardResult,
)
from agentparallels.core.progress_log import OpenLogInput, ShardDoneInput

__all__ = [
    "AGENT_TOOL",
    "ALL",
    "CALL_MODEL",
    "CHECK_RESULT",
    "CLEANUP",
    "EDIT_FILES",
    "BOOKKEEPING",
    "HEARTBEAT",
    "MODEL_HEARTBEAT",
    "MERGE",
    "OPEN_LOG",
    "PLAN",
    "POLLERS",
    "PUBLISH",
    "READ_DIFF",
    "RECORD_SHARD",
    "REMOVE_WORKTREE",
    "RECOVER_UNITS",
    "REPO_MAP",
    "RUN_CHECK",
    "RUN_HOOK",
    "SET_REF",
    "Settings",
    "UNIT_MERGE",
    "Step",
    "VOTE",
]

In = TypeVar("In")
Out = TypeVar("Out", covariant=True)

HEARTBEAT = timedelta(seconds=4)
"""Heartbeat timeout of long steps: how soon a worker that died mid-step is noticed. Steps
heartbeat when they start and every fifth of it (0.8 s), and workers send each at once
(``worker.HEARTBEAT_EVERY``), so a live but starved worker has over 3 s of slack before its
step is retried elsewhere, and a killed worker's step is retried 3-4 s after the kill (3 s
was too little at a load average of 55 on 2 cores: one step timed out eight times in a row
and its job failed; 5 s left most recoveries after a kill near 9 s)."""


BOOKKEEPING = Priority(priority_key=1)
"""Task priority of the short steps between a job's edits (open the progress log, record a
shard, set a ref, remove a worktree, merge, check, publish, clean up): when every slot of
every worker is taken, a freed slot gets one of these before the next edit step (the default
priority is 3). Under faults, a killed worker's bookkeeping step, retried, waited behind
other jobs' edit steps for up to 10 s in ``make chaos``; its job could not move on
meanwhile, and it holds no slot for long."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How Temporal runs one activity."""

    start_to_close: timedelta
    """Longest a single attempt may take."""
    heartbeat: timedelta | None = HEARTBEAT
    """A worker that dies mid-step is noticed after this, not after ``start_to_close``; the
    step heartbeats from a background thread while it runs."""
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial_interval=timedelta(milliseconds=200),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=8,
            non_retryable_error_types=NON_RETRYABLE_TYPES,
        )
    )
    """Retries are for infrastructure faults (a crashed worker, a git lock); a finite number."""
    cancellation: ActivityCancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    """A cancelled job waits until the step has really stopped before it rolls back."""
    priority: Priority = Priority.default
    """The step's place in a backlog of its task queue (the workflow's by default):
    :data:`BOOKKEEPING` for short steps a job cannot move on without."""

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``workflow.execute_activity`` these settings stand for."""
        return {
            "start_to_close_timeout": self.start_to_close,
            "heartbeat_timeout": self.heartbeat,
            "retry_policy": self.retry,
            "cancellation_type": self.cancellation,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Step(Generic[In, Out]):
    """One activity as both floors see it: the workflow calls it, the activity implements it."""

    name: str
    """The activity's name on the wire (from :mod:`agentparallels.core.names`)."""
    input: type[In]
    output: type[Out]
    """The result type the workflow decodes (``type(None)`` for a step without one)."""
    settings: Settings


SHORT = timedelta(minutes=2)
LONG = timedelta(minutes=30)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
)
"""Finite and bounded: a model that keeps failing stops the step after six attempts. It lists
no error types: the model step marks each error it raises retryable or not itself
(``activities.llm._error``), and the list of every project type would cost about 400 bytes of
history per model call, in every agent turn."""
NONE = type(None)
MODEL_HEARTBEAT = timedelta(seconds=10)
"""Heartbeat timeout of the model step: a dead worker's call is asked again on another worker
after this. Longer than ``HEARTBEAT`` because a call is paid for and a retry asks the model
again: a live worker starved for a few seconds (two CPU hogs on 2 cores do that) must not
lose its call to a duplicate, as an edit step, idempotent, may."""

PLAN = Step(names.PLAN, PlanInput, Plan, Settings(LONG))
EDIT_FILES = Step(names.EDIT_FILES, EditBatchInput, EditBatchResult, Settings(LONG))
REMOVE_WORKTREE = Step(names.REMOVE_WORKTREE, ShardRef, NONE, Settings(SHORT, priority=BOOKKEEPING))
SET_REF = Step(names.SET_REF, RefUpdate, NONE, Settings(SHORT, priority=BOOKKEEPING))
MERGE = Step(names.MERGE, MergeInput, str, Settings(timedelta(minutes=10), priority=BOOKKEEPING))
PUBLISH = Step(names.PUBLISH, PublishInput, Published, Settings(SHORT, priority=BOOKKEEPING))
CLEANUP = Step(names.CLEANUP, JobRef, NONE, Settings(SHORT, priority=BOOKKEEPING))
CHECK_RESULT = Step(
    names.CHECK_RESULT, ResultCheckInput, NONE, Settings(timedelta(minutes=5), priority=BOOKKEEPING)
)
RUN_CHECK = Step(names.RUN_CHECK, CheckInput, CheckRun, Settings(LONG))
VOTE = Step(names.VOTE, VoteInput, CheckVote, Settings(LONG))
CALL_MODEL = Step(
    names.CALL_MODEL,
    ModelRequest,
    ModelAnswer,
    Settings(timedelta(minutes=10), heartbeat=MODEL_HEARTBEAT, retry=MODEL_RETRY),
)
"""Heartbeats on a timer like every step; a silent stream is the step's own
``ModelRequest.stream_timeout_s``."""
OPEN_LOG = Step(
    names.OPEN_LOG,
    OpenLogInput,
    dict[str, ShardResult],
    Settings(timedelta(minutes=10), priority=BOOKKEEPING),
)
RECORD_SHARD = Step(
    names.RECORD_SHARD, ShardDoneInput, NONE, Settings(timedelta(minutes=2), priority=BOOKKEEPING)
)
READ_DIFF = Step(names.READ_DIFF, DiffRequest, ReviewDiff, Settings(timedelta(minutes=5)))
POLLERS = Step(
    names.POLLERS,
    PollersInput,
    tuple[QueuePollers, ...],
    Settings(
        timedelta(seconds=90),
        heartbeat=None,
        retry=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200)),
    ),
)
RUN_HOOK = Step(names.RUN_HOOK, HookInput, HookRun, Settings(LONG))
AGENT_TOOL = Step(names.AGENT_TOOL, ToolRequest, ToolOutcome, Settings(LONG))
"""One tool call of an agent unit; the workflow sets a start-to-close fitting the command."""
REPO_MAP = Step(names.REPO_MAP, RepoMapInput, RepoMap, Settings(timedelta(minutes=5)))
UNIT_MERGE = Step(names.UNIT_MERGE, UnitMergeInput, UnitMerge, Settings(timedelta(minutes=10)))
RECOVER_UNITS = Step(names.RECOVER_UNITS, RecoverInput, Recovered, Settings(timedelta(minutes=10)))
"""A resumed agent job: find the earlier run's unit commits still in reach, and pin them."""

ALL: tuple[Step[Any, Any], ...] = (
    PLAN,
    EDIT_FILES,
    REMOVE_WORKTREE,
    SET_REF,
    MERGE,
    PUBLISH,
    CLEANUP,
    CHECK_RESULT,
    RUN_CHECK,
    VOTE,
    CALL_MODEL,
    OPEN_LOG,
    RECORD_SHARD,
    READ_DIFF,
    POLLERS,
    RUN_HOOK,
    UNIT_MERGE,
    AGENT_TOOL,
    REPO_MAP,
    RECOVER_UNITS,
)
"""Every step; the worker registers one implementation of each."""
