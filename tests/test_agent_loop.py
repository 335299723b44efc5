"""The agent loop on the real dev server against the loopback model server: a long loop
continues as new with every run's history bounded; compaction summarises old turns into the
history; the feedback step; budgets carried across runs."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError

from agentparallels import worker
from agentparallels.core.agent import AgentLoopInput, AgentLoopProgress, AgentLoopResult
from agentparallels.core.errors import BUDGET_EXCEEDED
from agentparallels.core.llm import BudgetLimits, Compaction
from agentparallels.plugin import plugin_of
from agentparallels.replay import replayer_for
from agentparallels.testing.fake_llm import FakeLLM
from agentparallels.workflows.compaction import SUMMARISE_SYSTEM, SUMMARY_PREFIX
from tests.support.history_text import history_text

SUMMARY = "SUMMARY-7f3a: the agent answered ok every turn."
RUN_EVENTS = 200
"""The per-run history bound the long test sets."""
SLACK = 20
"""Events a run may hold past the bound: the check is made at turn boundaries, so a run can
finish the turn (a summary call and a model call, six events each) and close with its
continue-as-new command."""


pytestmark = pytest.mark.fake_llm(
    default={"content": "ok", "usage": {"input": 10, "output": 1}},
    match={SUMMARISE_SYSTEM[:40]: {"content": SUMMARY, "usage": {"input": 10, "output": 8}}},
)
"""The fake answers "ok" (usage: 10 in, 1 out); any summarising request gets SUMMARY."""


def loop(fake: FakeLLM, **fields: object) -> AgentLoopInput:
    defaults = {"task": "TASK-0: say ok", "model": "openai:fake", "max_tokens": 16}
    return AgentLoopInput(**({"base_url": fake.openai_base_url} | defaults | fields))


async def run(client: Client, task_queue: str, inp: AgentLoopInput, limit_s: float = 60):
    """Start the loop on a fresh worker; its result and the first run's id."""
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await client.start_workflow(
            "AgentLoopWorkflow",
            inp,
            id=f"loop-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=AgentLoopResult,
        )
        result = await asyncio.wait_for(handle.result(follow_runs=True), limit_s)
    return handle, result


async def chain(client: Client, workflow_id: str, run_id: str) -> list[WorkflowHistory]:
    """Every run's history, first to last, following the continued-as-new events."""
    histories = []
    next_run: str | None = run_id
    while next_run:
        history = await client.get_workflow_handle(workflow_id, run_id=next_run).fetch_history()
        histories.append(history)
        last = history.events[-1]
        next_run = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            next_run = (
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            )
    return histories


@pytest.mark.slow  # 1,100 activities in a row: about a minute on a busy 2-core machine
async def test_a_thousand_turns_continue_as_new_with_every_run_bounded(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """1,000 turns complete; the loop continued as new many times, each run's history stays
    within RUN_EVENTS + SLACK events and 200 KB, old turns were summarised, and runs replay."""
    inp = loop(
        fake,
        model="anthropic:fake",  # the lighter of the two SDKs per call
        base_url=fake.url,
        turns=1000,
        max_run_events=RUN_EVENTS,
        compaction=Compaction(window_tokens=400, keep_turns=4, summary_tokens=64),
    )
    started = time.monotonic()
    handle, result = await run(client, task_queue, inp, limit_s=300)
    elapsed = time.monotonic() - started
    assert result.turns == 1000
    histories = await chain(client, handle.id, handle.result_run_id)
    sizes = [len(h.events) for h in histories]
    print(
        f"1000 turns: {elapsed:.1f}s, {len(histories)} runs, {result.compactions} compactions,"
        f" largest run {max(sizes)} events"
    )
    assert len(histories) == result.runs >= 1000 * 6 // (RUN_EVENTS + SLACK)
    assert max(sizes) <= RUN_EVENTS + SLACK
    assert max(len(history_text(h)) for h in histories) < 200_000
    assert result.compactions >= 10
    assert len(fake.requests) == 1000 + result.compactions
    replayer = replayer_for(plugin_of(client))
    for history in (histories[0], histories[len(histories) // 2], histories[-1]):
        await replayer.replay_workflow(history)


def contents(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"]]


async def test_compaction_summarises_the_oldest_turns_once_past_the_threshold(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Each turn adds 27 tokens; before turn 8 the conversation (199) passes 60% of a 300-token
    window, and the oldest messages that fit the summary request (answers 0 to 3) go to a
    summarising call; the next turn is sent the task, the summary and the rest; the summary is
    in the history, and the history replays."""
    fake.push(*[{"content": f"ANSWER-{i} " + "word " * 12} for i in range(9)])
    policy = Compaction(window_tokens=300, keep_turns=2, summary_tokens=16)
    handle, result = await run(client, task_queue, loop(fake, turns=9, compaction=policy))
    assert (result.turns, result.compactions) == (9, 1)
    bodies = [r.body for r in fake.requests]
    [at] = [i for i, b in enumerate(bodies) if b["messages"][0]["content"] == SUMMARISE_SYSTEM]
    assert at == 7  # after seven turns
    summarised = bodies[at]["messages"][1]["content"]
    assert [f"ANSWER-{i}" in summarised for i in range(5)] == [True] * 4 + [False]
    assert "TASK-0" not in summarised
    after = contents(bodies[at + 1])
    assert after[:2] == ["TASK-0: say ok", f"{SUMMARY_PREFIX} (7 messages):\n{SUMMARY}"]
    assert not any("ANSWER-3" in c for c in after)
    assert [c.split()[0] for c in after[2:] if c.startswith("ANSWER")] == [
        "ANSWER-4",
        "ANSWER-5",
        "ANSWER-6",
    ]
    history = await handle.fetch_history()
    assert SUMMARY in history_text(history)
    replayer = replayer_for(plugin_of(client))
    await replayer.replay_workflow(history)


async def test_no_compaction_below_the_threshold(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """The same loop with a 400-token window (threshold 240): no summary call, every turn
    sent in full."""
    fake.push(*[{"content": f"ANSWER-{i} " + "word " * 12} for i in range(9)])
    policy = Compaction(window_tokens=400, keep_turns=2, summary_tokens=16)
    _, result = await run(client, task_queue, loop(fake, turns=9, compaction=policy))
    assert (result.turns, result.compactions) == (9, 0)
    assert len(fake.requests) == 9
    assert len(contents(fake.requests[-1].body)) == 17


async def test_the_tool_output_is_the_next_message(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """With a tool command, each answer goes through it and its exit code and output come
    back as the next user message; a done marker ends the loop early."""
    fake.push({"content": "one two three"}, {"content": "DONE now"})
    inp = loop(fake, turns=5, tool_cmd="wc -w < {answer}", done_marker="DONE")
    _, result = await run(client, task_queue, inp)
    assert (result.turns, result.last_answer) == (2, "DONE now")
    assert contents(fake.requests[1].body)[-1] == "`wc -w < {answer}` exited 0:\n3"


async def test_the_tool_runs_sandboxed_in_its_workdir(
    client: Client, task_queue: str, fake: FakeLLM, tmp_path: Path
) -> None:
    """In a given workdir the sandboxed tool reads the answer and writes there; a folder
    beside it is not there for it, as for a shard's commands; the answer's scratch folder is
    gone afterwards."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    beside = tmp_path / "beside"
    beside.mkdir()
    outside = beside / f"escape-{uuid.uuid4().hex}"
    fake.push({"content": "hello there"}, {"content": "DONE"})
    tool = f"cp {{answer}} seen.txt && wc -w < {{answer}}; touch {outside} || echo refused"
    inp = loop(fake, turns=5, tool_cmd=tool, done_marker="DONE", workdir=str(workdir))
    await run(client, task_queue, inp)
    feedback = contents(fake.requests[1].body)[-1]
    assert "exited 0:\n2\n" in feedback and "No such file or directory" in feedback
    assert "refused" in feedback and not outside.exists()
    assert [p.name for p in workdir.iterdir()] == ["seen.txt"]
    assert (workdir / "seen.txt").read_text() == "hello there"


async def test_the_budget_holds_across_continue_as_new(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Spending is carried into each new run: a 200-token budget stops the loop in a later
    run, with BudgetExceeded, having spent exactly what the calls of every run used."""
    inp = loop(fake, turns=100, max_run_events=50, max_tokens=5)
    inp = inp.model_copy(update={"budget": BudgetLimits(total=200, shares={})})
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await client.start_workflow(
            "AgentLoopWorkflow", inp, id=f"loop-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(follow_runs=True), 60)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == BUDGET_EXCEEDED
    calls = len(fake.requests)
    estimate, spent = (
        int(n) for n in re.findall(r"up to (\d+) tokens: (\d+) are", cause.message)[0]
    )
    assert spent == 11 * calls  # 10 in, 1 out each, across every run
    assert spent <= 200 < spent + estimate
    assert len(await chain(client, handle.id, handle.first_execution_run_id)) > 1


async def test_feedback_sent_by_signal_is_the_next_message(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Without a tool, feedback signalled to the loop is its next user message (once), then
    the next prompt again; the progress query reports the turns."""
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await client.start_workflow(
            "AgentLoopWorkflow",
            loop(fake, turns=3),
            id=f"loop-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_signal="feedback",
            start_signal_args=["FEEDBACK-1: use fewer words"],
        )
        await asyncio.wait_for(handle.result(), 60)
        progress = await handle.query("progress", result_type=AgentLoopProgress)
    last = [contents(r.body)[-1] for r in fake.requests]
    assert last == ["TASK-0: say ok", "FEEDBACK-1: use fewer words", "Continue."]
    assert (progress.turn, progress.turns, progress.runs, progress.compactions) == (3, 3, 1, 0)
    assert progress.tokens == 33
