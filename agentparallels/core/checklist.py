"""Values of two-phase commit: the pre-completion checklist and the human approval gate.

Phase one (prepare): every check votes yes or no on the job's merged result. Phase two
(commit): the result is published only if every vote is yes and, when the job asks for it,
after a person approves it through the ``approve`` update; ``reject`` or a timeout denies it,
and the job rolls back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentparallels.core import names
from agentparallels.core._value import Sandbox, Value

APPROVE_UPDATE = names.APPROVE_UPDATE
REJECT_UPDATE = names.REJECT_UPDATE
AWAITING_APPROVAL = "awaiting-approval"
"""The job's phase (``AgentPhase`` search attribute) while it waits for a decision."""


class Checklist(Value):
    """The checks that vote on a job's merged result before it is published (the test
    command, when the job has one, votes too)."""

    lint: bool = True
    """Vote with ruff's verification rules on every changed Python file of the merged result."""
    max_diff_lines: int | None = Field(None, ge=1)
    """Most changed lines (added plus removed) the result may have; None: no limit."""
    conflicts: bool = True
    """Vote on whether the result still merges cleanly into the base ref's current commit
    (someone may have moved it while the job ran)."""


class ApprovalOptions(Value):
    """A person must approve the prepared result before it is published."""

    timeout_s: float = Field(24 * 3600.0, gt=0)
    """Seconds to wait for ``approve`` or ``reject``; then the job is denied and rolled back."""


CheckName = Literal["lint", "diff-size", "conflicts"]


class VoteInput(Value):
    """One check's vote on a commit of a job."""

    check: CheckName
    repository: str
    job_id: str
    base_commit: str
    """The commit the job started from: the diff is measured against it."""
    commit: str
    """The merged result being voted on."""
    base_ref: str = "HEAD"
    """For ``conflicts``: the ref the result is meant for, read again now."""
    rules: str = "E9,F63,F7,F82"
    """For ``lint``: the ruff rules."""
    max_diff_lines: int | None = None
    """For ``diff-size``: the limit."""
    timeout_s: float = 300.0
    sandbox: Sandbox = Sandbox()
    """How the lint vote's ruff run is confined (the job's ``--sandbox``)."""


class CheckVote(Value):
    check: str
    """``tests``, ``lint``, ``diff-size`` or ``conflicts``."""
    yes: bool
    reason: str
    """What was found: why it is a yes, or what makes it a no."""
    command: str = ""
    """What ran, for the report."""


class Decision(Value):
    """The argument of the ``approve`` and ``reject`` updates."""

    reason: str = ""
    """Why; required to reject."""
    by: str = ""
    """Who decided (free text, e.g. a user name)."""


__all__ = [
    "APPROVE_UPDATE",
    "AWAITING_APPROVAL",
    "ApprovalOptions",
    "CheckName",
    "CheckVote",
    "Checklist",
    "Decision",
    "REJECT_UPDATE",
    "VoteInput",
]
