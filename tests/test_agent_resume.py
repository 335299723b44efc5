"""`agentparallels resume` on agent jobs, on a real dev server with a scripted model server:
finished units are kept (their model calls are not made again), an unfinished unit goes on
from its last checkpoint commit, ``--from-unit`` redoes a unit and what depends on it, and
the failed run leaves the user's repository as it was until then."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import worker
from agentparallels.core import names
from agentparallels.core.agentjob import PLANNER_MARKER, AgentLimits, AgentResult, unit_marker
from agentparallels.core.agentreview import PlanApproval
from agentparallels.core.checklist import Decision
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import CHECK, FILES, FINISH, edit, plan, tools, unit
from tests.support.cli import run_cli_async
from tests.support.repos import git, make_repo, snapshot
from tests.support.waits import until
from tests.test_agent import failure_of, job, start
from tests.test_agent_review import rename_unit, wait_for_gate


def calls(fake: FakeLLM, marker: str) -> list[Any]:
    """The model requests of one conversation (the planner's, or one unit's)."""
    return [r for r in fake.requests if marker in json.dumps(r.body)]


def counts(fake: FakeLLM, *markers: str) -> dict[str, int]:
    return {m: len(calls(fake, m)) for m in markers}


async def resume_cli(client: Client, *args: str) -> Any:
    """``agentparallels resume ARGS`` with its own worker, as a user runs it."""
    return await run_cli_async("resume", *args, address=client, timeout=240)


async def resumed_result(client: Client, job_id: str) -> AgentResult:
    handle: WorkflowHandle[Any, AgentResult] = client.get_workflow_handle(
        job_id, result_type=AgentResult
    )
    return await handle.result()


PLANNER, FIRST, SECOND = PLANNER_MARKER, unit_marker("first"), unit_marker("second")


async def test_resume_keeps_the_finished_unit_and_the_failed_one_goes_on_from_its_checkpoint(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Unit second (after first) makes a good edit, then a bad one, and trips the breaker: the
    job rolls back, leaving the user's branches and working tree as they were. `resume`
    starts JOB-resume-1, which makes no planner call and no call for first (its head and
    summary are kept), and runs second from its last checkpoint: it is told why it stopped,
    fixes its bad edit and finishes; the job publishes both units' work."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    the_plan = plan(unit("first", ["pkg/a.py"]), unit("second", ["pkg/b.py"], "first"))
    fake.push_thread(PLANNER, the_plan, the_plan)  # the second for a retried call, if any
    fake.push_thread(
        FIRST, tools(edit("pkg/a.py", "return 1", "return 1  # first")), tools(CHECK), tools(FINISH)
    )
    fake.push_thread(
        SECOND,
        tools(edit("pkg/b.py", "return old_name() + 1", "return old_name() + 2")),
        tools(edit("pkg/b.py", "old_name() + 2", "(old_name() + 2")),
        tools(CHECK),
        tools(CHECK),
        tools(CHECK),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        failed = await start(client, task_queue, job(repo, fake, test_cmd=None))
        error = await failure_of(failed)
    assert "unit second: 3 consecutive failed checks" in error.message
    assert snapshot(repo) == before  # branches, HEAD, index, working tree: all as they were
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    made = counts(fake, PLANNER, FIRST, SECOND)

    fake.push_thread(
        SECOND,
        tools(edit("pkg/b.py", "(old_name() + 2", "old_name() + 2")),
        tools(CHECK),
        tools(FINISH),
    )
    done = await resume_cli(client, failed.id)

    assert done.returncode == 0, done.stderr
    new = f"{failed.id}-resume-1"
    assert f"job {new} resumes job {failed.id} with its plan" in done.stderr
    now = counts(fake, PLANNER, FIRST, SECOND)
    assert now == {PLANNER: made[PLANNER], FIRST: made[FIRST], SECOND: made[SECOND] + 3}
    told = json.dumps(calls(fake, SECOND)[made[SECOND]].body["messages"])
    assert "did not finish" in told and "3 consecutive failed checks" in told
    result = await resumed_result(client, new)
    assert result.resumed_from == failed.id
    assert [(u.name, u.kept_from) for u in result.units] == [("first", failed.id), ("second", None)]
    assert result.files_changed == ("pkg/a.py", "pkg/b.py")
    assert result.units[1].files_changed == ("pkg/b.py",)
    assert "return 1  # first" in git(repo, "show", f"{result.branch}:pkg/a.py")
    assert "return old_name() + 2" in git(repo, "show", f"{result.branch}:pkg/b.py")
    # The checkpoint's good edit was not made again: it is on the branch as the failed run made it.
    subjects = git(
        repo, "log", "--format=%s", f"{result.base_commit}..{result.branch}", "--", "pkg/b.py"
    )
    assert subjects.splitlines().count("agent edit: pkg/b.py") == 3
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    assert f"resumes job {failed.id}" in done.stdout
    assert f"unit first: pkg/a.py (kept from job {failed.id}, no model call)" in done.stdout

    again = await resume_cli(client, new)  # succeeded: nothing to resume
    assert again.returncode == 2
    assert f"job {new} has completed: there is nothing to resume" in again.stderr


async def test_from_unit_redoes_that_unit_and_its_dependants_and_keeps_the_rest(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Three finished units (second depends on first; third on neither) and a check command
    that fails on the merge, which the repair unit cannot fix: the job fails. `resume
    --from-unit first --check-cmd ''` runs first and second again from their start (no
    checkpoint note) and keeps third; an unknown unit is refused first, with exit code 2."""
    repo = make_repo(tmp_path / "repo", FILES)
    third = unit_marker("third")
    the_plan = plan(
        unit("first", ["pkg/a.py"]),
        unit("second", ["pkg/b.py"], "first"),
        unit("third", ["tests/test_a.py"]),
    )
    fake.push_thread(PLANNER, the_plan, the_plan)  # the second for a retried call, if any
    for marker, path, old in (
        (FIRST, "pkg/a.py", "return 1"),
        (SECOND, "pkg/b.py", "return old_name() + 1"),
        (third, "tests/test_a.py", "assert old_name() == 1"),
    ):
        # finish twice: the first is answered with a nudge to run a check (it would fail)
        fake.push_thread(marker, tools(edit(path, old, old + "  # done")), *[tools(FINISH)] * 2)
    fake.push_thread(unit_marker("repair"), tools(FINISH))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, check_cmd="test -f no-such-file")
        failed = await start(client, task_queue, inp)
        await failure_of(failed)
    markers = (PLANNER, FIRST, SECOND, third, unit_marker("repair"))
    made = counts(fake, *markers)

    unknown = await resume_cli(client, failed.id, "--from-unit", "fourth")
    assert unknown.returncode == 2
    assert "--from-unit fourth: job" in unknown.stderr
    assert "its units: first, second, third" in unknown.stderr

    again = edit("pkg/a.py", "return 1", "return 1  # again")
    fake.push_thread(FIRST, tools(again, CHECK), tools(FINISH))
    fake.push_thread(SECOND, tools(edit("pkg/b.py", "+ 1", "+ 1  # again"), CHECK), tools(FINISH))
    done = await resume_cli(client, failed.id, "--from-unit", "first", "--check-cmd", "")

    assert done.returncode == 0, done.stderr
    assert "run again from the start, as asked: first, second" in done.stderr
    redone = {FIRST: 2, SECOND: 2}  # only they ask the model again, two calls each
    assert counts(fake, *markers) == {m: made[m] + redone.get(m, 0) for m in markers}
    resumed_second = json.dumps([c.body for c in calls(fake, SECOND)[made[SECOND] :]])
    assert "did not finish" not in resumed_second
    result = await resumed_result(client, f"{failed.id}-resume-1")
    assert [(u.name, u.kept_from) for u in result.units] == [
        ("first", None),
        ("second", None),
        ("third", failed.id),
    ]
    assert "# again" in git(repo, "show", f"{result.branch}:pkg/a.py")
    assert "# done" not in git(repo, "show", f"{result.branch}:pkg/a.py")
    assert "assert old_name() == 1  # done" in git(repo, "show", f"{result.branch}:tests/test_a.py")


async def test_resume_refuses_unknown_and_running_agent_jobs(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """No such job, or a job still running: exit code 2, one line naming the fix, no new job."""
    missing = await resume_cli(client, "no-such-agent-job")
    assert missing.returncode == 2
    assert "no job no-such-agent-job" in missing.stderr

    repo = make_repo(tmp_path / "repo", FILES)
    running = await start(client, task_queue, job(repo, fake))  # no worker: it waits
    try:
        busy = await resume_cli(client, running.id)
        assert busy.returncode == 2
        assert f"job {running.id} is still running: follow it with" in busy.stderr
        assert "or cancel it first" in busy.stderr
        listed = [
            w.id async for w in client.list_workflows(f"WorkflowId = '{running.id}-resume-1'")
        ]
        assert listed == []
    finally:
        await running.terminate("the test is done with it")


async def exists(handle: WorkflowHandle) -> bool:
    try:
        await handle.describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_resumed_job_with_plan_approval_waits_at_the_gate_with_the_plan_it_went_on_with(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """With --approve-plan, the first plan is rejected, the second waits at the gate and the
    job is cancelled there. The resumed job shows the second plan (not the rejected first)
    at the gate, asks the planner nothing and edits nothing until it is approved."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER, plan(unit("everything", ["pkg/a.py"])))
    rename_unit(fake)  # the second plan, and its unit
    everything, rename = unit_marker("everything"), unit_marker("rename")
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        inp = job(repo, fake, test_cmd=None, plan_approval=PlanApproval(timeout_s=300))
        old = await start(client, task_queue, inp)
        await wait_for_gate(old, fake, 1)
        await old.execute_update(names.REJECT_UPDATE, Decision(reason="smaller"), result_type=str)
        await wait_for_gate(old, fake, 2)
        await old.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(old.result(), 240)

        resuming = asyncio.create_task(resume_cli(client, old.id))
        new = client.get_workflow_handle(f"{old.id}-resume-1", result_type=AgentResult)
        await until(lambda: exists(new), "the resumed job", 120)
        shown = await wait_for_gate(new, fake, 2)
        assert "- rename [python]: do rename" in shown["message"]
        assert "everything" not in shown["message"]
        assert counts(fake, everything, rename) == {everything: 0, rename: 0}
        await new.execute_update(names.APPROVE_UPDATE, Decision(reason="ok"), result_type=str)
        done = await resuming
    assert done.returncode == 0, done.stderr
    result = await resumed_result(client, new.id)
    assert [u.name for u in result.units] == ["rename"]
    assert [(a.gate, a.outcome) for a in result.approvals] == [("plan", "approved")]
    assert counts(fake, PLANNER, everything) == {PLANNER: 2, everything: 0}


async def continued(client: Client, job: WorkflowHandle) -> bool:
    """The job's first unit child's first run continued as new."""
    events = (await job.fetch_history()).events
    began = next(
        e for e in events if e.HasField("child_workflow_execution_started_event_attributes")
    )
    child = began.child_workflow_execution_started_event_attributes.workflow_execution
    first = await client.get_workflow_handle(child.workflow_id, run_id=child.run_id).fetch_history()
    return first.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")


def filler(n: int) -> list[dict[str, Any]]:
    """``n`` answers that read files: turns that change nothing and make history."""
    paths = sorted(FILES)
    return [tools(("read_file", {"path": paths[i % len(paths)]})) for i in range(n)]


async def test_resume_keeps_the_edits_a_unit_made_after_it_continued_as_new(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """A unit whose runs are short (``run_events``) edits pkg/a.py, reads until it has
    continued as new, edits pkg/b.py in its later run, then breaks it and trips the breaker.
    The resumed unit goes on from the later run's checkpoint: both edits are in its copy."""
    repo = make_repo(tmp_path / "repo", FILES)
    fake.push_thread(PLANNER, *[plan(unit("first", ["pkg/a.py", "pkg/b.py"]))] * 2)
    fake.push_thread(
        FIRST,
        tools(edit("pkg/a.py", "return 1", "return 1  # early")),
        tools(CHECK),
        *filler(30),
        tools(edit("pkg/b.py", "return old_name() + 1", "return old_name() + 2")),
        tools(edit("pkg/b.py", "old_name() + 2", "(old_name() + 2")),
        tools(CHECK),
        tools(CHECK),
        tools(CHECK),
    )
    limits = AgentLimits(parallel=1, turns=60, run_events=200, repeat_limit=40)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        failed = await start(client, task_queue, job(repo, fake, test_cmd=None, limits=limits))
        error = await failure_of(failed)
    assert "unit first: 3 consecutive failed checks" in error.message
    assert await continued(client, failed)  # before its later edits
    made = len(calls(fake, FIRST))

    fix = edit("pkg/b.py", "(old_name() + 2", "old_name() + 2")
    fake.push_thread(FIRST, tools(fix), tools(CHECK), tools(FINISH))
    done = await resume_cli(client, failed.id)

    assert done.returncode == 0, done.stderr
    told = json.dumps(calls(fake, FIRST)[made].body["messages"])
    assert "did not finish" in told and "in pkg/a.py, pkg/b.py. Read them" in told
    result = await resumed_result(client, f"{failed.id}-resume-1")
    assert "return 1  # early" in git(repo, "show", f"{result.branch}:pkg/a.py")
    assert "return old_name() + 2" in git(repo, "show", f"{result.branch}:pkg/b.py")
