"""The coding agent's review committee and approval gates, against a scripted model server on
loopback, real workers, git, ruff and the sandbox: reviewers read the change through tools and
vote; rejected work goes back to its unit; a committee that keeps rejecting refuses with the
dissent; a person approves or rejects the plan and the result, or lets the gate time out."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from agentparallels import worker
from agentparallels.core import names
from agentparallels.core.agentjob import PLANNER_MARKER, AgentResult, unit_marker
from agentparallels.core.agentreview import PlanApproval, ReviewOptions, reviewer_marker
from agentparallels.core.checklist import AWAITING_APPROVAL, ApprovalOptions, Decision
from agentparallels.core.errors import APPROVAL_DENIED, REVIEW_REJECTED
from agentparallels.core.events import EVENTS_QUERY, EventPage
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import CHECK, FILES, FINISH, edit, plan, tools, unit
from tests.support.cli import cli_env, run_cli, run_cli_async
from tests.support.ports import free_port
from tests.support.repos import git, make_repo, snapshot, src_layout_repo
from tests.support.waits import progress, until
from tests.test_agent import failure_of, job, start

DOCSTRING = '    """One, renamed."""\n'


def vote(approve: bool, reasons: str, *comments: tuple[str, str]) -> dict[str, Any]:
    said: dict[str, Any] = {"approve": approve, "reasons": reasons}
    if comments:
        said["comments"] = [{"path": p, "comment": c} for p, c in comments]
    return tools(("vote", said))


def rename_unit(fake: FakeLLM, *reworks: list[dict[str, Any]]) -> None:
    """One unit renaming ``old_name`` in pkg/a.py; each rework adds to its thread."""
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    fake.push_thread(
        unit_marker("rename"),
        tools(edit("pkg/a.py", "return 1", "return 1  # renamed")),
        tools(CHECK),
        tools(FINISH),
        *[answer for rework in reworks for answer in rework],
    )


DOCSTRING_REWORK = [
    tools(edit("pkg/a.py", "def old_name() -> int:\n", "def old_name() -> int:\n" + DOCSTRING)),
    tools(CHECK),
    tools(FINISH),
]


def requests_of(fake: FakeLLM, marker: str) -> list[Any]:
    return [r.body for r in fake.requests if marker in json.dumps(r.body)]


async def events_of(handle: WorkflowHandle) -> list[Any]:
    page: EventPage = await handle.query(EVENTS_QUERY, 0, result_type=EventPage)
    return list(page.events)


async def test_reviewers_reject_once_and_accept_after_the_units_rework(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The reviewer reads the change through tools (the diff is in no prompt), rejects with
    a comment on pkg/a.py; the unit owning it runs again with the comment, the merge is
    verified again and the reviewer approves: two rounds, two unit runs, four reviewer
    calls, the comment's fix on the branch."""
    repo = make_repo(tmp_path / "repo", FILES)
    rename_unit(fake, DOCSTRING_REWORK)
    fake.push_thread(
        reviewer_marker(1),
        tools(("changed_files", {})),
        tools(("file_diff", {"path": "pkg/a.py"})),
        vote(False, "undocumented", ("pkg/a.py", "give old_name a docstring")),
        tools(("file_diff", {"path": "pkg/a.py"})),
        vote(True, "documented now"),
    )
    review = ReviewOptions(reviewers=1, quorum=1)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None, review=review))
        result = await asyncio.wait_for(handle.result(), 240)
        events = await events_of(handle)
        shown = await progress(handle)
    assert result.outcome == "succeeded"
    [row] = shown.shards  # the unit's row counts both its runs
    assert row.tokens == sum(u.usage.total for u in result.units) > result.units[-1].usage.total
    assert [r.approved for r in result.reviews] == [False, True]
    assert result.reviews[0].votes[0].comments[0].comment == "give old_name a docstring"
    assert result.reviews[0].votes[0].tool_calls == 2
    assert [u.name for u in result.units] == ["rename", "rename"]
    assert DOCSTRING.strip() in git(repo, "show", f"{result.branch}:pkg/a.py")
    reviewer = requests_of(fake, reviewer_marker(1))
    assert len(reviewer) == 5
    assert "# renamed" not in json.dumps(reviewer[0])  # the change comes through the tools
    assert "+    return 1  # renamed" in json.dumps(reviewer[2]["messages"][-1])
    units = requests_of(fake, unit_marker("rename"))
    assert len(units) == 6
    assert "give old_name a docstring" in json.dumps(units[3]["messages"])
    assert "You rejected an earlier version of it: undocumented" in json.dumps(reviewer[3])
    assert [e.detail for e in events if e.kind == "reviewed" and e.shard is None] == [
        "round 1: rejected (0 of 1 approve, quorum 1)",
        "round 2: approved (1 of 1 approve, quorum 1)",
    ]


async def test_a_committee_that_keeps_rejecting_refuses_with_the_dissent(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Two reviewers, both needed: the second rejects, the unit reworks once, it rejects
    again; the job refuses naming the rejecting reviewer's reasons and comment (not the
    approving one's), and the repository is byte for byte as it was."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    rename_unit(fake, DOCSTRING_REWORK)
    fake.push_thread(reviewer_marker(1), vote(True, "looks right"), vote(True, "still right"))
    fake.push_thread(
        reviewer_marker(2),
        vote(False, "the name is wrong", ("pkg/a.py", "call it new_name")),
        vote(False, "the name is still wrong", ("pkg/a.py", "call it new_name, as asked")),
    )
    review = ReviewOptions(reviewers=2, quorum=2, rework_rounds=1)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, review=review)
        error = await failure_of(await start(client, task_queue, inp))
    assert error.type == REVIEW_REJECTED
    assert "after 1 rework round: rejected (1 of 2 approve, quorum 2)" in error.message
    assert "reviewer-2 (openai:fake-coder): the name is still wrong" in error.message
    assert "pkg/a.py: call it new_name, as asked" in error.message
    assert "still right" not in error.message
    assert len(requests_of(fake, unit_marker("rename"))) == 6  # one rework run, no more
    assert snapshot(repo) == before


async def wait_for_gate(handle: WorkflowHandle, fake: FakeLLM, planner_calls: int) -> Any:
    """Until the job waits at a gate after ``planner_calls`` planner requests."""

    async def waiting() -> Any:
        p = await handle.query(names.PROGRESS_QUERY)
        waits = p["phase"] == AWAITING_APPROVAL
        return waits and len(requests_of(fake, PLANNER_MARKER)) == planner_calls and p

    return await until(waiting, f"the job awaits approval after {planner_calls} plans", 120)


async def test_a_rejected_plan_goes_back_to_the_planner_with_the_comment(
    client: Client, address: str, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """`reject JOB --comment` at the plan gate: no unit has run, the planner's second request
    holds the comment, the new plan waits again and `approve` lets it run to success; both
    decisions, with who and why, are in the result and the events."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, plan(unit("everything", ["pkg/a.py"])))
    rename_unit(fake)  # the second plan, and its unit
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, plan_approval=PlanApproval(timeout_s=300))
        handle = await start(client, task_queue, inp)
        shown = await wait_for_gate(handle, fake, 1)
        assert "- everything [python]: do everything" in shown["message"]
        rejected = await run_cli_async(
            "reject", handle.id, "--comment", "name the unit after what it does",
            "--by", "ann", address=address, cache=tmp_path / "c",
        )  # fmt: skip
        assert rejected.returncode == 0, rejected.stderr
        assert "plan rejected by ann; it plans again" in rejected.stdout
        await wait_for_gate(handle, fake, 2)
        assert requests_of(fake, unit_marker("everything")) == []
        said = await handle.execute_update(
            names.APPROVE_UPDATE, Decision(reason="clear now", by="bob"), result_type=str
        )
        assert said == "plan approved"
        result: AgentResult = await asyncio.wait_for(handle.result(), 240)
        events = await events_of(handle)
    assert result.outcome == "succeeded" and [u.name for u in result.units] == ["rename"]
    second = requests_of(fake, PLANNER_MARKER)[1]["messages"]
    assert "name the unit after what it does" in second[-1]["content"]
    assert [(a.gate, a.outcome, a.by, a.reason) for a in result.approvals] == [
        ("plan", "rejected", "ann", "name the unit after what it does"),
        ("plan", "approved", "bob", "clear now"),
    ]
    decided = [e.detail for e in events if e.kind in ("approved", "rejected")]
    assert decided == [
        "the plan was rejected by ann: name the unit after what it does",
        "the plan was approved by bob: clear now",
    ]


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_require_approval_publishes_on_approve_and_rolls_back_on_reject(
    approve: bool, client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The gate opens after the checks, the invariant and the reviewers have voted (the
    UI's details say so); approve publishes, reject rolls back saying who rejected and why."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    rename_unit(fake)
    fake.push_thread(reviewer_marker(1), vote(True, "fine"))
    review = ReviewOptions(reviewers=1, quorum=1)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, review=review, approval=ApprovalOptions(timeout_s=300))
        handle = await start(client, task_queue, inp)
        shown = await wait_for_gate(handle, fake, 1)
        assert "- reviewers: approved (1 of 1 approve, quorum 1)" in shown["message"]
        assert "pytest" in shown["message"] and "- scope:" in shown["message"]
        assert git(repo, "branch", "--list", "agentparallels/*") == ""  # nothing published yet
        update = names.APPROVE_UPDATE if approve else names.REJECT_UPDATE
        decision = Decision(reason="ok" if approve else "not this week", by="carol")
        assert await handle.execute_update(update, decision, result_type=str) == (
            "approved" if approve else "rejected"
        )
        if approve:
            result = await asyncio.wait_for(handle.result(), 240)
        else:
            error = await failure_of(handle)
    if approve:
        assert result.published is not None and result.branch
        assert [(a.gate, a.outcome, a.by) for a in result.approvals] == [
            ("publish", "approved", "carol")
        ]
    else:
        assert error.type == APPROVAL_DENIED
        assert "the result was rejected by carol: not this week" in error.message
        assert snapshot(repo) == before


async def test_an_approval_that_times_out_denies_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    rename_unit(fake)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, approval=ApprovalOptions(timeout_s=2))
        error = await failure_of(await start(client, task_queue, inp))
    assert error.type == APPROVAL_DENIED
    assert "the result got no decision within 2s: denied" in error.message
    assert snapshot(repo) == before


GOOD = ["--task", "rename to_cents to as_cents", "--model", "openai:gpt-4.1"]
BAD_GATES = {
    "too many reviewers": (["--reviewers", "10"], "--reviewers 10: at most 9 reviewers"),
    "no reviewers": (["--reviewers", "0"], "argument --reviewers"),
    "quorum above the committee": (
        ["--reviewers", "2", "--quorum", "3"],
        "--quorum 3 cannot be met by 2 reviewers",
    ),
    "reviewer model alone": (
        ["--reviewer-model", "openai:gpt-4.1"],
        "--reviewer-model goes with --reviewers N",
    ),
    "bad reviewer model": (
        ["--reviewers", "1", "--reviewer-model", "gpt-4"],
        "--reviewer-model: model 'gpt-4' must be written provider:model",
    ),
    "rework rounds alone": (["--rework-rounds", "2"], "--rework-rounds goes with --reviewers"),
    "negative rework rounds": (
        ["--reviewers", "1", "--rework-rounds", "-1"],
        "--rework-rounds -1: give a whole number from 0 to 5",
    ),
    "timeout without a gate": (
        ["--approval-timeout", "60"],
        "--approval-timeout goes with --approve-plan or --require-approval",
    ),
}


@pytest.mark.parametrize("case", list(BAD_GATES))
def test_bad_review_and_approval_flags_exit_2(case: str, tmp_path: Path) -> None:
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    flags, expected = BAD_GATES[case]
    env = cli_env(f"127.0.0.1:{free_port()}", cache=tmp_path / "c", OPENAI_API_KEY="sk-test")
    done = run_cli("agent", str(repo), *GOOD, *flags, env=env)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(repo) == before


async def test_a_detached_job_with_no_worker_on_its_queue_says_so(
    address: str, client: Client, tmp_path: Path
) -> None:
    repo = src_layout_repo(tmp_path / "repo")
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    started = run_cli(
        "agent", str(repo), *GOOD, "--detach", "--no-worker", "--task-queue", queue,
        "--job-id", f"agent-{queue}", address=address, cache=tmp_path / "c",
    )  # fmt: skip
    await client.get_workflow_handle(f"agent-{queue}").terminate("test over")
    assert started.returncode == 0, started.stderr
    assert f"no worker polls task queue {queue!r} now" in started.stderr
    assert "agentparallels worker --task-queue" in started.stderr
