"""ModelSteps.ask around the llm.call activity, on the real dev server against FakeLLM:
compaction on context length, re-prompts for invalid structured answers, token budgets, cost."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client

    from agentparallels.core import progress
    from agentparallels.core.llm import BudgetLimits, Price, Usage, output_model
    from agentparallels.core.models import PhaseBudget, Progress
    from agentparallels.testing.fake_llm import FakeLLM
    from tests.test_model_calls import (  # noqa: F401 - fixtures are used by name
        CONVERSATION,
        PROVIDERS,
        Ask,
        AskResult,
        activity_error,
        answers,
        replays,
        request,
        run,
        workflow_error,
    )


@output_model
class Verdict(BaseModel):
    """The structured answer asked for below."""

    ok: bool
    reason: str


NOTE = {"role": "user", "content": "(1 earlier message was dropped to fit.)"}
VALID = '{"ok": true, "reason": "fine"}'


def sent(body: dict) -> list[dict]:
    """A recorded request's messages, with Anthropic's ``system`` field as the first one."""
    system = [{"role": "system", "content": body["system"]}] if "system" in body else []
    return system + body["messages"]


pytestmark = pytest.mark.usefixtures("model_keys")


# --- context length ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_context_length_compacts_once_and_calls_again(
    client: Client, task_queue: str, fake: FakeLLM, provider: str
) -> None:
    """A context-length error drops the turns between the task and the last message once; the
    smaller request is answered."""
    fake.push({"error": "context_length"}, {"content": "short answer"})
    req = request(fake, provider, *CONVERSATION)
    assert await answers(client, task_queue, req) == ["short answer"]
    first, second = (sent(r.body) for r in fake.requests)
    assert [m["content"] for m in first] == [
        "Be brief.",
        "first question",
        "first answer",
        "second question",
    ]
    assert second == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        NOTE,
        {"role": "user", "content": "second question"},
    ]


async def test_context_length_after_compaction_fails(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Still too long once compacted: ContextLengthExceeded after exactly two requests."""
    fake.push({"error": "context_length"}, {"error": "context_length"}, {"content": "unused"})
    _, outcome = await run(client, task_queue, request(fake, "openai", *CONVERSATION))
    _, cause = activity_error(outcome)
    assert (cause.type, len(fake.requests)) == ("ContextLengthExceeded", 2)
    assert sent(fake.requests[1].body)[2] == NOTE


# --- structured output ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_invalid_answer_is_reprompted_with_the_error(
    client: Client, task_queue: str, fake: FakeLLM, provider: str
) -> None:
    """An answer that does not validate is sent back with its error; the next one is parsed."""
    fake.push({"content": "not json at all"}, {"content": VALID})
    handle, result = await run(client, task_queue, request(fake, provider, output="Verdict"))
    assert isinstance(result, AskResult), result.cause
    assert [a.parsed for a in result.answers] == [{"ok": True, "reason": "fine"}]
    assert result.calls == 2
    first, second = (sent(r.body) for r in fake.requests)
    assert first[0]["role"] == "system"
    assert json.loads(first[0]["content"].split("\n", 1)[1])["title"] == "Verdict"
    assert second[:-2] == first
    assert second[-2] == {"role": "assistant", "content": "not json at all"}
    feedback = second[-1]
    assert feedback["role"] == "user"
    assert feedback["content"].startswith(
        "Your answer did not validate:\n1 validation error for Verdict\n  Invalid JSON"
    )
    assert feedback["content"].endswith("\nAnswer again with corrected JSON only.")
    await replays(client, handle)


async def test_fenced_json_answer_validates_first_time(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """A valid answer in a ```json fence is parsed without a re-prompt."""
    fake.push({"content": f"```json\n{VALID}\n```"})
    _, result = await run(client, task_queue, request(fake, "openai", output="Verdict"))
    assert isinstance(result, AskResult), result.cause
    assert ([a.parsed for a in result.answers], len(fake.requests)) == ([json.loads(VALID)], 1)
    assert fake.requests[0].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("reprompts", [0, 2])
async def test_answers_that_never_validate_end_in_output_invalid(
    client: Client, task_queue: str, fake: FakeLLM, reprompts: int
) -> None:
    """Invalid reprompts+1 times: OutputInvalid after exactly reprompts+1 requests."""
    fake.push(*[{"content": '{"ok": "maybe"}'}] * (reprompts + 1), {"content": VALID})
    ask = Ask(request=request(fake, "openai", output="Verdict"), reprompts=reprompts)
    _, outcome = await run(client, task_queue, ask)
    assert len(fake.requests) == reprompts + 1
    error = workflow_error(outcome)
    assert error.type == "OutputInvalid"
    assert error.message.startswith(
        f"openai:fake's answer to 'model call' did not validate after {reprompts + 1} attempts; "
        "last error: 2 validation errors for Verdict\nok\n  Input should be a valid boolean"
    )


# --- budgets and cost ----------------------------------------------------------------------

SPEND = {"content": "spent", "usage": {"input": 20, "output": 10}}
"""30 tokens; each request below is estimated at 10 (max_tokens=10, a 2-character prompt)."""


@pytest.mark.parametrize(("total", "calls"), [(70, 3), (69, 2)])
async def test_job_budget_refuses_a_call_that_could_exceed_it(
    client: Client, task_queue: str, fake: FakeLLM, total: int, calls: int
) -> None:
    """60 spent + 10 estimated fits a budget of 70; with 69 the third call is never made."""
    fake.push(SPEND, SPEND, SPEND)
    asks = [request(fake, "openai", "hi", max_tokens=10)] * 3
    # no phase shares: the whole budget is open to the execute phase
    budget = BudgetLimits(total=total, shares={})
    _, outcome = await run(client, task_queue, *asks, budget=budget)
    assert len(fake.requests) == calls
    if calls == 3:
        assert isinstance(outcome, AskResult), outcome.cause
        assert outcome.used == {"execute": Usage(input_tokens=60, output_tokens=30)}
        return
    error = workflow_error(outcome)
    assert error.type == "BudgetExceeded"
    assert error.message == (
        "stopped before a model call that could take up to 10 tokens: 60 are spent of the "
        "job's budget of 69 tokens (execute: 60); raise the budget to go on"
    )


async def test_phase_budget_refuses_only_that_phase(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """A plan budget of 35 lets one plan call and an execute call through, then refuses."""
    fake.push(SPEND, SPEND, SPEND)
    req = request(fake, "anthropic", "hi", max_tokens=10)
    asks = [Ask(request=req, phase=p) for p in ("plan", "execute", "plan")]
    budget = BudgetLimits(total=1000, phases={"plan": 35})
    _, outcome = await run(client, task_queue, *asks, budget=budget)
    assert len(fake.requests) == 2
    error = workflow_error(outcome)
    assert error.type == "BudgetExceeded"
    assert error.message == (
        "stopped before a model call that could take up to 10 tokens: 30 are spent of the "
        "plan budget of 35 tokens (plan: 30, execute: 30); raise the budget to go on"
    )


PRICES = {"openai:fake": Price(input=2.0, output=8.0), "anthropic:fake": Price(input=3, output=15)}


@pytest.mark.parametrize(
    ("priced", "cost"), [(PRICES, 0.01875), ({"openai:fake": PRICES["openai:fake"]}, None)]
)
async def test_usage_and_cost_accumulate_per_phase(
    client: Client, task_queue: str, fake: FakeLLM, priced: dict, cost: float | None
) -> None:
    """Usage adds up per phase; cost is priced per model, or None when a model has no price."""
    fake.push(
        {"content": "plan", "usage": {"input": 1000, "output": 500}},
        {"content": "done", "usage": {"input": 3000, "output": 250}},
    )
    asks = [
        Ask(request=request(fake, "openai"), phase="plan"),
        Ask(request=request(fake, "anthropic"), phase="execute"),
    ]
    _, result = await run(client, task_queue, *asks, prices=priced)
    assert isinstance(result, AskResult), result.cause
    assert [a.usage for a in result.answers] == [
        Usage(input_tokens=1000, output_tokens=500),
        Usage(input_tokens=3000, output_tokens=250),
    ]
    assert result.used == {
        "plan": Usage(input_tokens=1000, output_tokens=500),
        "execute": Usage(input_tokens=3000, output_tokens=250),
    }
    assert result.calls == 2
    assert result.cost_usd == (cost if cost is None else pytest.approx(cost))


# --- phase shares and the flow of unspent budget ---------------------------------------------


def test_unspent_budget_flows_forward_never_back() -> None:
    """Default shares of 1,000 tokens: plan 100, execute 700 plus plan's unspent, verify 200
    plus what both left; spending in a later phase never raises an earlier one's limit."""
    budget = BudgetLimits(total=1000)
    assert [budget.allowance(p, {}) for p in ("plan", "execute", "verify")] == [100, 800, 1000]
    assert budget.allowance("execute", {"plan": 60}) == 740
    assert budget.allowance("verify", {"plan": 60, "execute": 650}) == 290
    assert budget.allowance("verify", {"plan": 100, "execute": 900}) == 200  # overspent: none
    assert budget.allowance("plan", {"execute": 700, "verify": 200}) == 100
    assert budget.allowance("review", {}) is None  # other phases: the total only
    assert BudgetLimits().allowance("execute", {}) is None  # no budget, no limit


def test_unspent_plan_tokens_are_carried_once() -> None:
    """Execute used up plan's unspent 100 (800 of 1,000, default shares): verify keeps its own
    200, not 200 plus plan's 100 a second time."""
    budget = BudgetLimits(total=1000)
    assert budget.allowance("verify", {"execute": 800}) == 200
    assert budget.allowance("verify", {"execute": 750}) == 250  # 50 of the 800 left
    capped = BudgetLimits(phases={"plan": 100, "execute": 500, "verify": 200})
    assert capped.allowance("verify", {"plan": 0, "execute": 600}) == 200
    assert capped.remaining("verify", {"plan": 0, "execute": 600}) == 200


async def test_verify_cannot_spend_plan_tokens_execute_already_used(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """Shares 0.1/0.5/0.2 of 100 tokens (so the job total never binds): two execute calls spend
    execute's 50 and plan's 10; a verify call that could take 25 is refused by verify's own 20.
    Counted twice, plan's 10 made it 30 and the call went through."""
    fake.push(SPEND, SPEND, SPEND)
    small = request(fake, "openai", "hi", max_tokens=10)
    asks = [Ask(request=small, phase="execute")] * 2
    asks.append(Ask(request=request(fake, "openai", "hi", max_tokens=25), phase="verify"))
    budget = BudgetLimits(total=100, shares={"plan": 0.1, "execute": 0.5, "verify": 0.2})
    _, outcome = await run(client, task_queue, *asks, budget=budget)
    assert len(fake.requests) == 2
    error = workflow_error(outcome)
    assert error.type == "BudgetExceeded"
    assert error.message == (
        "stopped before a model call that could take up to 25 tokens: 0 are spent of the "
        "verify budget of 20 tokens (execute: 60); raise the budget to go on"
    )


async def test_a_run_that_counted_plan_tokens_twice_still_replays(
    client: Client, task_queue: str, fake: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run recorded before the fix (no patch marker: the old rule let the verify call
    through) replays with the old rule, where the new one would refuse that call."""
    fake.push(SPEND, SPEND, SPEND)
    small = request(fake, "openai", "hi", max_tokens=10)
    asks = [Ask(request=small, phase="execute")] * 2
    asks.append(Ask(request=request(fake, "openai", "hi", max_tokens=25), phase="verify"))
    budget = BudgetLimits(total=100, shares={"plan": 0.1, "execute": 0.5, "verify": 0.2})
    with monkeypatch.context() as old_code:  # as code without the patch recorded it
        old_code.setattr(workflow, "patched", lambda _: False)
        handle, outcome = await run(client, task_queue, *asks, budget=budget)
    assert isinstance(outcome, AskResult), outcome.cause
    assert len(fake.requests) == 3
    await replays(client, handle)


def test_an_absolute_phase_cap_replaces_its_share() -> None:
    """phases={"plan": 50} with 1,000 total: plan 50, and its unspent 50 flows on."""
    budget = BudgetLimits(total=1000, phases={"plan": 50})
    assert budget.allowance("plan", {}) == 50
    assert budget.allowance("execute", {"plan": 20}) == 730


@pytest.mark.parametrize(
    ("shares", "error"),
    [
        ({"plan": 0.5, "execute": 0.7}, "add up to 1.2, more than 1"),
        ({"review": 0.1}, "unknown phase(s) ['review']"),
        ({"plan": -0.1}, "between 0 and 1"),
    ],
)
def test_bad_shares_are_refused(shares: dict, error: str) -> None:
    """Shares over 1 together, of unknown phases, or negative: a validation error."""
    with pytest.raises(ValueError, match=re.escape(error)):
        BudgetLimits(total=100, shares=shares)


async def test_execute_runs_out_while_verify_keeps_its_reserve(
    client: Client, task_queue: str, fake: FakeLLM
) -> None:
    """A 100-token budget split plan 0.1 / execute 0.5 / verify 0.4: execute may spend 60 (its
    50 and plan's unspent 10), so after two execute calls (60) a verify call still goes
    through, and a third execute call is refused, naming the execute budget."""
    fake.push(SPEND, SPEND, SPEND, SPEND)
    req = request(fake, "openai", "hi", max_tokens=10)
    budget = BudgetLimits(total=100, shares={"plan": 0.1, "execute": 0.5, "verify": 0.4})
    asks = [Ask(request=req, phase=p) for p in ("execute", "execute", "verify", "execute")]
    _, outcome = await run(client, task_queue, *asks, budget=budget)
    assert len(fake.requests) == 3
    error = workflow_error(outcome)
    assert error.type == "BudgetExceeded"
    assert error.message == (
        "stopped before a model call that could take up to 10 tokens: 60 are spent of the "
        "execute budget of 60 tokens (execute: 60, verify: 30); raise the budget to go on"
    )


def test_status_shows_each_phase_against_its_allowance() -> None:
    """`agentparallels status` prints a tokens row: spent/allowance per phase."""
    p = Progress(
        job_id="j",
        phase="edit",
        tokens=45,
        budget=(
            PhaseBudget(phase="plan", spent=0, allowance=100),
            PhaseBudget(phase="execute", spent=40, allowance=800),
            PhaseBudget(phase="verify", spent=5, allowance=960),
        ),
    )
    assert progress.table(p).splitlines()[1] == (
        "  tokens: plan 0/100, execute 40/800, verify 5/960"
    )
    unlimited = p.model_copy(
        update={"budget": (PhaseBudget(phase="execute", spent=45, allowance=None),)}
    )
    assert progress.budget(unlimited) == "execute 45"


def test_compaction_keeps_tool_results_with_the_call_they_answer() -> None:
    """Dropping turns never leaves a tool result without its assistant call (providers refuse
    that): the last call and every result of it stay."""
    from agentparallels.core.llm import Message, ModelRequest
    from agentparallels.core.tools import ToolCall
    from agentparallels.workflows.model_step import compact

    calls = (ToolCall(id="c1", name="read_file"), ToolCall(id="c2", name="search"))
    messages = (
        Message(role="system", content="s"),
        Message(role="user", content="task"),
        Message(role="assistant", content="", tool_calls=(ToolCall(id="c0", name="x"),)),
        Message(role="tool", content="old", tool_call_id="c0"),
        Message(role="assistant", content="", tool_calls=calls),
        Message(role="tool", content="r1", tool_call_id="c1"),
        Message(role="tool", content="r2", tool_call_id="c2"),
    )
    smaller = compact(ModelRequest(model="openai:m", messages=messages))
    roles = [(m.role, m.tool_call_id) for m in smaller.messages]
    assert roles == [
        ("system", None),
        ("user", None),
        ("user", None),
        ("assistant", None),
        ("tool", "c1"),
        ("tool", "c2"),
    ]
    assert "2 earlier messages were dropped" in smaller.messages[2].content
