"""The coding agent's one ledger: a job out of budget pauses (phase ``budget``) and goes on
with ``agentparallels budget JOB --add N``, or refuses at ``--budget-timeout`` and rolls back;
a provider outage opens the job's provider breaker, which waits, probes and closes; a provider
down for good ends the job after its probes; an auth error fails at once.

Against a scripted model server on loopback speaking the providers' wire format, real
workers, git and the sandbox; the budget command runs as the installed CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from agentparallels import worker
from agentparallels.callgraph import local_activity
from agentparallels.core.agentjob import PLANNER_MARKER, AgentLimits, unit_marker
from agentparallels.core.attributes import PHASE
from agentparallels.core.errors import BREAKER_OPEN, BUDGET_EXCEEDED, MODEL_AUTH
from agentparallels.core.events import EVENTS_QUERY, EventPage
from agentparallels.core.llm import BudgetLimits
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import CHECK, FILES, FINISH, edit, plan, tools, unit
from tests.support.cli import run_cli_async
from tests.support.repos import git, make_repo, snapshot
from tests.support.waits import progress, until
from tests.test_agent import failure_of, job, start

MAX_TOKENS = 1000
"""Each call's estimate is its prompt plus this: the budgets below are set against it."""


def used(n: int) -> dict[str, Any]:
    """A scripted answer's usage: ``n`` tokens in all."""
    return {"usage": {"input": n - 10, "output": 10}}


def rename_unit(fake: FakeLLM, first: int) -> None:
    """A plan of one unit that edits, checks and finishes; its first call spends ``first``
    tokens, so that a budget can hold the first call and not the second."""
    # Spare plans: a busy worker's timed-out attempt is asked again and takes an entry.
    fake.push_thread(PLANNER_MARKER, *[{**plan(unit("rename", ["pkg/a.py"])), **used(20)}] * 3)
    fake.push_thread(
        unit_marker("rename"),
        {**tools(edit("pkg/a.py", "def old_name()", "def new_name()")), **used(first)},
        {**tools(CHECK), **used(20)},
        {**tools(FINISH), **used(20)},
    )


def tight(**limits: Any) -> dict[str, Any]:
    """A budget the planner and the unit's first call (2000 tokens) fit, its second not."""
    return {
        "test_cmd": None,
        "limits": AgentLimits(max_tokens=MAX_TOKENS, **limits),
        "budget": BudgetLimits(total=3000, shares={}),
    }


async def kinds(handle: WorkflowHandle) -> list[str]:
    page = await handle.query(EVENTS_QUERY, 0, result_type=EventPage)
    return [e.kind for e in page.events]


async def model_calls(handle: WorkflowHandle) -> int:
    """Model-call steps the job scheduled (attempts of each are the server's business)."""
    n = 0
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            n += event.activity_task_scheduled_event_attributes.activity_type.name == "llm.call"
    return n


async def phases_recorded(handle: WorkflowHandle) -> list[str]:
    """Every phase the job showed, from its history's search attribute updates."""
    seen = []
    async for event in handle.fetch_history_events():
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if PHASE.name in fields.indexed_fields:
                seen.append(json.loads(fields.indexed_fields[PHASE.name].data))
    return seen


async def test_a_job_out_of_budget_pauses_and_budget_add_resumes_it_to_success(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The unit's second call does not fit: the job pauses in phase ``budget`` (the query,
    ``status`` and an event say so and name the command), keeps its worktree, and
    ``agentparallels budget JOB --add N`` lets the same call go on to a published branch."""
    repo = make_repo(tmp_path / "repo", FILES)
    rename_unit(fake, first=2000)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, **tight()))
        paused = await until(
            lambda: _phase_is(handle, "budget"), "the job to pause for budget", 120
        )
        assert f"agentparallels budget {handle.id} --add" in paused.message
        assert paused.remaining is not None and paused.remaining < MAX_TOKENS
        status = await run_cli_async("status", handle.id, address=client)
        assert status.returncode == 0 and "budget" in status.stdout and "--add" in status.stdout, (
            status
        )
        unit_calls = sum(unit_marker("rename") in json.dumps(r.body) for r in fake.requests)
        assert unit_calls == 1  # the second call waits, unmade
        added = await run_cli_async("budget", handle.id, "--add", "5000", address=client)
        assert added.returncode == 0, added
        assert "budget now 8000 tokens" in added.stdout
        result = await asyncio.wait_for(handle.result(), 240)
        events = await kinds(handle)
    assert result.outcome == "succeeded"
    assert "def new_name()" in git(repo, "show", f"{result.branch}:pkg/a.py")
    assert events.index("budget_paused") < events.index("budget_added") < events.index("done")
    assert "budget" in await phases_recorded(handle)


async def test_a_unit_spares_the_round_trips_it_can_credit_and_local_tool_steps(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """With room in the budget the unit's first reservation brings a credit, and its next
    calls spend it without a round trip to the job: one reservation for three calls in the
    unit's history. The job still counts every token, and nothing stays reserved. The edit
    ran as a local activity (a marker, no workflow task of its own); the check, a command
    that may run for minutes, as an activity with its heartbeat."""
    repo = make_repo(tmp_path / "repo", FILES)
    rename_unit(fake, first=50)
    budget = BudgetLimits(total=100_000, shares={})
    limits = AgentLimits(max_tokens=MAX_TOKENS)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(
            client, task_queue, job(repo, fake, test_cmd=None, limits=limits, budget=budget)
        )
        result = await asyncio.wait_for(handle.result(), 240)
        figures = await progress(handle)
    assert result.outcome == "succeeded"
    unit = client.get_workflow_handle(f"{handle.id}/unit-rename-1")
    reserves, local, remote = 0, [], []
    async for event in unit.fetch_history_events():
        if event.HasField("signal_external_workflow_execution_initiated_event_attributes"):
            sent = event.signal_external_workflow_execution_initiated_event_attributes
            reserves += sent.signal_name == "budget_reserve"
        elif (marker := local_activity(event)) is not None:
            local.append((marker.activity, await summary_of(client, event)))
        elif event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            remote.append((name, await summary_of(client, event)))
    assert await model_calls(unit) == 3 and reserves == 1
    assert local == [("agent.tool", "rename: edit pkg/a.py")]
    assert [r for r in remote if r[0] == "agent.tool"] == [("agent.tool", "rename: check")]
    spent = sum(p.spent for p in figures.budget)
    assert spent == result.usage.total == 20 + 50 + 20 + 20, (figures.budget, result.usage)
    assert sum(p.reserved for p in figures.budget) == 0
    assert figures.remaining == 100_000 - spent


async def summary_of(client: Client, event: HistoryEvent) -> str:
    """The step's summary as the UI shows it."""
    [text] = await client.data_converter.decode([event.user_metadata.summary], [str])
    return text


async def _phase_is(handle: WorkflowHandle, phase: str) -> Any:
    p = await progress(handle)
    return p if p.phase == phase else None


async def test_a_pause_that_gets_no_budget_refuses_at_its_timeout_and_rolls_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """No ``budget --add`` within ``--budget-timeout``: the waiting call is refused with the
    budget's reason, and the job rolls back its checkpoint commit: the repository is as it
    was, byte for byte."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    rename_unit(fake, first=2000)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, **tight(budget_timeout_s=3))
        handle = await start(client, task_queue, inp)
        error = await failure_of(handle)
        events = await kinds(handle)
    assert error.type == BUDGET_EXCEEDED
    assert "of the job's budget of 3000 tokens" in error.message
    assert events.index("budget_paused") < events.index("budget_refused") < events.index("failed")
    assert "budget" in await phases_recorded(handle)
    assert snapshot(repo) == before


async def test_budget_usage_mistakes_exit_2_naming_the_fix(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Each mistake is one line and exit code 2: no --add, a bad N, no such job, a job with no
    token budget, a job that has ended; and ``agent --budget-timeout`` without a budget."""
    repo = make_repo(tmp_path / "repo", FILES)
    slow = {**plan(unit("rename", ["pkg/a.py"])), "delay_ms": 60_000}
    fake.push_thread(PLANNER_MARKER, *[slow] * 5)  # the job runs while the commands are tried
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None))
        await until(lambda: fake.requests, "the planner's call", 120)
        cases = {
            ("budget", handle.id, "--add", "5"): "has no token budget to add to",
            ("budget", handle.id): "budget needs --add N",
            ("budget", handle.id, "--add", "0"): "expected a number of at least 1",
            ("budget", handle.id, "--add", "lots"): "expected a whole number",
            ("budget", "no-such-job", "--add", "5"): "no-such-job",
        }
        for args, says in cases.items():
            done = await run_cli_async(*args, address=client)
            assert done.returncode == 2, (args, done)
            assert says in done.stderr, (args, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 120)
    ended = await run_cli_async("budget", handle.id, "--add", "5", address=client)
    assert ended.returncode == 2 and "is not running (it is" in ended.stderr, ended
    agent = await run_cli_async(
        "agent", str(repo), "--task", "t", "--model", "openai:m", "--base-url", fake.url,
        "--budget-timeout", "60", "--no-worker", address=client,
    )  # fmt: skip
    assert (
        agent.returncode == 2
        and "--budget-timeout" in agent.stderr
        and "--budget-tokens" in agent.stderr
    )


def outage(fake: FakeLLM, failures: int, failure: dict[str, Any] | None = None) -> None:
    """The planner plans one unit, whose first ``failures`` calls get ``failure`` (a 503 by
    default); then it finishes."""
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    # Spare finishes: a busy worker's timed-out attempt is asked again and takes an entry.
    failed = [failure or {"status": 503}] * failures
    fake.push_thread(unit_marker("rename"), *failed, *[tools(FINISH)] * 3)


async def run_outage(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM, limits: AgentLimits
) -> tuple[Any, list[str], WorkflowHandle]:
    """The job :func:`outage` scripted, run to its end: its result, its events, its handle."""
    repo = make_repo(tmp_path / "repo", FILES)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, test_cmd=None, limits=limits))
        result = await asyncio.wait_for(handle.result(), 240)
        events = await kinds(handle)
    return result, events, handle


async def test_a_provider_outage_opens_the_breaker_which_waits_probes_and_closes(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Four 503s to a unit (its settlements carry them to the job's ledger): three in a row
    open the job's breaker (phase ``breaker``); after the
    cool-down one probe goes, fails and opens it again for twice as long; the next probe
    succeeds, the breaker closes, and the job succeeds. Each wait is the cool-down's."""
    outage(fake, failures=4)
    limits = AgentLimits(provider_failures=3, provider_cooldown_s=1.5, provider_probes=3)
    result, events, handle = await run_outage(client, task_queue, tmp_path, fake, limits)
    unit_handle = client.get_workflow_handle(f"{handle.id}/unit-rename-1")
    assert result.outcome == "no_changes"
    calls = [r.at for r in fake.requests if unit_marker("rename") in json.dumps(r.body)]
    assert await model_calls(unit_handle) == 5  # 3 failures, 1 failed probe, 1 good probe
    assert calls[-1] - calls[0] >= 1.5 + 3.0  # the cool-down, then twice it
    assert events.count("provider_breaker_opened") == 1
    assert events.index("provider_breaker_opened") < events.index("provider_breaker_closed")
    assert "breaker" in await phases_recorded(handle)


async def test_a_throttled_provider_is_waited_for_without_opening_the_breaker(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Four 429s in a row with a ``retry-after``: the provider is up, only busy. The step's
    own retries wait out each ``retry-after`` and the breaker, opened by three outages, never
    opens; one model-call step for the unit's call, answered at its fifth attempt."""
    outage(fake, failures=4, failure={"status": 429, "retry_after_ms": 50})
    limits = AgentLimits(provider_failures=3, provider_cooldown_s=60, provider_probes=3)
    result, events, handle = await run_outage(client, task_queue, tmp_path, fake, limits)
    unit_handle = client.get_workflow_handle(f"{handle.id}/unit-rename-1")
    assert result.outcome == "no_changes"
    assert "provider_breaker_opened" not in events
    assert await model_calls(unit_handle) == 1
    assert sum(unit_marker("rename") in json.dumps(r.body) for r in fake.requests) == 5


async def test_a_provider_down_for_good_ends_the_job_after_its_probes(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Every call a 503 (the planner's, reserved in the job itself): two failures open the
    breaker, two probes fail, and the job ends with the provider's message after exactly four
    model calls, the repository as it was."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    fake.push_thread(PLANNER_MARKER, *[{"status": 503}] * 10)
    limits = AgentLimits(provider_failures=2, provider_cooldown_s=0.5, provider_probes=2)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, limits=limits)
        handle = await start(client, task_queue, inp)
        error = await failure_of(handle)
    assert error.type == BREAKER_OPEN
    assert "the model provider stayed unavailable" in error.message
    assert "503" in error.message
    assert await model_calls(handle) == 4  # (a busy worker's timed-out attempt may add one)
    assert snapshot(repo) == before


@pytest.mark.parametrize("fault", ["unauthorized", "insufficient_quota"])
async def test_auth_and_quota_errors_fail_fast_with_the_providers_message(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM, fault: str
) -> None:
    """Neither the step nor the breaker retries what cannot get better: one request, and the
    job's error carries the provider's own words."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, *[{"error": fault}] * 5)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        error = await failure_of(await start(client, task_queue, job(repo, fake)))
    expected = {"unauthorized": (MODEL_AUTH, "Bad API key")}
    kind, words = expected.get(fault, ("QuotaExhausted", "add credit"))
    assert error.type == kind
    assert words in error.message
    assert len(fake.requests) == 1


async def test_reviewers_reserve_from_the_ledger_and_a_review_out_of_budget_pauses(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """The reviewers' calls go through the job's ledger like every other call: when the
    reviewer's call does not fit, the job pauses in phase ``budget`` during the review
    (before, the committee got what was left and failed the job), and ``budget --add`` lets
    the review vote and the job publish."""
    from agentparallels.core.agentreview import ReviewOptions, reviewer_marker
    from tests.test_agent_review import vote

    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER_MARKER, *[{**plan(unit("rename", ["pkg/a.py"])), **used(20)}] * 3)
    fake.push_thread(
        unit_marker("rename"),
        {**tools(edit("pkg/a.py", "def old_name()", "def new_name()")), **used(20)},
        {**tools(CHECK), **used(20)},
        {**tools(FINISH), **used(3200)},
    )
    fake.push_thread(reviewer_marker(1), {**vote(True, "looks right"), **used(20)})
    # Every call's estimate is its prompt (well under 1000 tokens here) + MAX_TOKENS: the
    # planner's and the unit's fit 4000 tokens; after the unit's last answer has spent 3200,
    # the reviewer's does not.
    limits = {**tight(), "budget": BudgetLimits(total=4000, shares={})}
    review = ReviewOptions(reviewers=1, quorum=1)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start(client, task_queue, job(repo, fake, review=review, **limits))
        await until(lambda: _phase_is(handle, "budget"), "the review to pause for budget", 120)
        assert not any(reviewer_marker(1) in json.dumps(r.body) for r in fake.requests)
        added = await run_cli_async("budget", handle.id, "--add", "20000", address=client)
        assert added.returncode == 0, added
        result = await asyncio.wait_for(handle.result(), 240)
    assert result.outcome == "succeeded"
    assert [v.approve for r in result.reviews for v in r.votes] == [True]
