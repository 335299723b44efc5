"""Event-driven choreography: job events for subscribers and the terminal, user hooks that veto
a step, and pause / unpause."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from argparse import Namespace

    from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from agentparallels import activities, worker
    from agentparallels.activities._defn import defn
    from agentparallels.activities.refactor import edit_files
    from agentparallels.cli import main
    from agentparallels.cli.events import events_command
    from agentparallels.cli.pause import pause_command, unpause_command
    from agentparallels.core.attributes import PHASE
    from agentparallels.core.errors import HOOK_VETOED, SANDBOX_DENIED, UsageError
    from agentparallels.core.events import (
        ENDINGS,
        EVENTS_QUERY,
        EVENTS_SIGNAL,
        EventPage,
        Hook,
        JobEvent,
    )
    from agentparallels.core.models import (
        CommandEdit,
        EditBatchInput,
        EditBatchResult,
        Limits,
        Progress,
        RefactorInput,
        RefactorResult,
    )
    from agentparallels.workflows.events import JobEvents
    from tests.support import waits
    from tests.support.cli import CLI, cli_env, run_cli_async
    from tests.support.repos import git, make_repo, snapshot, start_job
    from tests.support.rollback_audit import Audit
    from tests.support.waits import progress

APPEND = CommandEdit(command="echo '# edited' >> {file}")
TIMEOUT = 90


@workflow.defn(name="test.events.Listener")
class ListenerWorkflow:
    """A subscriber: collects the job's events until the job's last one."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    @workflow.signal(name=EVENTS_SIGNAL)
    def job_events(self, events: list[JobEvent]) -> None:
        self.events.extend(events)

    @workflow.run
    async def run(self) -> list[JobEvent]:
        await workflow.wait_condition(lambda: any(e.kind in ENDINGS for e in self.events))
        return self.events


@workflow.defn(name="test.events.Bounded")
class BoundedWorkflow:
    """Records ``n`` events in a log that keeps 3, then waits to be queried and released."""

    def __init__(self) -> None:
        self.log = JobEvents(keep=3)
        self.release = False

    @workflow.signal
    def done(self) -> None:
        self.release = True

    @workflow.run
    async def run(self, n: int) -> None:
        for i in range(n):
            self.log.record("file_edited", file=f"f{i}.py")
        await workflow.wait_condition(lambda: self.release)


HOLD = threading.Event()
HELD = threading.Event()
"""The stand-in edit step below waits on ``HOLD`` (setting ``HELD``) before editing a.py."""


@defn("refactor.edit_files", start_to_close=timedelta(minutes=5))
def held_edit_files(inp: EditBatchInput) -> EditBatchResult:
    """The real edit step, held before a.py until the test lets it go."""
    if inp.paths[0] == "a.py":
        HELD.set()
        HOLD.wait(TIMEOUT)
    return edit_files(inp)


@pytest.fixture
def held() -> Iterator[None]:
    """Edits of a.py wait until the test sets ``HOLD``."""
    HOLD.clear()
    HELD.clear()
    yield None
    HOLD.set()  # never leave a worker thread waiting


def build(
    client: Client, task_queue: str, *, hold: bool = False, audit: Audit | None = None
) -> Worker:
    """A worker (whose edits of a.py wait for ``HOLD`` if ``hold``; watched by ``audit``)."""
    acts = [held_edit_files if a is edit_files else a for a in activities.ALL] if hold else None
    if audit is not None:
        acts = audit.activities(acts)
    return worker.build_worker(
        client, worker.WorkerOptions(task_queue=task_queue), activity_fns=acts or activities.ALL
    )


async def until(check: Callable[[], Any], what: str) -> Any:
    return await waits.until(check, what, TIMEOUT)


def kind_of(line: str) -> str:
    """The kind of event an ``agentparallels events`` line shows."""
    return line.split()[2].rstrip(":")


@pytest.fixture
def address(env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test server's address, for commands run in this process."""
    target = env.client.service_client.config.target_host
    monkeypatch.setenv("TEMPORAL_ADDRESS", target)
    return target


async def failed_job(
    client: Client, task_queue: str, job: RefactorInput, audit: Audit | None = None
) -> tuple[str, ApplicationError]:
    """Run ``job``, which must fail: its id and the error it failed with. Its saga must have
    undone its own steps before the cleanup step (``audit`` shows how)."""
    audit = audit or Audit()
    async with build(client, task_queue, audit=audit):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), TIMEOUT)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert audit.left_by_saga() == []
    return handle.id, cause


async def test_subscribers_receive_the_jobs_events_in_order(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A subscriber named in the input and one that subscribed by signal both get started, one
    file_edited per file, then done, numbered in order; a subscriber that does not exist is
    dropped without failing the job."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    listen = f"{task_queue}-listen"
    job = RefactorInput(
        repository=str(repo), edit=APPEND, subscribers=("no-such-workflow", f"{task_queue}-l1")
    )
    async with Worker(client, task_queue=listen, workflows=[ListenerWorkflow]):
        first = await client.start_workflow(
            ListenerWorkflow.run, id=f"{task_queue}-l1", task_queue=listen
        )
        late = await client.start_workflow(
            ListenerWorkflow.run, id=f"{task_queue}-l2", task_queue=listen
        )
        handle = await start_job(client, task_queue, job)
        await handle.signal("subscribe", late.id)
        async with build(client, task_queue):
            result = await asyncio.wait_for(handle.result(), TIMEOUT)
            heard = await asyncio.wait_for(first.result(), TIMEOUT)
            heard_late = await asyncio.wait_for(late.result(), TIMEOUT)
    assert result.files_changed == ("a.py", "pkg/b.py")
    kinds = [e.kind for e in heard]
    assert kinds == ["started", "file_edited", "file_edited", "done"]
    assert [e.seq for e in heard] == [1, 2, 3, 4]
    assert sorted(e.file for e in heard if e.kind == "file_edited") == ["a.py", "pkg/b.py"]
    assert all(e.shard for e in heard if e.kind == "file_edited")
    assert heard[-1].detail == "succeeded: 2 files"
    assert [e.time for e in heard] == sorted(e.time for e in heard)
    assert heard_late == heard


async def test_events_are_bounded_and_counted(client: Client, task_queue: str) -> None:
    """The log keeps its newest events; a reader behind it is told how many it missed, and the
    counts cover every event."""
    async with Worker(client, task_queue=task_queue, workflows=[BoundedWorkflow]):
        handle = await client.start_workflow(
            BoundedWorkflow.run, 5, id=f"{task_queue}-bounded", task_queue=task_queue
        )
        page = await until(
            lambda: handle.query(EVENTS_QUERY, 0, result_type=EventPage), "the first page"
        )
        later = await handle.query(EVENTS_QUERY, 4, result_type=EventPage)
        caught_up = await handle.query(EVENTS_QUERY, 5, result_type=EventPage)
        await handle.signal(BoundedWorkflow.done)
        await asyncio.wait_for(handle.result(), TIMEOUT)
    assert [e.file for e in page.events] == ["f2.py", "f3.py", "f4.py"]
    assert (page.dropped, page.last, page.counts) == (2, 5, {"file_edited": 5})
    assert ([e.seq for e in later.events], later.dropped, later.last) == ([5], 0, 5)
    assert (caught_up.events, caught_up.last) == ((), 5)


async def test_events_follow_prints_events_as_they_happen(
    env: WorkflowEnvironment,
    address: str,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    held: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`agentparallels events JOB --follow` prints `started` while the job is still editing,
    then each file_edited, and ends with the job; after the job, `events JOB` prints them all
    (read from its history by a worker of its own)."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "b.py": "B = 2\n"})
    job = RefactorInput(repository=str(repo), edit=APPEND, limits=Limits(batch_files=1))
    async with build(client, task_queue, hold=True):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(asyncio.to_thread(HELD.wait, TIMEOUT), TIMEOUT)
        proc = await asyncio.create_subprocess_exec(
            CLI, "events", handle.id, "--follow", env=cli_env(env), stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert kind_of(first.decode()) == "started"
        HOLD.set()
        rest, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        await asyncio.wait_for(handle.result(), TIMEOUT)
    assert proc.returncode == 0
    lines = rest.decode().splitlines()
    assert [kind_of(line) for line in lines] == ["file_edited", "file_edited", "done"]
    assert "a.py" in lines[0] and "b.py" in lines[1]
    assert "succeeded: 2 files" in lines[2]

    capsys.readouterr()  # the job's worker is gone: the command runs one to read its history
    assert await events_command(Namespace(job=handle.id, follow=False, no_worker=False)) == 0
    assert capsys.readouterr().out.splitlines() == [first.decode().rstrip("\n"), *lines]


async def test_events_of_a_failed_job_name_the_failures(
    address: str,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job whose checks keep failing reports each failed check, the breaker opening and its
    own failure, in that order."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command="echo 'x = (' >> {file}"))
    job_id, _ = await failed_job(client, task_queue, job)
    capsys.readouterr()
    assert await events_command(Namespace(job=job_id, follow=False, no_worker=False)) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if not line.startswith(" ")]
    kinds = [kind_of(line) for line in lines]
    assert kinds == [
        "started",
        "check_failed",
        "check_failed",
        "check_failed",
        "breaker_opened",
        "failed",
    ]
    assert "a.py: `ruff check --isolated" in lines[1]
    assert "circuit breaker opened after 3 consecutive failed attempts at a.py" in lines[-1]


async def test_pre_edit_hook_vetoes_and_the_repository_is_unchanged(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A pre-edit hook that exits 1 fails the job, naming the hook and quoting its output,
    before any file is edited; the repository is exactly as it was."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    before = snapshot(repo)
    hook = Hook(point="pre-edit", command="echo not today: $AGENTPARALLELS_FILES; exit 1")
    job = RefactorInput(repository=str(repo), edit=APPEND, hooks=(hook,))
    _, cause = await failed_job(client, task_queue, job)
    assert cause.type == HOOK_VETOED
    assert cause.message.startswith(f"pre-edit hook `{hook.command}` vetoed the step in shard")
    assert "(exit 1):\nnot today: a.py" in cause.message
    assert snapshot(repo) == before


POST_EDIT_CHECK = """python - <<'PY'
import json, os, pathlib
event = json.loads(os.environ["AGENTPARALLELS_EVENT"])
assert os.environ["AGENTPARALLELS_FILES"] == "a.py\\nb.py", os.environ["AGENTPARALLELS_FILES"]
assert event["hook"] == "post-edit" and event["files"] == ["a.py", "b.py"], event
assert pathlib.Path("a.py").read_text().endswith("# edited\\n")
PY"""


async def test_post_edit_hook_sees_the_edited_files(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A post-edit hook runs in the shard's worktree after the edit, with the step's files in
    AGENTPARALLELS_FILES and AGENTPARALLELS_EVENT; when it passes, the job goes on."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "b.py": "B = 2\n"})
    job = RefactorInput(
        repository=str(repo), edit=APPEND, hooks=(Hook(point="post-edit", command=POST_EDIT_CHECK),)
    )
    async with build(client, task_queue):
        handle = await start_job(client, task_queue, job)
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert result.files_changed == ("a.py", "b.py")


async def test_post_edit_hook_veto_rolls_back_the_edits(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A post-edit hook that fails after files were committed: the job fails with its output
    and the commits are undone."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    before = snapshot(repo)
    hook = Hook(point="post-edit", command="grep -c edited $AGENTPARALLELS_FILES; exit 3")
    job = RefactorInput(repository=str(repo), edit=APPEND, hooks=(hook,))
    audit = Audit()
    _, cause = await failed_job(client, task_queue, job, audit)
    assert cause.type == HOOK_VETOED
    assert "post-edit hook" in cause.message and "(exit 3):\n1" in cause.message
    # The shard's saga: its edit undone (its branch back at the base), its worktree removed,
    # then its branch deleted.
    (shard,) = audit.shards()
    assert audit.targets(f"shards/{shard}") == [git(repo, "rev-parse", "main"), None]
    assert audit.tree_at_delete == {shard: False}
    assert snapshot(repo) == before


async def test_pre_merge_hook_vetoes_the_merged_result(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A pre-merge hook runs on the merged result of every shard (it sees both edits) and its
    veto rolls the whole job back: no branch, no scratch refs."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    before = snapshot(repo)
    command = "grep -q edited a.py pkg/b.py || exit 2; echo merged: $AGENTPARALLELS_FILES; exit 1"
    job = RefactorInput(
        repository=str(repo), edit=APPEND, hooks=(Hook(point="pre-merge", command=command),)
    )
    _, cause = await failed_job(client, task_queue, job)
    assert cause.type == HOOK_VETOED
    assert cause.message.startswith(f"pre-merge hook `{command}` vetoed the step on a.py")
    assert "(exit 1):\nmerged: a.py pkg/b.py" in cause.message
    assert snapshot(repo) == before  # and failed_job saw the saga delete the merged result


async def test_hooks_run_in_the_jobs_sandbox(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A hook is confined like every tool command: a folder outside the worktree is not there
    for it (so this one fails, with SandboxDenied naming the folder), unless the job runs with
    the sandbox off."""
    outside = tmp_path / "outside"
    outside.mkdir()
    hook = Hook(point="pre-edit", command=f"echo leaked > {outside}/leak")
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    job = RefactorInput(repository=str(repo), edit=APPEND, hooks=(hook,))
    _, cause = await failed_job(client, task_queue, job)
    assert cause.type == SANDBOX_DENIED and f"hides {outside} from" in cause.message
    assert not (outside / "leak").exists()

    # The same hook unconfined: shows it was the sandbox, not the hook, that refused above.
    off = Limits(sandbox="none")  # sandbox off: the contrast
    unconfined = job.model_copy(update={"limits": off})
    async with build(client, task_queue):
        result = await asyncio.wait_for(
            (await start_job(client, task_queue, unconfined)).result(), TIMEOUT
        )
    assert result.files_changed == ("a.py",)
    assert (outside / "leak").read_text() == "leaked\n"


async def test_pause_holds_the_job_and_unpause_lets_it_finish(
    env: WorkflowEnvironment,
    address: str,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    held: None,
) -> None:
    """`agentparallels pause` while a.py is being edited: that step finishes, then the shard
    starts nothing new and the job shows "paused" (progress and AgentPhase); `unpause` lets it
    edit the rest. Pausing the finished job is refused with exit code 2."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"})
    job = RefactorInput(repository=str(repo), edit=APPEND, limits=Limits(batch_files=1))
    async with build(client, task_queue, hold=True):
        handle = await start_job(client, task_queue, job)
        await asyncio.wait_for(asyncio.to_thread(HELD.wait, TIMEOUT), TIMEOUT)
        paused = await run_cli_async("pause", handle.id, address=env, timeout=TIMEOUT)
        assert paused.returncode == 0, paused.stderr
        assert "pauses after the steps it is running" in paused.stdout
        name = (await progress(handle)).shards[0].name
        shard = client.get_workflow_handle(f"{handle.id}/{name}")
        await until(lambda: shard.query("paused"), "the shard to be paused")
        HOLD.set()  # the step in flight finishes ...
        await until(lambda: _files_done(handle, 1), "a.py to be done")
        # ... and nothing follows it: no step is running or scheduled, the job shows paused.
        desc = await shard.describe()
        assert list(desc.raw_description.pending_activities) == []
        assert (await progress(handle)).phase == "paused"
        assert (await handle.describe()).typed_search_attributes.get(PHASE) == "paused"
        edits = git(
            repo, "rev-list", "--count", f"main..refs/agentparallels/{handle.id}/shards/{name}"
        )
        assert edits == "1"

        assert await unpause_command(Namespace(job=handle.id)) == 0
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        events = (await handle.query(EVENTS_QUERY, 0, result_type=EventPage)).events
    assert result.files_changed == ("a.py", "b.py", "c.py")
    kinds = [e.kind for e in events]
    assert kinds.index("paused") < kinds.index("unpaused")
    assert [e.file for e in events if e.kind == "file_edited"] == ["a.py", "b.py", "c.py"]
    assert [e.file for e in events[: kinds.index("unpaused")] if e.kind == "file_edited"] == [
        "a.py"
    ]
    with pytest.raises(UsageError) as refused:
        await pause_command(Namespace(job=handle.id))
    assert str(refused.value) == (
        f"job {handle.id} has ended (completed); only a running job can be paused"
    )


async def test_a_job_paused_before_it_runs_plans_but_starts_no_shard(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Paused before any worker picked it up, a job makes its plan, then holds before its
    first shard: no child workflow, no activity, until it is unpaused."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"})
    job = RefactorInput(repository=str(repo), edit=APPEND)
    handle = await start_job(client, task_queue, job)
    await handle.signal("pause")
    async with build(client, task_queue):
        planned = await until(lambda: _planned(handle), "the plan, with the job paused")
        assert (planned.phase, planned.files_done) == ("paused", 0)
        # The plan's last step (recording it in the progress log) ends; then nothing starts.
        desc = await until(lambda: _idle(handle), "the plan's steps to end")
        assert list(desc.pending_children) == []
        assert ((p := await progress(handle)).phase, p.files_done) == ("paused", 0)
        await handle.signal("unpause")
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        assert (await progress(handle)).phase == "done"
    assert result.files_changed == ("a.py", "pkg/b.py")


async def _idle(handle: WorkflowHandle[Any, RefactorResult]) -> Any:
    desc = (await handle.describe()).raw_description
    return None if desc.pending_activities else desc


async def _planned(handle: WorkflowHandle[Any, RefactorResult]) -> Progress | None:
    p = await progress(handle)
    return p if p.files_total else None


async def _files_done(handle: WorkflowHandle[Any, RefactorResult], n: int) -> bool:
    return (await progress(handle)).files_done == n


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hook", "pre-commit=true"], "unknown hook point 'pre-commit' in --hook"),
        (["--hook", "pre-edit"], "--hook takes POINT=CMD"),
        (["--hook", "post-edit= "], "--hook takes POINT=CMD"),
    ],
)
def test_bad_hooks_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A hook with an unknown point or no command: one line, exit code 2, nothing started
    (no server is even contacted)."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    before = snapshot(repo)
    assert main(["refactor", str(repo), "--edit-cmd", "true {file}", *args]) == 2
    errs = capsys.readouterr().err
    assert errs.startswith("agentparallels: error: ") and message in errs
    assert len(errs.splitlines()) == 1
    assert snapshot(repo) == before


@pytest.mark.parametrize("command", ["events", "pause", "unpause"])
def test_commands_on_unknown_jobs_are_refused(
    address: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """events, pause and unpause of a job that does not exist: exit code 2, naming it."""
    assert main([command, "no-such-job"]) == 2
    assert "agentparallels: error: no job no-such-job" in capsys.readouterr().err
