"""The project's errors.

Exceptions raised in this process::

    AgentParallelsError
     ├── UsageError      the user asked for something impossible; the CLI exits 2 with the message
     ├── ServerError     the embedded Temporal server cannot be started or reached
     ├── BlobMissing     a history refers to a stored payload this blob store lacks
     └── CodecKeyError   an encrypted payload's key is not in this process's keyring

Failures that cross Temporal (raised in activities, seen by workflows and clients) are
``temporalio.exceptions.ApplicationError`` with one of the ``type`` strings below. Every one of
them but ``ModelUnavailable`` and ``ModelRateLimited`` is non-retryable: it would fail the same
way on every attempt. The steps mark each error they raise themselves; most steps' retry
policies also list the non-retryable types, the model step's lists none (see ``core.steps``).
"""

from __future__ import annotations


class AgentParallelsError(Exception):
    """Base of the project's own exceptions."""


class UsageError(AgentParallelsError):
    """Bad input: the message says what is wrong and how to fix it."""


class ServerError(AgentParallelsError):
    """The Temporal server could not be started or reached."""


BAD_INPUT = "BadInput"
"""The job's input is wrong (unknown symbol, name taken, missing ref): reported as a usage error."""
BREAKER_OPEN = "BreakerOpen"
"""Repeated identical verification failures opened the circuit breaker; or the model provider
stayed unavailable through every probe of the job's provider breaker."""
CHECK_FAILED = "CheckFailed"
"""A pre-completion check (the test command, lint, diff size, conflicts) voted no."""
APPROVAL_DENIED = "ApprovalDenied"
"""The prepared result was not approved: rejected by a person, or no decision in time."""
HOOK_VETOED = "HookVetoed"
"""A user hook command (``--hook``) exited non-zero: the step it guards is vetoed."""
GIT_CONFLICT = "GitConflict"
"""The job's refs changed under it (someone else moved them): the job cannot continue safely."""
SANDBOX_UNAVAILABLE = "SandboxUnavailable"
"""The worker cannot run tool commands in the sandbox the job asked for (no bwrap)."""
SANDBOX_DENIED = "SandboxDenied"
"""A tool command failed on a path the sandbox hides (or would run in a folder holding the
worker's own files): the message names the path and the flag that exposes it."""
SCOPE_VIOLATION = "ScopeViolation"
"""An edit reached outside its shard's files (bulkhead): nothing of it is kept."""
ROLLBACK_INCOMPLETE = "RollbackIncomplete"
"""A cancelled job could not undo everything it did: the message names the undo steps that
failed (a failed job keeps its own error type and says the same)."""
CHECKED_TREE_DIFFERS = "CheckedTreeDiffers"
"""The checklist voted early, on the plan's change set, and the result's tree is not that
change set's (a hook changed a file, a shard took another way): the job lets the checks vote
again on the result itself. Never a job's failure."""
RESULT_MISMATCH = "ResultMismatch"
"""The result about to be published differs from what the shards made and report (a file
reported changed but not, a blob other than the shard's, a path no shard touched)."""

MODEL_RETRYABLE = "ModelUnavailable"
"""A model call failed in a way a later attempt can get past (overloaded, down, cut off)."""
MODEL_THROTTLED = "ModelRateLimited"
"""The provider throttled the call (429 without ``insufficient_quota``): retried after the
provider's ``retry-after``; it says the provider is up, so the job's provider breaker does not
count it as an outage."""
MODEL_REJECTED = "ModelRequestRejected"
"""The provider refused the request as malformed or unknown (400, 404, 422)."""
MODEL_AUTH = "ModelAuthFailed"
"""The provider refused the worker's API key (401, 403)."""
MODEL_CONFIG = "ModelConfigError"
"""The worker cannot call the model: no API key in its environment, a bad model name."""
QUOTA_EXHAUSTED = "QuotaExhausted"
"""The account has no credit left: retrying cannot help."""
CONTENT_FILTERED = "ContentFiltered"
"""The provider withheld the answer."""
CONTEXT_LENGTH = "ContextLengthExceeded"
"""The prompt does not fit the model's window: answered by compacting, never by a blind retry."""
BUDGET_EXCEEDED = "BudgetExceeded"
"""The next model call would spend more tokens than the job's budget allows."""
OUTPUT_INVALID = "OutputInvalid"
"""The model's answer still did not validate after every re-prompt."""
NO_CAPABILITY = "NoCapability"
"""A sub-task of a kind no registered specialist does, or whose workers are not running."""
LOOP_DETECTED = "LoopDetected"
"""An agent kept editing one file, or repeated one action with the same outcome."""
ITERATION_CAP = "IterationCapReached"
"""A loop ran into its cap on iterations."""
STAGE_FAILED = "StageFailed"
"""A pipeline stage failed; the message names it."""
SUMMARY_TOO_LARGE = "SummaryTooLarge"
"""A map step returned more than a summary: large artefacts belong in git or the blob store."""
PLAN_INVALID = "PlanInvalid"
"""The planner's plan stayed invalid after it was sent back with its errors."""
REVIEW_REJECTED = "ReviewRejected"
"""The agent's review committee still rejected the change after every rework round."""

NON_RETRYABLE_TYPES = [
    BAD_INPUT, BREAKER_OPEN, CHECK_FAILED, GIT_CONFLICT, SANDBOX_UNAVAILABLE, SCOPE_VIOLATION,
    SANDBOX_DENIED, MODEL_REJECTED, MODEL_AUTH,
    MODEL_CONFIG, QUOTA_EXHAUSTED, CONTENT_FILTERED, CONTEXT_LENGTH, BUDGET_EXCEEDED,
    OUTPUT_INVALID, APPROVAL_DENIED, NO_CAPABILITY, LOOP_DETECTED, ITERATION_CAP, STAGE_FAILED,
    SUMMARY_TOO_LARGE, HOOK_VETOED, RESULT_MISMATCH, ROLLBACK_INCOMPLETE, PLAN_INVALID,
    REVIEW_REJECTED, CHECKED_TREE_DIFFERS,
]  # fmt: skip
"""Every project error type; registered as non-retryable on each activity's retry policy."""

__all__ = [
    "APPROVAL_DENIED",
    "AgentParallelsError",
    "BAD_INPUT",
    "BREAKER_OPEN",
    "BUDGET_EXCEEDED",
    "CHECKED_TREE_DIFFERS",
    "CHECK_FAILED",
    "CONTENT_FILTERED",
    "CONTEXT_LENGTH",
    "GIT_CONFLICT",
    "HOOK_VETOED",
    "ITERATION_CAP",
    "LOOP_DETECTED",
    "MODEL_AUTH",
    "MODEL_CONFIG",
    "MODEL_REJECTED",
    "PLAN_INVALID",
    "MODEL_RETRYABLE",
    "MODEL_THROTTLED",
    "NON_RETRYABLE_TYPES",
    "NO_CAPABILITY",
    "OUTPUT_INVALID",
    "QUOTA_EXHAUSTED",
    "RESULT_MISMATCH",
    "REVIEW_REJECTED",
    "ROLLBACK_INCOMPLETE",
    "SANDBOX_DENIED",
    "SANDBOX_UNAVAILABLE",
    "SCOPE_VIOLATION",
    "STAGE_FAILED",
    "SUMMARY_TOO_LARGE",
    "ServerError",
    "UsageError",
]
