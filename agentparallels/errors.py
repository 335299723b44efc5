"""The project's errors.

Exceptions raised in this process::

    AgentParallelsError
     ├── UsageError      the user asked for something impossible; the CLI exits 2 with the message
     └── ServerError     the embedded Temporal server cannot be started or reached

Failures that cross Temporal (raised in activities, seen by workflows and clients) are
``temporalio.exceptions.ApplicationError`` with one of the ``type`` strings below. Every one of
them is non-retryable: it would fail the same way on every attempt.
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
"""Repeated identical verification failures opened the circuit breaker."""
CHECK_FAILED = "CheckFailed"
"""The pre-completion test command failed on the merged result."""
GIT_CONFLICT = "GitConflict"
"""The job's refs changed under it (someone else moved them): the job cannot continue safely."""

NON_RETRYABLE_TYPES = [BAD_INPUT, BREAKER_OPEN, CHECK_FAILED, GIT_CONFLICT]
"""Every project error type; registered as non-retryable on each activity's retry policy."""
