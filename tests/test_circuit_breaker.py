"""Circuit breaker: opens on consecutive failures, half-opens after a cool-down."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.client import Client
    from temporalio.worker import Worker

    from agentparallels.workflows.circuit_breaker import CircuitBreaker


@workflow.defn(name="test.breaker.Script")
class BreakerScriptWorkflow:
    @workflow.run
    async def run(self, threshold: int, cooldown_ms: int | None, ops: list[str]) -> list[str]:
        """Play ``ops`` ("fail", "ok", "ask", "trip", "wait <ms>") on a breaker; trace each."""
        cooldown = None if cooldown_ms is None else timedelta(milliseconds=cooldown_ms)
        breaker = CircuitBreaker(threshold, cooldown)
        trace = []
        for op in ops:
            if op == "fail":
                trace.append(f"fail: {breaker.record_failure()} {breaker.failures}")
                continue
            if op == "ok":
                breaker.record_success()
            elif op == "ask":
                trace.append(f"ask: {'allowed' if breaker.allows() else 'refused'}")
                continue
            elif op == "trip":
                breaker.trip()
            else:
                await workflow.sleep(timedelta(milliseconds=int(op.split()[1])))
            trace.append(f"{op}: {breaker.state} {breaker.failures}")
        return trace


async def play(
    client: Client, task_queue: str, threshold: int, cooldown_ms: int | None, ops: list[str]
) -> list[str]:
    async with Worker(client, task_queue=task_queue, workflows=[BreakerScriptWorkflow]):
        return await client.execute_workflow(
            BreakerScriptWorkflow.run,
            args=[threshold, cooldown_ms, ops],
            id=f"{task_queue}-wf",
            task_queue=task_queue,
        )


async def test_opens_after_exactly_threshold_failures(client: Client, task_queue: str) -> None:
    """With threshold 3 the third consecutive failure opens it; with no cool-down it stays so."""
    ops = ["ask", "fail", "fail", "ask", "fail", "ask", "wait 200", "ask"]
    assert await play(client, task_queue, 3, None, ops) == [
        *["ask: allowed", "fail: closed 1", "fail: closed 2", "ask: allowed"],
        *["fail: open 3", "ask: refused", "wait 200: open 3", "ask: refused"],
    ]


async def test_success_resets_the_count(client: Client, task_queue: str) -> None:
    """fail, fail, success, fail, fail with threshold 3 never opens: only consecutive ones count."""
    ops = ["fail", "fail", "ok", "fail", "fail", "ask"]
    assert await play(client, task_queue, 3, None, ops) == [
        *["fail: closed 1", "fail: closed 2", "ok: closed 0"],
        *["fail: closed 1", "fail: closed 2", "ask: allowed"],
    ]


async def test_half_open_trial_closes_on_success(client: Client, task_queue: str) -> None:
    """After the cool-down one trial goes through; its success closes the breaker."""
    ops = ["fail", "fail", "ask", "wait 300", "ask", "ok", "fail", "ask"]
    assert await play(client, task_queue, 2, 250, ops) == [
        *["fail: closed 1", "fail: open 2", "ask: refused", "wait 300: half-open 2"],
        *["ask: allowed", "ok: closed 0", "fail: closed 1", "ask: allowed"],
    ]


async def test_half_open_trial_failure_reopens_for_another_cooldown(
    client: Client, task_queue: str
) -> None:
    """A failed trial re-opens the breaker at once, and the cool-down starts over."""
    ops = ["fail", "wait 300", "fail", "ask", "wait 300", "ask"]
    assert await play(client, task_queue, 1, 250, ops) == [
        *["fail: open 1", "wait 300: half-open 1", "fail: open 2", "ask: refused"],
        *["wait 300: half-open 2", "ask: allowed"],
    ]


async def test_stays_open_until_the_cooldown_has_passed(client: Client, task_queue: str) -> None:
    """A cool-down longer than the time waited keeps the breaker open."""
    ops = ["fail", "wait 200", "ask"]
    assert await play(client, task_queue, 1, 3_600_000, ops) == [
        *["fail: open 1", "wait 200: open 1", "ask: refused"]
    ]


async def test_trip_opens_at_once_and_cools_down_like_any_opening(
    client: Client, task_queue: str
) -> None:
    """trip() opens a breaker with no failures counted; the cool-down then half-opens it."""
    ops = ["trip", "ask", "wait 300", "ask", "ok"]
    assert await play(client, task_queue, 5, 250, ops) == [
        *["trip: open 0", "ask: refused", "wait 300: half-open 0", "ask: allowed"],
        "ok: closed 0",
    ]


@pytest.mark.parametrize("threshold", [0, -1])
def test_threshold_below_one_is_refused(threshold: int) -> None:
    """A threshold under 1 is a ValueError, raised before any workflow state is touched."""
    with pytest.raises(ValueError, match="^threshold must be at least 1$"):
        CircuitBreaker(threshold)


def test_new_breaker_is_closed() -> None:
    """A fresh breaker is closed with no failures (no workflow needed to ask)."""
    breaker = CircuitBreaker(1)
    assert (breaker.state, breaker.failures, breaker.allows()) == ("closed", 0, True)
