"""``agentparallels review``: a committee of models reviews the diff of a branch."""

from __future__ import annotations

import argparse
import subprocess
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError

from agentparallels import validate
from agentparallels.attributes import register as register_attributes
from agentparallels.cli.common import (
    DEFAULT_TASK_QUEUE,
    err,
    in_process_worker,
    job_queue,
    positive,
    report_failure,
)
from agentparallels.client import connect
from agentparallels.core import attributes, names
from agentparallels.core.consensus import ReviewInput, ReviewResult
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import split_model

__all__ = ["WORKFLOW", "add_parser", "check", "report", "review_command"]

WORKFLOW = names.REVIEW


def add_parser(sub: Any) -> None:
    review = sub.add_parser(
        "review", help="have a committee of models review a branch; exit 0 approved, 1 rejected"
    )
    review.add_argument("repository", help="path of a local git repository, or a git URL")
    review.add_argument("--ref", required=True, help="the branch to review, e.g. a job's branch")
    review.add_argument("--base", default="HEAD", help="compare with this ref (default: HEAD)")
    review.add_argument("--reviewers", type=positive, default=3, help="committee size (3)")
    review.add_argument("--quorum", type=positive, default=2, help="approvals needed (2)")
    review.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="PROVIDER:MODEL",
        help="the reviewers' model; repeat to mix models (used in turn)",
    )
    review.add_argument("--base-url", help="an OpenAI-compatible or proxy endpoint")
    review.add_argument(
        "--task-queue",
        help=f"run the review on this queue (default: {DEFAULT_TASK_QUEUE}; with this "
        "process's own worker, a queue of its own)",
    )
    review.add_argument(
        "--no-worker", action="store_true", help="do not run a worker in this process"
    )
    review.set_defaults(handler=review_command)


def _git(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def check(args: argparse.Namespace) -> ReviewInput:
    """The review as asked, or a UsageError saying what is wrong; nothing runs before."""
    if args.quorum > args.reviewers:
        raise UsageError(
            f"--quorum {args.quorum} is larger than the committee (--reviewers "
            f"{args.reviewers}): choose a quorum of at most {args.reviewers}"
        )
    for model in args.model:
        try:
            split_model(model)
        except ValueError as e:
            raise UsageError(str(e)) from None
    validate.endpoint(args.base_url)
    repository = validate.repository(args.repository)
    if not validate.is_url(repository):
        for flag, ref in (("--ref", args.ref), ("--base", args.base)):
            if _git(repository, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode:
                raise UsageError(
                    f"{flag} '{ref}' not found in {repository}: pass an existing branch, tag "
                    "or commit"
                )
        if _git(repository, "diff", "--quiet", f"{args.base}...{args.ref}").returncode == 0:
            raise UsageError(
                f"nothing to review: {args.ref} brings no change to {args.base}; "
                "pass the branch to review with --ref"
            )
    return ReviewInput(
        repository=repository,
        ref=args.ref,
        base=args.base,
        models=tuple(args.model),
        base_url=args.base_url,
        reviewers=args.reviewers,
        quorum=args.quorum,
    )


def report(r: ReviewResult) -> str:
    c = r.committee
    lines = [
        f"review of {r.ref} ({len(r.files)} files, {r.base_commit[:12]}..{r.head_commit[:12]}): "
        f"{'APPROVED' if c.approved else 'REJECTED'}, {c.approvals} of {len(c.votes)} approve "
        f"(quorum {c.quorum})"
    ]
    for v in c.votes:
        lines.append(
            f"  reviewer {v.reviewer}: {'approve' if v.approve else 'reject'}: {v.reasons}"
        )
    if c.dissent:
        lines.append("dissent: " + "; ".join(f"reviewer {v.reviewer}" for v in c.dissent))
    return "\n".join(lines)


async def review_command(args: argparse.Namespace) -> int:
    inp = check(args)
    task_queue = job_queue(args)
    client = await connect(announce=err)
    await register_attributes(client)
    name = Path(attributes.shown(inp.repository)).name or "repo"
    handle = await client.start_workflow(
        WORKFLOW,
        inp,
        id=f"review-{name}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=ReviewResult,
        static_summary=f"Review {inp.ref} of {name}: {inp.reviewers} reviewers, "
        f"quorum {inp.quorum}",
    )
    err(f"review {handle.id} started: {inp.reviewers} reviewers, quorum {inp.quorum}")
    async with in_process_worker(client, task_queue, not args.no_worker):
        try:
            result = await handle.result()
        except WorkflowFailureError as e:
            return report_failure(handle.id, e)
    print(report(result))
    return 0 if result.verdict == "approve" else 1
