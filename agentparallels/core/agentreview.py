"""Values of the coding agent's review and approval gates (see docs/agent.md).

Review (evaluator-optimizer with a committee): after verify, ``reviewers`` models read the
merged change file by file through read-only tools and each ends with one ``vote`` call; a
quorum of approvals passes it. A rejection's comments go back, as a note, to the units that
own the commented files, for at most ``rework_rounds`` rounds; then the job refuses with the
dissent.

Approval (two-phase commit): a person approves the plan before any edit (``plan`` gate) and/or
the checked, reviewed result before it is published (``publish`` gate); every decision is an
:class:`ApprovalRecord` saying who decided, why, and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from agentparallels.core._value import Value
from agentparallels.core.tools import ToolSpec

MAX_REVIEWERS = 9
VOTE_TOOL = "vote"
"""The reviewer's last call: its vote, reasons and comments (the structured answer)."""
Gate = Literal["plan", "publish"]


def reviewer_marker(n: int) -> str:
    """Text in the system message of reviewer ``n`` (every round), and nowhere else."""
    return f"You are reviewer `{n}` of a coding job's change"


class ReviewOptions(Value):
    """A committee of reviewers votes on the merged, verified change."""

    reviewers: int = Field(ge=1, le=MAX_REVIEWERS)
    quorum: int = Field(ge=1)
    """Approvals the change needs."""
    model: str | None = None
    """``provider:model`` of the reviewers; None: the job's model."""
    rework_rounds: int = Field(1, ge=0, le=5)
    """Times rejected work goes back to its units before the job refuses."""
    turns: int = Field(16, ge=2)
    """Model calls per reviewer and round; a reviewer that has not voted by then rejects."""

    @model_validator(mode="after")
    def _quorum_fits(self) -> ReviewOptions:
        if self.quorum > self.reviewers:
            raise ValueError(f"quorum {self.quorum} is larger than the {self.reviewers} reviewers")
        return self


class ReviewComment(Value):
    path: str
    """The file the comment is about (routes it to the unit that owns the file)."""
    comment: str


class ReviewerVote(Value):
    reviewer: str
    """``reviewer-<n> (<provider:model>)``."""
    approve: bool
    reasons: str
    comments: tuple[ReviewComment, ...] = ()
    voted: bool = True
    """False: the reviewer ran out of turns without voting (counted as a rejection)."""
    turns: int = 0
    tool_calls: int = 0


class ReviewRound(Value):
    """One round of the committee's votes on one commit."""

    round: int
    commit: str
    approved: bool
    quorum: int
    votes: tuple[ReviewerVote, ...]

    @property
    def dissent(self) -> tuple[ReviewerVote, ...]:
        """The rejecting votes (of a rejected round: the reasons the job refuses with)."""
        return tuple(v for v in self.votes if not v.approve)


class PlanApproval(Value):
    """A person approves the plan before any edit; a rejection's comment re-plans."""

    timeout_s: float = Field(24 * 3600.0, gt=0)
    replans: int = Field(2, ge=0, le=10)
    """Rejected plans that go back to the planner; one more rejection refuses the job."""


class ApprovalRecord(Value):
    """One decision at an approval gate: what, who, why, when."""

    gate: Gate
    outcome: Literal["approved", "rejected", "timed out"]
    by: str = ""
    reason: str = ""
    time: datetime


def dissent_text(rounds: Sequence[ReviewRound]) -> str:
    """Each rejecting reviewer's reasons and comments in the last round, one block each."""
    last = rounds[-1]
    lines = []
    for v in last.dissent:
        lines.append(f"- {v.reviewer}: {v.reasons.strip()}")
        lines += [f"    {c.path}: {c.comment.strip()}" for c in v.comments]
    return "\n".join(lines)


def _tool(name: str, description: str, required: Sequence[str], **props: object) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=description,
        parameters={"type": "object", "properties": props, "required": list(required)},
    )


_STR, _INT = {"type": "string"}, {"type": "integer"}
REVIEW_TOOLS: tuple[ToolSpec, ...] = (
    _tool("changed_files", "List the files the change adds, modifies or deletes.", ()),
    _tool("file_diff", "The change's unified diff of one file.", ("path",), path=_STR),
    _tool("read_file", "Read lines of a file as the change leaves it (1-based, inclusive).",
          ("path",), path=_STR, start=_INT, end=_INT),
    _tool("search", "Search the changed repository's files for a regular expression.",
          ("pattern",), pattern=_STR, path=_STR),
    _tool(VOTE_TOOL, "Your vote, last and alone: approve or not, why, and comments on "
          "files that must change (each to the unit that owns the file).",
          ("approve", "reasons"), approve={"type": "boolean"}, reasons=_STR,
          comments={"type": "array", "items": {"type": "object", "properties": {
              "path": _STR, "comment": _STR}, "required": ["path", "comment"]}}),
)  # fmt: skip
"""The reviewers' tools: every one but ``vote`` is a read-only ``agent.tool`` step."""


__all__ = [
    "MAX_REVIEWERS",
    "REVIEW_TOOLS",
    "VOTE_TOOL",
    "ApprovalRecord",
    "Gate",
    "PlanApproval",
    "ReviewComment",
    "ReviewOptions",
    "ReviewRound",
    "ReviewerVote",
    "dissent_text",
    "reviewer_marker",
]
