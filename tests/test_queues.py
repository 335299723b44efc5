"""Workers take only the steps they can do: each CLI's job runs on its own worker, model calls
that need a key run only on workers holding it, and the commands that steer a job start no
worker. Real CLI and worker processes on the dev server; who ran each step is read from the
jobs' histories (the identity of the worker that started each task)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from argparse import Namespace
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError

from agentparallels import queues, worker
from agentparallels.cli.common import DEFAULT_TASK_QUEUE, job_queue
from agentparallels.core.models import ModelEdit, Progress, RefactorInput
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.cli import cli_env, cli_process, run_cli_async
from tests.support.repos import make_repo, snapshot, src_layout_repo, start_job

TIMEOUT = 300.0
"""Generous: the machine is shared and loaded."""
STEER_S = 150.0
"""The most a steering command may take, start-up and the job's rollback included (it takes
seconds; a command that waited for a worker of its own would never return)."""
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
ANSWER = {"content": "```python\nVALUE = 1\n```"}
"""The fake model's answer to every edit: the whole new file."""
T = TypeVar("T")


def machine_env(
    client: Client, tmp_path: Path, name: str, queue: str, **extra: str
) -> dict[str, str]:
    """A command's environment: no model key unless given, the test's queue as the default,
    its own cache and state (as on a machine of its own)."""
    machine = tmp_path / "machines" / name
    return cli_env(
        client,
        cache=machine / "cache",
        state=machine / "state",
        drop=KEYS,
        AGENTPARALLELS_TASK_QUEUE=queue,
        **extra,
    )


async def until(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Wait until ``probe()`` returns something (errors count as not yet)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            if (found := await probe()) is not None:
                return found
        except Exception:  # the job or its worker is not there yet
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def awaiting_approval(client: Client, job_id: str) -> str:
    """Wait until the job waits for a decision; its task queue."""
    handle = client.get_workflow_handle(job_id)

    async def probe() -> str | None:
        progress = await handle.query("progress", result_type=Progress)
        return (
            (await handle.describe()).task_queue if progress.phase == "awaiting-approval" else None
        )

    return await until(probe, f"{job_id} to await approval")


async def polled(
    client: Client, queue: str, kind: int = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
) -> None:
    async def probe() -> bool | None:
        return True if await queues.pollers_of(client, queue, kind) else None

    await until(probe, f"a worker polling {queue}")


async def no_pollers(client: Client, queue: str) -> bool:
    """No worker polls ``queue`` (for workflow or activity tasks)."""
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    return not any([await queues.pollers_of(client, queue, k) for k in kinds])


async def steps(client: Client, job_id: str) -> list[tuple[str, str, str]]:
    """(task kind, task queue, worker identity) of every workflow task and activity of the job
    and of its child workflows, from their histories."""
    found: list[tuple[str, str, str]] = []
    todo = [job_id]
    while todo:
        scheduled: dict[int, tuple[str, str]] = {}
        queue = ""
        async for event in client.get_workflow_handle(todo.pop()).fetch_history_events():
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                queue = event.workflow_execution_started_event_attributes.task_queue.name
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                identity = event.workflow_task_started_event_attributes.identity
                found.append(("workflow task", queue, identity))
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = (attrs.activity_type.name, attrs.task_queue.name)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                found.append((*scheduled[attrs.scheduled_event_id], attrs.identity))
            elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
                child = event.child_workflow_execution_started_event_attributes
                todo.append(child.workflow_execution.workflow_id)
    return found


def pids(found: list[tuple[str, str, str]]) -> set[str]:
    """The processes (by pid) whose workers ran these tasks (identity ``pid@host``)."""
    return {identity.split("@")[0] for _, _, identity in found}


def model_job(repo: Path) -> RefactorInput:
    """A model edit with no base URL: the provider's key is needed (the keyed worker's
    OPENAI_BASE_URL points the SDK at the fake)."""
    return RefactorInput(
        repository=str(repo),
        edit=ModelEdit(instruct="set VALUE to 1", model="openai:fake-coder"),
    )


FILES = {"pkg/__init__.py": "", **{f"pkg/m{i}.py": f"VALUE = {i}\n" for i in range(2, 6)}}


async def test_two_cli_jobs_never_run_each_others_steps(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """CLI B (no key) holds its job at the approval gate, its worker polling; meanwhile CLI A
    (with the key) runs a model edit. Every step of A, model calls included, ran on A's worker
    and every step of B on B's; each job ran on a queue of its own command; `reject` of B
    returns promptly and no worker polled the default queue."""
    repo_a, repo_b = make_repo(tmp_path / "a", FILES), src_layout_repo(tmp_path / "b")
    id_a, id_b = f"a-{task_queue[-8:]}", f"b-{task_queue[-8:]}"
    env_b = machine_env(client, tmp_path, "b", task_queue)
    with (
        FakeLLM(default=ANSWER) as fake,
        cli_process(
            "refactor",
            str(repo_b),
            "--rename",
            "pkg.money.to_cents=as_cents",
            "--require-approval",
            "--job-id",
            id_b,
            env=env_b,
        ) as cli_b,
    ):
        queue_b = await awaiting_approval(client, id_b)
        env_a = machine_env(
            client,
            tmp_path,
            "a",
            task_queue,
            OPENAI_API_KEY="sk-test-queues",
            OPENAI_BASE_URL=fake.openai_base_url,
        )
        cli_a = await run_cli_async(
            "refactor",
            str(repo_a),
            "--instruct",
            "set VALUE to 1",
            "--model",
            "openai:fake-coder",
            "--parallel",
            "2",
            "--max-files-per-shard",
            "2",
            "--job-id",
            id_a,
            env=env_a,
            timeout=TIMEOUT,
        )
        assert cli_a.returncode == 0, cli_a.stderr
        assert f"job {id_a} succeeded: 5 files changed" in cli_a.stdout
        assert cli_b.poll() is None  # B's worker was there all along
        rejected = await run_cli_async(
            "reject", id_b, "--reason", "done", env=env_b, timeout=TIMEOUT
        )
        assert rejected.returncode == 0, rejected.stderr
        assert f"job {id_b} was rejected and rolled back" in rejected.stdout
        assert rejected.took < STEER_S
        await asyncio.to_thread(cli_b.wait, TIMEOUT)
    ran_a, ran_b = await steps(client, id_a), await steps(client, id_b)
    assert (pids(ran_a), pids(ran_b)) == ({str(cli_a.pid)}, {str(cli_b.pid)})
    queue_a = (await client.get_workflow_handle(id_a).describe()).task_queue
    for queue in (queue_a, queue_b):
        assert re.fullmatch(rf"{re.escape(task_queue)}\.cli-[0-9a-f]{{8}}", queue)
    assert queue_a != queue_b
    model_calls = [queue for kind, queue, _ in ran_a if kind == "llm.call"]
    assert model_calls == [f"{queue_a}.model.openai"] * 5
    assert {queue for kind, queue, _ in ran_a if kind != "llm.call"} == {queue_a}
    assert {queue for _, queue, _ in ran_b} == {queue_b}
    assert await no_pollers(client, task_queue)


@contextmanager
def worker_process(
    client: Client, tmp_path: Path, name: str, queue: str, **keys: str
) -> Iterator[int]:
    """An `agentparallels worker` on ``queue`` with only ``keys`` in its environment; its pid."""
    env = machine_env(client, tmp_path, name, queue, **keys)
    with cli_process("worker", "--task-queue", queue, env=env) as proc:
        yield proc.pid
        proc.send_signal(signal.SIGTERM)


async def test_a_worker_without_the_key_never_takes_a_model_step(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """With only a keyless worker on the queue, a model edit that needs OPENAI_API_KEY fails at
    once, naming the key and the queue; with a keyed worker beside it, every model call runs on
    the keyed one (the keyless one polls the same queues otherwise)."""
    first, second = make_repo(tmp_path / "one", FILES), make_repo(tmp_path / "two", FILES)
    with FakeLLM(default=ANSWER) as fake, worker_process(client, tmp_path, "keyless", task_queue):
        await polled(client, task_queue)
        started = time.monotonic()
        with pytest.raises(WorkflowFailureError) as failed:
            handle = await start_job(client, task_queue, model_job(first))
            await asyncio.wait_for(handle.result(), TIMEOUT)
        took = time.monotonic() - started
        message = str(failed.value.cause)
        assert f"no worker with OPENAI_API_KEY polls {task_queue}.model.openai" in message
        assert "set OPENAI_API_KEY in the environment of a worker of this job" in message
        assert took < STEER_S
        assert fake.requests == []
        keys = {"OPENAI_API_KEY": "sk-test-queues", "OPENAI_BASE_URL": fake.openai_base_url}
        with worker_process(client, tmp_path, "keyed", task_queue, **keys) as keyed:
            await polled(
                client, f"{task_queue}.model.openai", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
            )
            handle = await start_job(client, task_queue, model_job(second))
            result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert len(result.files_changed) == 5
    model_calls = [
        (queue, identity)
        for kind, queue, identity in await steps(client, handle.id)
        if kind == "llm.call"
    ]
    assert len(model_calls) == 5
    assert {queue for queue, _ in model_calls} == {f"{task_queue}.model.openai"}
    assert pids([("", "", identity) for _, identity in model_calls]) == {str(keyed)}


async def test_steering_commands_start_no_worker_and_return_promptly(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Two CLI jobs wait at the approval gate. `pause`, `unpause` and `approve` of one and
    `cancel` of the other each return within a bounded time, carried out by the job's own
    worker; none of them started a worker (no poller on the default queue)."""
    repo_x, repo_y = src_layout_repo(tmp_path / "x"), src_layout_repo(tmp_path / "y")
    before_y = snapshot(repo_y)
    id_x, id_y = f"x-{task_queue[-8:]}", f"y-{task_queue[-8:]}"
    env = machine_env(client, tmp_path, "steer", task_queue)
    rename = ("--rename", "pkg.money.to_cents=as_cents", "--require-approval")
    with (
        cli_process(
            "refactor",
            str(repo_x),
            *rename,
            "--job-id",
            id_x,
            env=machine_env(client, tmp_path, "x", task_queue),
        ) as cli_x,
        cli_process(
            "refactor",
            str(repo_y),
            *rename,
            "--job-id",
            id_y,
            env=machine_env(client, tmp_path, "y", task_queue),
        ) as cli_y,
    ):
        await awaiting_approval(client, id_x)
        await awaiting_approval(client, id_y)
        paused = await run_cli_async("pause", id_x, env=env, timeout=TIMEOUT)
        unpaused = await run_cli_async("unpause", id_x, env=env, timeout=TIMEOUT)
        approved = await run_cli_async(
            "approve", id_x, "--reason", "fine", env=env, timeout=TIMEOUT
        )
        cancelled = await run_cli_async("cancel", id_y, env=env, timeout=TIMEOUT)
        codes = await asyncio.to_thread(lambda: (cli_x.wait(TIMEOUT), cli_y.wait(TIMEOUT)))
    steered = (paused, unpaused, approved, cancelled)
    assert [d.returncode for d in steered] == [0, 0, 0, 1], "".join(d.stderr for d in steered)
    assert f"job {id_x} pauses after the steps it is running" in paused.stdout
    assert f"job {id_x} succeeded: 4 files changed" in approved.stdout
    assert f"job {id_y} was cancelled" in cancelled.stderr
    assert max(d.took for d in steered) < STEER_S
    assert codes == (0, 1)  # the jobs' own commands saw the same outcomes
    assert snapshot(repo_y) == before_y
    assert await no_pollers(client, task_queue)


async def test_steering_a_job_whose_worker_is_gone_says_how_to_go_on(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The command that ran a job is killed while the job awaits approval: `cancel --wait 3`
    returns with exit 1, naming the job's queue and the command that serves it; a worker
    started on that queue rolls the job back. On a job no worker ever served, `approve`,
    `reject` and `pause` say the same at once."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    job_id = f"gone-{task_queue[-8:]}"
    env = machine_env(client, tmp_path, "steer", task_queue)
    with cli_process(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=as_cents",
        "--require-approval",
        "--job-id",
        job_id,
        env=machine_env(client, tmp_path, "gone", task_queue),
    ) as gone:
        queue = await awaiting_approval(client, job_id)
        gone.kill()
    cancelled = await run_cli_async("cancel", job_id, "--wait", "3", env=env, timeout=TIMEOUT)
    assert cancelled.returncode == 1, cancelled.stderr
    assert (
        f"job {job_id} is asked to cancel, but no worker serves job {job_id}'s task queue "
        f"'{queue}'" in cancelled.stderr
    )
    assert (
        f"start `agentparallels worker --task-queue {queue}`, then it rolls back"
        in cancelled.stderr
    )
    assert cancelled.took < STEER_S
    handle = client.get_workflow_handle(job_id)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=queue)):
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), TIMEOUT)
    assert isinstance(failed.value.cause, CancelledError)
    assert snapshot(repo) == before

    nobody = f"{task_queue}-nobody"
    started = await run_cli_async(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        "--require-approval",
        "--detach",
        "--task-queue",
        nobody,
        env=env,
        timeout=TIMEOUT,
    )
    assert started.returncode == 0, started.stderr
    detached = started.stdout.strip()
    for args in (["approve"], ["reject", "--reason", "no"], ["pause"]):
        refused = await run_cli_async(*args, detached, "--wait", "3", env=env, timeout=TIMEOUT)
        assert refused.returncode == 1, refused.stderr
        assert f"no worker serves job {detached}'s task queue '{nobody}'" in refused.stderr
        assert refused.took < STEER_S
    assert "nothing was decided" in refused.stderr or "asked to be paused" in refused.stderr
    assert await no_pollers(client, task_queue) and await no_pollers(client, nobody)


def test_a_command_with_its_own_worker_runs_its_job_on_a_queue_of_its_own() -> None:
    """Its own queue unless --task-queue is given or no worker runs here (--no-worker,
    --detach); a resumed job gets a new one from the old run's base queue, never the old
    run's own (whose command, and worker, are gone)."""
    own = Namespace(task_queue=None, no_worker=False, detach=False)
    private = re.compile(rf"{re.escape(DEFAULT_TASK_QUEUE)}\.cli-[0-9a-f]{{8}}")
    assert private.fullmatch(job_queue(own)) and job_queue(own) != job_queue(own)
    assert job_queue(Namespace(task_queue=None, no_worker=True, detach=False)) == DEFAULT_TASK_QUEUE
    assert job_queue(Namespace(task_queue=None, no_worker=False, detach=True)) == DEFAULT_TASK_QUEUE
    assert job_queue(Namespace(task_queue="mine", no_worker=False, detach=False)) == "mine"
    old = "q.cli-0123abcd"
    again = job_queue(own, old)
    assert re.fullmatch(r"q\.cli-[0-9a-f]{8}", again) and again != old
    assert job_queue(Namespace(task_queue=None, no_worker=True, detach=False), old) == "q"
    assert queues.base_of("q.cli-0123abcd") == queues.base_of("q") == "q"
