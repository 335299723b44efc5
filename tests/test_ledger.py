"""The job's token ledger (workflows.ledger) on the real dev server against a loopback model
server: shards share one budget, estimates count the attached file, and what the progress
query and the UI show is what the ledger enforces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels import worker
from agentparallels.core import tokens
from agentparallels.core.attributes import TOKENS
from agentparallels.core.errors import BUDGET_EXCEEDED
from agentparallels.core.llm import BudgetLimits, Grant, Reservation, Settlement
from agentparallels.core.models import Limits, ModelEdit, PhaseBudget, Progress, RefactorInput
from agentparallels.testing.fake_llm import FakeLLM
from agentparallels.workflows import circuit_breaker
from agentparallels.workflows import ledger as ledger_module
from agentparallels.workflows.circuit_breaker import CircuitBreaker
from agentparallels.workflows.ledger import Ledger, LedgerClient
from tests.support.repos import make_repo, snapshot, start_job

BIG = "".join(f"CONSTANT_NUMBER_{i} = {i * 7919}\n" for i in range(120))
"""A file of about 1,300 tokens."""
FILES = {"a/__init__.py": "", "a/big.py": BIG, "b/__init__.py": "", "b/small.py": "X = 1\n"}
MAX_TOKENS = 50


def job(repo: Path, fake: FakeLLM, budget: BudgetLimits, *files: str) -> RefactorInput:
    return RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="set every constant to zero",
            files=files,
            model="openai:fake-coder",
            base_url=fake.openai_base_url,
            related_tokens=0,
            max_tokens=MAX_TOKENS,
        ),
        limits=Limits(parallel=2, max_files_per_shard=1),
        budget=budget,
    )


def answer(text: str, used: int = 30) -> dict:
    return {"content": f"```python\n{text}```", "usage": {"input": used - 10, "output": 10}}


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ledger")


async def test_a_shard_needing_more_than_an_even_split_uses_what_another_left(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Two shards, one budget: the big file's call needs more than half of it; the ledger
    grants it because the other shard's call reserved little and spent less (with fixed
    per-shard shares the big file's shard was refused)."""
    repo = make_repo(tmp_path / "repo", FILES)
    big = tokens.count(BIG)
    budget = BudgetLimits(total=big + 400, shares={})
    assert big + MAX_TOKENS > budget.total // 2  # an even split cannot hold the big call
    match = {"Edit `a/big.py`": answer("CONSTANT_NUMBER_0 = 0\n")}
    match["Edit `b/small.py`"] = answer("X = 0\n")
    with FakeLLM(default=None, match=match) as fake:
        async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
            handle = await start_job(
                client, task_queue, job(repo, fake, budget, "a/big.py", "b/small.py")
            )
            result = await asyncio.wait_for(handle.result(), 120)
            progress = await handle.query("progress", result_type=Progress)
        calls = len(fake.requests)
    assert result.files_changed == ("a/big.py", "b/small.py")
    assert calls == 2
    assert (progress.tokens, progress.reserved, progress.remaining) == (60, 0, big + 340)


async def test_a_budget_smaller_than_the_file_refuses_before_any_call(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The estimate counts the attached file (the plan's token count): a budget below the
    file's size stops the job before the model is called at all, and nothing is left behind."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    big = tokens.count(BIG)
    budget = BudgetLimits(total=big - 100)  # far more than the prompt and the answer
    with FakeLLM(default=answer("CONSTANT_NUMBER_0 = 0\n")) as fake:
        async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
            handle = await start_job(client, task_queue, job(repo, fake, budget, "a/big.py"))
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), 120)
        calls = len(fake.requests)
    assert calls == 0
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == BUDGET_EXCEEDED
    assert f"0 are spent of the job's budget of {big - 100} tokens (nothing yet)" in cause.message
    estimate = int(cause.message.split("could take up to ")[1].split()[0])
    assert estimate > big + MAX_TOKENS
    assert snapshot(repo) == before


async def test_progress_and_ui_show_the_remaining_the_ledger_enforces(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A call that spends more than it reserved leaves 100 of 600 tokens; the next call is
    refused by exactly that figure, and the progress query, the UI's current details and the
    Tokens search attribute show it: 500 spent, 100 left."""
    files = {"a/__init__.py": "", "a/one.py": "X = 1\n", "a/two.py": "Y = 2\n"}
    repo = make_repo(tmp_path / "repo", files)
    with FakeLLM(default=None, match={"Edit `a/one.py`": answer("X = 0\n", used=500)}) as fake:
        inp = job(repo, fake, BudgetLimits(total=600), "a/one.py", "a/two.py")
        inp = inp.model_copy(update={"limits": Limits(parallel=1, max_files_per_shard=10)})
        async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
            handle = await start_job(client, task_queue, inp)
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), 120)
            progress = await handle.query("progress", result_type=Progress)
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
        calls = len(fake.requests)
    assert calls == 1
    assert isinstance(failure.value.cause, ApplicationError)
    message = failure.value.cause.message
    assert "500 are spent of the job's budget of 600 tokens (execute: 500)" in message
    refused = int(message.split("could take up to ")[1].split()[0])
    assert progress.remaining is not None and refused > progress.remaining
    assert (progress.tokens, progress.reserved, progress.remaining) == (500, 0, 100)
    # default shares of 600: plan 60; execute 420 + plan's 60; verify 120 (execute overspent)
    assert progress.budget == (
        PhaseBudget(phase="plan", spent=0, allowance=60, remaining=60),
        PhaseBudget(phase="execute", spent=500, allowance=480, remaining=0),
        PhaseBudget(phase="verify", spent=0, allowance=120, remaining=100),
    )
    assert "tokens: 500 spent, 100 left (plan 0/60, execute 500/480, verify 0/120)" in (
        metadata.current_details
    )
    described = await handle.describe()
    assert described.typed_search_attributes.get(TOKENS) == 500


def reservation(holder: str, rid: int, tokens: int, phase: str = "execute") -> Reservation:
    return Reservation(holder=holder, id=rid, phase=phase, tokens=tokens)


def test_a_waiting_request_is_granted_once_others_settle_or_refused_if_it_cannot_fit() -> None:
    """Reserve, settle, release: a request that fits once others settle waits for them (in
    order); one that could not fit even then is refused at once, naming the budget."""
    ledger = Ledger(BudgetLimits(total=100, shares={}))
    assert ledger.reserve(reservation("s1", 1, 70)) == [("s1", Grant(id=1, granted=True))]
    assert ledger.reserve(reservation("s2", 1, 50)) == []  # waits: s1 holds 70
    assert ledger.figures()[1].reserved == 70 and ledger.remaining() == 30
    # s1 used 20 of its 70: the other 50 return to the pool and s2's request is granted
    granted = ledger.settle(Settlement(holder="s1", id=1, phase="execute", tokens=20))
    assert granted == [("s2", Grant(id=1, granted=True))]
    assert ledger.remaining() == 30
    refused = ledger.reserve(reservation("s1", 2, 81))  # 20 spent + 81 > 100 whatever s2 uses
    assert refused == [
        (
            "s1",
            Grant(
                id=2,
                granted=False,
                reason="stopped before a model call that could take up to 81 tokens: 20 are "
                "spent of the job's budget of 100 tokens (execute: 20); raise the budget to go on",
            ),
        )
    ]
    assert ledger.reserve(reservation("s1", 3, 40)) == []  # fits once s2 settles
    assert ledger.release("s2") == [("s1", Grant(id=3, granted=True))]  # s2 ended


def test_what_an_earlier_run_spent_counts_against_the_budget() -> None:
    """Shards taken over from an earlier run of the job bring what they spent: the ledger counts
    it, so a resumed job cannot spend its budget twice."""
    ledger = Ledger(BudgetLimits(total=100, shares={}))
    ledger.count({"execute": 80})
    [(_, grant)] = ledger.reserve(reservation("s1", 1, 30))
    assert not grant.granted and "80 are spent of the job's budget of 100" in grant.reason
    assert ledger.remaining() == 20


def test_a_credit_is_granted_while_nothing_waits_and_recalled_when_a_request_does() -> None:
    """A holder that asks for a credit gets as much of it as the budget holds with everything
    else reserved and room left for eight more calls of its size; a request that has to wait
    recalls every credit, once; the credit's single settlement returns what it did not spend
    to the pool, and the waiting request goes on. (Without credits every call of an agent
    unit waits for a grant signalled back.)"""
    ledger = Ledger(BudgetLimits(total=10_000, shares={}))
    ask = Reservation(holder="u0", id=1, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u0", Grant(id=1, granted=True, credit=700))]
    ledger.settle(Settlement(holder="u0", id=1, phase="execute", tokens=9000, outcome="ok"))
    ask = Reservation(holder="u1", id=1, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u1", Grant(id=1, granted=True, credit=100))]  # room: 800
    ask = Reservation(holder="u2", id=1, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u2", Grant(id=1, granted=True))]  # no room for a credit
    assert ledger.recalls() == []
    assert ledger.reserve(reservation("u3", 1, 750)) == []  # waits: u1's credit holds it
    assert ledger.recalls() == [("u1", 1)]
    assert ledger.recalls() == []  # each credit is recalled once
    settled = Settlement(holder="u1", id=1, phase="execute", tokens=150)
    assert ledger.settle(settled) == [("u3", Grant(id=1, granted=True))]
    assert ledger.remaining() == 10_000 - 9000 - 150 - 100 - 750


def test_credits_leave_room_for_every_other_holder() -> None:
    """Four units whose calls of 10,000 tokens all fit a budget of 100,000 are all granted at
    once: a credit takes only what leaves eight more such calls free, so none waits behind
    another's credit."""
    ledger = Ledger(BudgetLimits(total=100_000, shares={}))
    grants = [
        ledger.reserve(Reservation(holder=u, id=1, phase="execute", tokens=10_000, credit=70_000))
        for u in ("a", "b", "c", "d")
    ]
    assert grants == [
        [("a", Grant(id=1, granted=True, credit=10_000))],
        [("b", Grant(id=1, granted=True))],
        [("c", Grant(id=1, granted=True))],
        [("d", Grant(id=1, granted=True))],
    ]
    assert ledger.remaining() == 100_000 - 50_000 and not ledger.waiting


def test_no_credit_while_the_provider_breaker_counts_a_failure() -> None:
    """A failed call anywhere recalls every credit and no new one is given until a call
    succeeds: the breaker must see each call while the provider may be failing."""
    ledger = Ledger(BudgetLimits(), breaker=CircuitBreaker(5, timedelta(seconds=30)))
    ask = Reservation(holder="u1", id=1, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u1", Grant(id=1, granted=True, credit=700))]
    assert ledger.reserve(reservation("u2", 1, 100)) == [("u2", Grant(id=1, granted=True))]
    failed = Settlement(holder="u2", id=1, phase="execute", tokens=0, outcome="unavailable")
    ledger.settle(failed)
    assert ledger.recalls() == [("u1", 1)]
    ask = Reservation(holder="u2", id=2, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u2", Grant(id=2, granted=True))]  # no credit
    ledger.settle(Settlement(holder="u2", id=2, phase="execute", tokens=90, outcome="ok"))
    ask = Reservation(holder="u2", id=3, phase="execute", tokens=100, credit=700)
    assert ledger.reserve(ask) == [("u2", Grant(id=3, granted=True, credit=700))]


def test_while_the_probe_is_out_a_late_failure_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call granted before the breaker opened that fails while the half-open probe is out
    says nothing newer than the failures that opened it: the breaker stays half-open with its
    one probe, and no second probe goes after another cool-down. (The breaker reads workflow
    time; the test gives it a clock of its own.)"""
    now = [datetime(2026, 12, 3, tzinfo=UTC)]
    monkeypatch.setattr(circuit_breaker.workflow, "now", lambda: now[0])
    ledger = Ledger(BudgetLimits(), breaker=CircuitBreaker(2, timedelta(seconds=30)), probes=3)
    assert ledger.reserve(reservation("late", 1, 10)) == [("late", Grant(id=1, granted=True))]
    for rid in (1, 2):
        assert ledger.reserve(reservation("u1", rid, 10)) == [("u1", Grant(id=rid, granted=True))]
        ledger.settle(
            Settlement(holder="u1", id=rid, phase="execute", tokens=0, outcome="unavailable")
        )
    assert ledger.breaker is not None and ledger.breaker.state == "open"
    assert ledger.reserve(reservation("u1", 3, 10)) == []  # waits for the cool-down
    now[0] += timedelta(seconds=31)
    assert ledger.wake() == [("u1", Grant(id=3, granted=True))]  # the probe
    late = Settlement(holder="late", id=1, phase="execute", tokens=0, outcome="unavailable")
    assert ledger.settle(late) == []
    assert ledger.breaker.state == "half-open" and ledger.probe == ("u1", 3)
    assert ledger.reserve(reservation("u2", 1, 10)) == []
    now[0] += timedelta(seconds=61)
    assert ledger.wake() == []  # still one probe out: no second one
    assert ledger.failed_probes == 0
    ok = Settlement(holder="u1", id=3, phase="execute", tokens=5, outcome="ok")
    assert ledger.settle(ok) == [("u2", Grant(id=1, granted=True))]
    assert ledger.breaker.state == "closed"


class _Unit(LedgerClient):
    """A unit's side of the ledger whose parent answers at once, granting every credit asked;
    what it would signal is kept in ``sent``."""

    def __init__(self) -> None:
        super().__init__(credit_calls=8)
        self.parent_id = "job"
        self.sent: list[Reservation | Settlement] = []

    async def _request(self, r: Reservation) -> None:
        self.sent.append(r)
        self.granted(Grant(id=r.id, granted=True, credit=r.credit))

    async def _settled(self, s: Settlement) -> None:
        self.sent.append(s)


async def test_a_credit_reports_no_success_older_than_its_recall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A credit's calls ask the parent once. Recalled because a call failed elsewhere, it
    settles without an ``ok``: its successes are older than that failure, and would close a
    breaker that has opened since. A call that succeeds after the recall says ``ok``; a failed
    call settles at once with its outcome. (Workflow context stubbed: the unit's id, and a
    wait that its parent's instant answer always satisfies.)"""

    async def satisfied(fn: Any, **_: Any) -> None:
        assert fn()

    monkeypatch.setattr(ledger_module.workflow, "info", lambda: SimpleNamespace(workflow_id="u"))
    monkeypatch.setattr(ledger_module.workflow, "wait_condition", satisfied)
    unit = _Unit()
    for _ in range(3):
        rid = await unit.reserve("execute", 100)
        unit.settle(rid, "execute", 90, outcome="ok")
    unit.recall(rid)  # idle: settled now
    await unit.flush()
    assert [type(x).__name__ for x in unit.sent] == ["Reservation", "Settlement"]
    assert unit.sent[1] == Settlement(holder="u", id=1, phase="execute", tokens=270)

    rid = await unit.reserve("execute", 100)
    unit.recall(rid)  # a call is under way: settled once it is done
    unit.settle(rid, "execute", 80, outcome="ok")
    await unit.flush()
    assert unit.sent[-1] == Settlement(holder="u", id=2, phase="execute", tokens=80, outcome="ok")

    rid = await unit.reserve("execute", 100)
    unit.settle(rid, "execute", 0, outcome="unavailable", error="503")
    await unit.flush()
    assert unit.sent[-1] == Settlement(
        holder="u", id=3, phase="execute", tokens=0, outcome="unavailable", error="503"
    )
