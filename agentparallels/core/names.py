"""Every name that crosses the wire: workflows, activities, task queues, signals, queries and
updates.

Temporal finds a workflow's code, an activity, a signal handler by these strings, and recorded
histories and running jobs hold them: a Python rename must never change them, so each is
spelled here once and used by its definition and by every caller.
"""

from __future__ import annotations

__all__ = [
    "AGENT",
    "AGENT_TOOL",
    "AGENT_UNIT",
    "APPROVE_UPDATE",
    "BUDGET_UPDATE",
    "CALL_MODEL",
    "CHECK_RESULT",
    "CLEANUP",
    "EDIT_FILES",
    "EVENTS_QUERY",
    "EVENTS_SIGNAL",
    "GRANT_SIGNAL",
    "MERGE",
    "MODEL_CAPABILITY",
    "OPEN_LOG",
    "ORCHESTRATOR",
    "PAUSED_QUERY",
    "PAUSE_SIGNAL",
    "PIPELINE",
    "PLAN",
    "POLLERS",
    "PROGRESS_QUERY",
    "PUBLISH",
    "READ_DIFF",
    "RECORD_SHARD",
    "RECOVER_UNITS",
    "REPO_MAP",
    "REFACTOR",
    "REJECT_UPDATE",
    "REMOVE_WORKTREE",
    "RECALL_SIGNAL",
    "RESERVE_SIGNAL",
    "REVIEW",
    "RUN_CHECK",
    "RUN_HOOK",
    "SETTLE_SIGNAL",
    "SET_REF",
    "SHARD",
    "SHARD_PROGRESS_SIGNAL",
    "SUBSCRIBE_SIGNAL",
    "TOOL_FLAG_SIGNAL",
    "TASK_QUEUE",
    "UNIT_MERGE",
    "UNPAUSE_SIGNAL",
    "VOTE",
    "capability_queue",
    "credential_queue",
]

# Workflows
REFACTOR = "RefactorWorkflow"
SHARD = "ShardWorkflow"
REVIEW = "ReviewWorkflow"
ORCHESTRATOR = "OrchestratorWorkflow"
PIPELINE = "PipelineWorkflow"
AGENT = "AgentWorkflow"
AGENT_UNIT = "AgentUnitWorkflow"

# Activities
PLAN = "refactor.plan"
EDIT_FILES = "refactor.edit_files"
REMOVE_WORKTREE = "git.remove_worktree"
SET_REF = "git.set_ref"
MERGE = "git.merge"
PUBLISH = "git.publish"
CLEANUP = "git.cleanup"
CHECK_RESULT = "git.check_result"
RUN_CHECK = "check.run"
VOTE = "check.vote"
CALL_MODEL = "llm.call"
OPEN_LOG = "progress.open"
RECORD_SHARD = "progress.shard_done"
READ_DIFF = "review.diff"
POLLERS = "route.pollers"
RUN_HOOK = "hooks.run"
AGENT_TOOL = "agent.tool"
REPO_MAP = "agent.repo_map"
UNIT_MERGE = "agent.merge_units"
RECOVER_UNITS = "agent.recover_units"

# Task queues
TASK_QUEUE = "agentparallels"
"""The default task queue of jobs and workers (``AGENTPARALLELS_TASK_QUEUE`` overrides it)."""
MODEL_CAPABILITY = "model"
"""Model calls run on ``<queue>.model`` of the workflow's queue, where a worker can rate-limit
them (``agentparallels worker --model-calls-per-second``)."""


def capability_queue(task_queue: str, capability: str) -> str:
    """The task queue of workers that have ``capability``: ``<task_queue>.<capability>``."""
    return f"{task_queue}.{capability}"


def credential_queue(model_queue: str, provider: str) -> str:
    """Where the workers holding ``provider``'s key take model calls: ``<model_queue>.<p>``."""
    return f"{model_queue}.{provider}"


# Signals
EVENTS_SIGNAL = "job_events"
"""A shard's events, sent to its job."""
SUBSCRIBE_SIGNAL = "subscribe"
PAUSE_SIGNAL = "pause"
UNPAUSE_SIGNAL = "unpause"
SHARD_PROGRESS_SIGNAL = "shard_progress"
"""A shard's progress, sent to its job."""
RESERVE_SIGNAL = "budget_reserve"
SETTLE_SIGNAL = "budget_settle"
GRANT_SIGNAL = "budget_grant"
RECALL_SIGNAL = "budget_recall"
TOOL_FLAG_SIGNAL = "tool_flagged"
"""An agent unit to its job: a tool call outside the repository's baseline."""

# Queries
PROGRESS_QUERY = "progress"
EVENTS_QUERY = "events_since"
PAUSED_QUERY = "paused"

# Updates
APPROVE_UPDATE = "approve"
BUDGET_UPDATE = "budget_add"
"""``agentparallels budget JOB --add N``: a job paused for budget gets more tokens."""
REJECT_UPDATE = "reject"
