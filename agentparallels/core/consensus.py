"""Values of the consensus patterns: options, the models' structured answers, and results.

The three answer shapes (:class:`Critique`, :class:`ReviewVote`, :class:`Ballot`) are
registered output models: a request names one in ``ModelRequest.output`` and the model-call
step validates the answer against it (re-prompting on an invalid one).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from agentparallels.core._value import Value
from agentparallels.core.llm import output_model


@output_model
class Critique(BaseModel):
    """A critic's answer on one draft."""

    accept: bool
    """True when the draft is good enough as it is."""
    feedback: str = ""
    """What to change (when not accepted), or why it is accepted."""


@output_model
class ReviewVote(BaseModel):
    """One reviewer's answer on a change."""

    approve: bool
    """True to approve the change, false to reject it."""
    reasons: str
    """Why, in a few sentences."""


@output_model
class Ballot(BaseModel):
    """One sample's answer in a vote."""

    choice: str
    """Exactly one of the options offered."""


class EvaluatorOptions(Value):
    """Bounds of an evaluator-optimizer loop."""

    max_rounds: int = Field(3, ge=1, le=20)
    """Most generate-then-critique rounds; the loop stops at the first accepted draft."""


class EvaluatorResult(Value):
    accepted: bool
    """Whether the critic accepted the last draft (False: the round cap was reached)."""
    rounds: int
    """Rounds run, the last included."""
    draft: str
    """The generator's last draft."""
    critique: str
    """The critic's feedback on that draft."""


class Vote(Value):
    reviewer: str
    """Who voted: ``<n>:<provider:model>@<temperature>``."""
    approve: bool
    reasons: str


class CommitteeVerdict(Value):
    approved: bool
    """At least ``quorum`` reviewers approved."""
    quorum: int
    approvals: int
    rejections: int
    votes: tuple[Vote, ...]
    """Every reviewer's vote, in reviewer order."""
    dissent: tuple[Vote, ...]
    """The votes against the verdict."""


class VotingOptions(Value):
    """A majority vote over independent samples of one question."""

    choices: tuple[str, ...] = Field(min_length=2)
    """The options, safest first: a tie goes to the tied option listed first."""
    samples: int = Field(5, ge=1, le=50)
    """Independent answers to draw (each its own recorded model call, with its own seed)."""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    """Sampling temperature: above zero, so the samples can differ."""

    @model_validator(mode="after")
    def _distinct(self) -> VotingOptions:
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {list(self.choices)}")
        return self


class MajorityResult(Value):
    choice: str
    """The option with the most votes; on a tie, the tied option listed first."""
    counts: dict[str, int]
    """Votes per option, in the options' order."""
    tie: bool
    """More than one option had the most votes (the tie rule decided)."""
    spoiled: int = 0
    """Answers naming no offered option; they count for nothing."""


class ReviewInput(Value):
    """What ``agentparallels review`` asks: a committee of models reviews a branch's diff."""

    repository: str
    """Absolute path of a local git repository, or a git URL."""
    ref: str
    """The branch (or commit) to review, e.g. ``agentparallels/<job-id>``."""
    base: str = "HEAD"
    """What it is compared with: the diff runs from their merge base to ``ref``."""
    models: tuple[str, ...] = Field(min_length=1)
    """``provider:model`` of the reviewers, used in turn (reviewer i gets ``models[i % n]``)."""
    base_url: str | None = None
    """For self-hosted or proxy endpoints."""
    reviewers: int = Field(3, ge=1, le=15)
    """Size of the committee."""
    quorum: int = Field(2, ge=1)
    """Approvals needed for the change to be approved."""
    temperatures: tuple[float, ...] = (0.0, 0.4, 0.8)
    """Sampling temperatures, used in turn, so the reviewers do not all think alike."""
    max_diff_chars: int = Field(60_000, ge=1_000)
    """Longest diff shown to a reviewer; a longer one is cut, and the reviewers are told so."""

    @model_validator(mode="after")
    def _quorum_fits(self) -> ReviewInput:
        if self.quorum > self.reviewers:
            raise ValueError(f"quorum {self.quorum} is larger than the {self.reviewers} reviewers")
        return self


class DiffRequest(Value):
    repository: str
    ref: str
    base: str
    max_chars: int


class ReviewDiff(Value):
    """The change under review: read by an activity, from git, when the review needs it."""

    base_commit: str
    """The merge base the diff starts from."""
    head_commit: str
    files: tuple[str, ...]
    text: str
    """The unified diff, cut at ``max_chars``."""
    truncated: bool = False


class ReviewResult(Value):
    verdict: Literal["approve", "reject"]
    ref: str
    base_commit: str
    head_commit: str
    files: tuple[str, ...]
    committee: CommitteeVerdict


__all__ = [
    "Ballot",
    "CommitteeVerdict",
    "Critique",
    "DiffRequest",
    "EvaluatorOptions",
    "EvaluatorResult",
    "MajorityResult",
    "ReviewDiff",
    "ReviewInput",
    "ReviewResult",
    "ReviewVote",
    "Vote",
    "VotingOptions",
]
