"""Two-phase commit: every check votes before the irreversible step, and a person may have
the last word.

Phase one, :func:`prepare`: the checks vote on the prepared result at once (the test command,
lint, the diff-size limit, merge conflicts with the target's current commit). All yes, or the
job aborts with one error naming every "no" vote and why, and its saga rolls back.

Phase two, :class:`ApprovalGate`: when a person must approve, the job waits, showing the phase
``awaiting-approval`` in the UI, for the ``approve`` or ``reject`` update. Each update has a
validator: a decision for a job that is not waiting (not there yet, or already decided) is
refused without touching the job. ``reject`` or the timeout denies the commit: the job fails
with ``ApprovalDenied`` and rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows._call import call, cancel_requested

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.checklist import (
        AWAITING_APPROVAL,
        Checklist,
        CheckVote,
        Decision,
        VoteInput,
    )
    from agentparallels.core.errors import APPROVAL_DENIED, CHECK_FAILED
    from agentparallels.core.models import CheckInput, CheckRun, JobRef, Sandbox

NOT_AWAITING = "NotAwaitingApproval"
"""The type of a validator's refusal: the job is not waiting for a decision."""


async def prepare(
    job: JobRef,
    commit: str,
    checklist: Checklist,
    *,
    base_ref: str,
    test_cmd: str | None,
    rules: str,
    timeout_s: float,
    sandbox: Sandbox = Sandbox(),
    check_cmd: str | None = None,
    only: Collection[str] | None = None,
) -> tuple[CheckRun, ...]:
    """Phase one: let every check vote on ``commit``; returns the votes as check runs (the test
    command's first), or raises ``CheckFailed`` naming each no vote (the error's details are
    their names). ``check_cmd``, if given, votes as ``check``, after the others. ``only``:
    just the checks it names (``tests``, ``lint``, ``diff-size``, ``conflicts``, ``check``)."""

    def ballot(check: Literal["lint", "diff-size", "conflicts"]) -> asyncio.Future[CheckVote]:
        return asyncio.ensure_future(
            call(
                steps.VOTE,
                VoteInput(
                    check=check,
                    repository=job.repository,
                    job_id=job.job_id,
                    base_commit=job.base_commit,
                    commit=commit,
                    base_ref=base_ref,
                    rules=rules,
                    max_diff_lines=checklist.max_diff_lines,
                    timeout_s=timeout_s,
                    sandbox=sandbox,
                ),
                summary=f"vote: {check}",
                start_to_close_timeout=timedelta(seconds=timeout_s + 120),
            )
        )

    def command(check: str, cmd: str) -> asyncio.Future[CheckVote]:
        return asyncio.ensure_future(_command_vote(job, commit, check, cmd, timeout_s, sandbox))

    def wanted(check: str) -> bool:
        return only is None or check in only

    voters: list[asyncio.Future[CheckVote]] = []
    voters += [command("tests", test_cmd)] if test_cmd and wanted("tests") else []
    voters += [ballot("lint")] if checklist.lint and wanted("lint") else []
    voters += [ballot("diff-size")] if wanted("diff-size") else []
    voters += [ballot("conflicts")] if checklist.conflicts and wanted("conflicts") else []
    voters += [command("check", check_cmd)] if check_cmd and wanted("check") else []
    return _counted(list(await asyncio.gather(*voters)))


def _counted(votes: list[CheckVote]) -> tuple[CheckRun, ...]:
    """All yes: the votes as check runs. Else ``CheckFailed`` naming each no vote and why,
    its details the names of those checks."""
    no = [v for v in votes if not v.yes]
    if no:
        raise ApplicationError(
            f"the pre-completion checklist voted no ({', '.join(v.check for v in no)}):\n"
            + "\n".join(f"- {v.check}: {v.reason}" for v in no),
            *(v.check for v in no),  # the details: which checks voted no
            type=CHECK_FAILED,
            non_retryable=True,
        )
    return tuple(
        CheckRun(
            command=v.command if v.check == "tests" else f"{v.check}: {v.command}",
            exit_code=0,
            passed=True,
            output=v.reason,
        )
        for v in votes
    )


async def _command_vote(
    job: JobRef, commit: str, check: str, command: str, timeout_s: float, sandbox: Sandbox
) -> CheckVote:
    """A command's vote (the tests, or a check command): yes when it passes on ``commit``."""
    run = await call(
        steps.RUN_CHECK,
        CheckInput(job=job, commit=commit, command=command, timeout_s=timeout_s, sandbox=sandbox),
        summary=f"vote: {check} `{command}`",
        start_to_close_timeout=timedelta(seconds=timeout_s + 120),
    )
    what = "test command" if check == "tests" else "check command"
    reason = (
        f"`{command}` passed"
        if run.passed
        else f"{what} `{command}` failed (exit {run.exit_code}) on the merged "
        f"result:\n{run.output.strip()}"
    )
    return CheckVote(check=check, yes=run.passed, reason=reason, command=command)


State = Literal["not requested", "waiting", "approved", "rejected", "timed out"]


class ApprovalGate:
    """Phase two's wait for a person, kept in workflow state."""

    def __init__(self) -> None:
        self.state: State = "not requested"
        self.decision: Decision | None = None

    def validate(self, approve: bool, decision: Decision, job_phase: str) -> None:
        """Refuse a decision the job cannot take now (the update validator's body)."""
        verb = "approve" if approve else "reject"
        if self.state == "not requested":
            raise ApplicationError(
                f"cannot {verb}: the job is not awaiting approval (it is at: {job_phase})",
                type=NOT_AWAITING,
            )
        if self.state != "waiting":
            raise ApplicationError(
                f"cannot {verb}: the job was already {self.state}", type=NOT_AWAITING
            )
        if not approve and not decision.reason.strip():
            raise ApplicationError("a rejection needs a reason", type=NOT_AWAITING)

    def decide(self, approve: bool, decision: Decision) -> str:
        """Record the decision (the update handler's body); the waiting job goes on."""
        self.state = "approved" if approve else "rejected"
        self.decision = decision
        return self.state

    async def wait(self, limit: timedelta) -> Decision:
        """Wait for a decision; return an approval, raise ``ApprovalDenied`` otherwise. A job
        already asked to cancel (a step before outlived the request) does not wait for one."""
        if cancel_requested():
            raise asyncio.CancelledError()
        self.state = "waiting"
        try:
            await workflow.wait_condition(lambda: self.state != "waiting", timeout=limit)
        except TimeoutError:
            self.state = "timed out"
            raise ApplicationError(
                f"no decision within {limit.total_seconds():g}s: denied",
                type=APPROVAL_DENIED,
                non_retryable=True,
            ) from None
        assert self.decision is not None
        if self.state == "rejected":
            by = f" by {self.decision.by}" if self.decision.by else ""
            raise ApplicationError(
                f"rejected{by}: {self.decision.reason}", type=APPROVAL_DENIED, non_retryable=True
            )
        return self.decision


def awaiting_details(job_id: str, timeout: timedelta, since: str) -> str:
    """What the UI shows while the job waits."""
    return (
        f"**{AWAITING_APPROVAL}** since {since} (denied after {timeout.total_seconds():g}s)\n\n"
        f"Every check voted yes. Decide with `agentparallels approve {job_id}` or "
        f"`agentparallels reject {job_id} --reason ...`."
    )


__all__ = ["ApprovalGate", "NOT_AWAITING", "State", "awaiting_details", "prepare"]
