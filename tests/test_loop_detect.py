"""Loop detection: per-file attempt counts and repeated-outcome fingerprints stop a stuck agent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.worker import Worker

    from agentparallels import worker
    from agentparallels.core.errors import LOOP_DETECTED
    from agentparallels.core.models import Limits, ModelEdit, RefactorInput
    from agentparallels.testing.fake_llm import FakeLLM
    from agentparallels.workflows.circuit_breaker import CircuitBreaker
    from agentparallels.workflows.loop_detect import (
        LoopDetector,
        LoopLimits,
        ToolLoops,
        fingerprint,
    )
    from tests.support.repos import make_repo, snapshot, start_job

FILES = {"pkg/__init__.py": "", "pkg/a.py": "def old_name() -> int:\n    return 1\n"}
BAD = "```python\ndef broken(:\n```"
GOOD = "```python\ndef new_name() -> int:\n    return 1\n```"


def loop_error(detector: LoopDetector, *attempts: tuple[str, str, str]) -> str | None:
    """Record ``attempts``; the message of the loop error they raise, if any."""
    try:
        for action, path, outcome in attempts:
            detector.record(action, path, outcome)
    except ApplicationError as e:
        assert e.type == LOOP_DETECTED and e.non_retryable
        return e.message
    return None


def test_the_third_identical_outcome_is_a_loop() -> None:
    """Two identical attempts are allowed; the third trips, naming the file and the action."""
    same = ("edit", "pkg/a.py", "ruff said:\nE999 SyntaxError")
    assert loop_error(LoopDetector(), same, same) is None
    message = loop_error(LoopDetector(), same, same, same)
    assert message is not None
    assert message.startswith("loop detected at pkg/a.py: edit ended the same way 3 times")
    assert fingerprint(*same) in message and "E999 SyntaxError" in message


def test_different_outcomes_are_not_a_loop_until_the_file_cap() -> None:
    """Attempts that each fail differently go on, up to the per-file cap."""
    attempts = [("edit", "a.py", f"error {i}") for i in range(4)]
    assert loop_error(LoopDetector(LoopLimits(max_edits_per_file=5)), *attempts) is None
    message = loop_error(LoopDetector(LoopLimits(max_edits_per_file=4)), *attempts)
    assert message == (
        "loop detected at a.py: 4 attempts at this one file (limit 4); "
        "the last edit did not settle it"
    )


def test_outcomes_on_other_files_count_apart() -> None:
    """The same outcome on two files is two different fingerprints."""
    detector = LoopDetector(LoopLimits(max_repeats=2))
    assert loop_error(detector, ("edit", "a.py", "x"), ("edit", "b.py", "x")) is None


@workflow.defn(name="test.loop.Trip")
class TripWorkflow:
    @workflow.run
    async def run(self) -> list[str]:
        """A loop trips the breaker it guards: open, and refusing further calls."""
        breaker = CircuitBreaker(threshold=10)
        detector = LoopDetector(LoopLimits(max_repeats=2), breaker=breaker)
        states = [breaker.state]
        try:
            detector.record("edit", "a.py", "same")
            detector.record("edit", "a.py", "same")
        except ApplicationError:
            states.append(breaker.state)
        return [*states, "allowed" if breaker.allows() else "refused"]


async def test_a_loop_opens_the_breaker_it_guards(client: Client, task_queue: str) -> None:
    """The detector opens its breaker before raising, although the breaker's count is low."""
    async with Worker(client, task_queue=task_queue, workflows=[TripWorkflow]):
        result = await client.execute_workflow(
            TripWorkflow.run, id=f"{task_queue}-wf", task_queue=task_queue
        )
    assert result == ["closed", "open", "refused"]


@pytest.mark.fake_llm([{"content": BAD}] * 8, default={"content": GOOD})
async def test_model_repeating_a_bad_edit_is_stopped_and_rolled_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """With the breaker set to 10, a model that answers the same bad edit to the same feedback
    is stopped by loop detection after its third answer, naming the file; nothing is changed."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="rename old_name to new_name",
            files=("pkg/a.py",),
            model="openai:fake-coder",
            base_url=fake.openai_base_url,
        ),
        limits=Limits(parallel=1, breaker_threshold=10),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    calls = len(fake.requests)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == LOOP_DETECTED
    assert "loop detected at pkg/a.py: edit ended the same way 3 times" in cause.message
    assert "The job was rolled back" in cause.message
    assert calls == 3
    assert snapshot(repo) == before


def test_tool_loops_see_progress_warn_once_then_stop() -> None:
    """The same call with no change to the worktree: warned at the third, stopped at the
    fourth. A change in between resets the count."""
    loops = ToolLoops(repeat_limit=3)
    call = 'read_file({"path":"a.py"})'
    assert loops.after(call, "tree-1", edited=None, checked=None) == ""
    assert loops.after(call, "tree-2", edited=None, checked=None) == ""  # progress: reset
    assert loops.after(call, "tree-2", edited=None, checked=None) == ""
    assert "Loop warning" in loops.after(call, "tree-2", edited=None, checked=None)
    with pytest.raises(ApplicationError) as stopped:
        loops.after(call, "tree-2", edited=None, checked=None)
    assert stopped.value.type == LOOP_DETECTED and "read_file" in stopped.value.message


def test_tool_loops_stop_blind_edits_of_one_file_until_a_check_passes() -> None:
    loops = ToolLoops(edits_without_check=2)
    for n in range(2):
        assert loops.after(f"edit {n}", f"t{n}", edited="a.py", checked=None) == ""
    assert loops.after("check", "t1", edited=None, checked=True) == ""  # a pass resets it
    for n in range(2, 4):
        assert loops.after(f"edit {n}", f"t{n}", edited="a.py", checked=None) == ""
    assert "a.py edited 3 times" in loops.after("edit 4", "t4", edited="a.py", checked=None)
    with pytest.raises(ApplicationError, match="a.py edited 4 times"):
        loops.after("edit 5", "t5", edited="a.py", checked=False)
