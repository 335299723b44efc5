"""Chaos: concurrent jobs on worker processes that are killed, paused and starved, and a Temporal
server restarted under them; every job's result checked against the same edit run plainly.

One round:

* its own dev server (SQLite file in the round's directory, restarted once mid-run on the same
  file unless ``--no-server-restart``);
* ``--workers`` ``agentparallels worker`` processes, each with its own ``HOME``, cache and state
  directories (nothing shared on disk but the job repositories);
* ``--jobs`` concurrent refactor jobs, one repository each, whose edit is a shell command that
  sleeps before it changes the file (so faults land mid-step);
* every ``--kill-every`` seconds a random worker's process group gets SIGKILL and a new worker
  replaces it, every other one on an empty ``HOME`` (a new machine), the others on the dead
  worker's ``HOME`` (the same machine restarted);
* ``--pauses`` times a worker is stopped (SIGSTOP) for ``--pause-s`` seconds, longer than the
  steps' heartbeat timeout, then resumed (SIGCONT): a live worker whose steps are retried
  elsewhere meanwhile;
* ``--hogs`` busy-loop processes for the whole round.

When every job has ended the workers are stopped (SIGTERM: each removes its worktrees of
ended jobs as it stops), and the round reports:

* **wrong trees**: the job branch's tree differs from the tree of the same edit applied plainly
  (the edit command run on each file of a copy of the repository, committed with git);
* **failed jobs**, with the failure's message chain;
* **duplicate commits**: two commits on a branch that change the same file under the same
  ``Agentparallels-Edit`` trailer (and edit commits that do not change the file they name);
* **leftovers**: worktrees of the round's jobs in any worker cache still in use (a killed
  worker's cache replaced by an empty one is counted apart, as a disk that is gone), and
  scratch refs (``refs/agentparallels/*``) in the job repositories;
* **recovery**: for each kill (and pause), each step that was running on that worker, the time
  from the fault to that step's completion (``ActivityTaskCompleted``) and to the job taking the
  result in (the next ``WorkflowTaskCompleted`` of that workflow), from the jobs' histories; and
  each workflow task the worker had taken and never finished (it timed out), the time from the
  fault to the workflow's next completed task. When another fault caught the job again before
  it moved on (the step's retry running on a later victim, or one of the workflow's tasks
  taken by a worker then killed, or by a paused one), the recovery counts the time to that
  fault (or to the task's start, if later): the job had been taken up again by then. The other
  fault's recovery of what it caught is measured on its own, and the report says which were
  caught.

A round is clean when it has no wrong tree, failed job, duplicate commit or leftover, and every
recovery is within ``--recovery-goal`` seconds. ``--rounds N`` runs up to N rounds and stops at
the first unclean one; the exit code is 0 only if every round was clean.

Run from the project root: ``.venv/bin/python -m bench.chaos [--rounds 10] [--json]``;
``make chaos`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentparallels.core import names
from bench._machine import project_revision, run_main

ROOT = Path(__file__).resolve().parent.parent

EDIT = "sed -i 's/VALUE_/CONST_/' {file}"
"""The edit each job makes to every Python file; the plain side runs exactly this."""
GIT = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost"]
READY = "worker polling task queue"
"""What a worker prints once it polls."""


# --------------------------------------------------------------------------------------------
# Repositories and the plain edit
# --------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, job: int, modules: int, files: int) -> Path:
    """A repository of ``modules`` packages of ``files`` modules, each naming a constant unique
    to the job and the file (so a file edited by the wrong job, or not at all, shows)."""
    for m in range(modules):
        (path / f"pkg{m}").mkdir(parents=True)
        (path / f"pkg{m}" / "__init__.py").write_text("")
        for f in range(files):
            (path / f"pkg{m}" / f"f{f}.py").write_text(f"VALUE_{job}_{m}_{f} = {m * 100 + f}\n")
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


def plain_tree(repo: Path, scratch: Path) -> str:
    """The tree of the edit run plainly: ``EDIT`` on each Python file of a clone, committed."""
    subprocess.run(["git", "clone", "--quiet", str(repo), str(scratch)], check=True)
    for path in git(scratch, "ls-files", "-z", "--", "*.py").split("\0"):
        if path:
            subprocess.run(EDIT.replace("{file}", path), shell=True, cwd=scratch, check=True)
    git(scratch, "add", "--all")
    git(scratch, "commit", "--quiet", "--allow-empty", "-m", "plain edit")
    tree = git(scratch, "rev-parse", "HEAD^{tree}")
    shutil.rmtree(scratch)
    return tree


def branch_tree(repo: Path, job_id: str) -> str | None:
    try:
        return git(repo, "rev-parse", f"agentparallels/{job_id}^{{tree}}")
    except subprocess.CalledProcessError:
        return None


def edit_commit_problems(repo: Path, job_id: str) -> list[str]:
    """Duplicate edit commits on the job's branch (two commits changing the same file under the
    same edit trailer), and edit commits that do not change the file they name."""
    from agentparallels.activities._git import EDIT_TRAILER

    try:
        log = git(
            repo,
            "log",
            "--no-merges",
            "--name-only",
            f"--format=%x01%H%x02%(trailers:key={EDIT_TRAILER},valueonly,separator=%x2C)%x02",
            f"main..agentparallels/{job_id}",
        )
    except subprocess.CalledProcessError:
        return []
    seen: dict[str, str] = {}
    problems = []
    for entry in log.split("\x01")[1:]:
        sha, trailer, changed = entry.split("\x02")
        files = set(changed.split())
        for path in filter(None, trailer.strip().split(",")):
            if path not in files:
                problems.append(f"{sha[:10]} names {path} but does not change it")
            elif path in seen:
                problems.append(f"{path} changed by {seen[path][:10]} and again by {sha[:10]}")
            else:
                seen[path] = sha
    return problems


# --------------------------------------------------------------------------------------------
# Processes: workers, hogs, the server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Machine:
    """A worker's disk: its own HOME, cache and state."""

    home: Path
    discarded: bool = False
    """Its worker was killed and replaced by one on an empty disk: nothing runs on it again."""

    @property
    def cache(self) -> Path:
        return self.home / ".cache" / "agentparallels"

    def env(self, address: str) -> dict[str, str]:
        disk = ("AGENTPARALLELS_CACHE_DIR", "AGENTPARALLELS_STATE_DIR", "AGENTPARALLELS_BLOB_DIR")
        env = {k: v for k, v in os.environ.items() if k not in disk and not k.startswith("XDG_")}
        return {
            **env,
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "AGENTPARALLELS_CACHE_DIR": str(self.cache),
            "TEMPORAL_ADDRESS": address,
        }


class WorkerProcess:
    """``agentparallels worker`` in a process group of its own (a fault hits the worker and
    the commands it runs, as a machine failure would), logging to its HOME."""

    def __init__(self, machine: Machine, address: str, task_queue: str, name: str) -> None:
        self.machine, self.name = machine, name
        machine.home.mkdir(parents=True, exist_ok=True)
        self.log = machine.home / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "agentparallels"),
                    "worker",
                    "--task-queue",
                    task_queue,
                ],
                env=machine.env(address),
                cwd=machine.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def identity(self) -> str:
        """The identity the worker's client reports (the SDK's default)."""
        return f"{self.proc.pid}@{socket.gethostname()}"

    async def polling(self, timeout_s: float = 120) -> WorkerProcess:
        deadline = time.monotonic() + timeout_s
        while READY not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log.read_text()}")
            await asyncio.sleep(0.1)
        return self

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 60) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.signal(signal.SIGKILL)  # whatever it left running


HOG = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    pass"
"""A busy loop that ends when the bench does, however the bench ends (even SIGKILL)."""


def hog() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG, str(os.getpid())])


class Server:
    """The round's own dev server on a database file that outlives restarts."""

    def __init__(self, db: Path) -> None:
        from agentparallels import devserver

        self.opts = devserver.ServerOptions(
            db=db,
            port=free_port(),
            ui_port=free_port(),
            extra_args=("--dynamic-config-value", devserver.FAST_TIMERS),
        )
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        from agentparallels import devserver

        self.proc = devserver.spawn(self.opts)
        await devserver.wait_healthy(self.opts, self.proc, timeout_s=120)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    async def restart(self) -> float:
        """Stop and start again on the same database; returns the outage in seconds."""
        t0 = time.monotonic()
        self.stop()
        await self.start()
        return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# What the jobs' histories say
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A kill or a pause, and the steps that were running on its worker."""

    kind: str
    at: float
    """Unix time of the signal."""
    worker: str
    identity: str = ""
    """The victim's client identity, as the histories name it."""
    until: float = 0.0
    """Unix time the fault ended: ``at`` for a kill, the resume for a pause."""
    steps: list[tuple[str, str, str]] = field(default_factory=list)
    """(workflow id, activity id, activity type) running on the worker at that moment, and
    (workflow id, ``task@<started event id>``, ``workflow task``) for each workflow task the
    worker had started and never finished (found in the histories afterwards)."""
    seen: dict[str, float] = field(default_factory=dict)
    """Unix time each step (by :func:`step_key`) was first seen on the victim, when after the
    fault began (a paused worker takes steps during its pause: each is caught from then on,
    not from the pause's start)."""
    step_done_s: list[float | None] = field(default_factory=list)
    """Per step: seconds from the fault to the step's completion (None: it never completed)."""
    recovery_s: list[float | None] = field(default_factory=list)
    """Per step: seconds from the fault to the workflow's next completed workflow task after
    the step completed: the job has taken the result and moved on."""
    trails: list[str] = field(default_factory=list)
    """Per step: its events and the workflow's task events after the fault, with times."""
    hit_again_s: list[float | None] = field(default_factory=list)
    """Per step: seconds from this fault to another fault catching the job again before it
    moved on: the step's retry running on a later victim (it had started on another worker)
    or taken by a paused worker (counted to when it was seen there), or one of the
    workflow's tasks started on a worker that was then killed, or on a paused one (counted to
    the later of the task's start and that fault); None if no other fault
    did. That fault's recovery of the caught step or task is measured on its own."""

    def counted(self) -> list[float | None]:
        """Per step, the recovery that the goal applies to: the time to the job moving on, or,
        for a step caught again by another fault, the time to that fault (the job had been taken
        up again elsewhere by then)."""
        return [
            again if again is not None else rec
            for rec, again in zip(self.recovery_s, self.hit_again_s, strict=True)
        ]


async def running_steps(
    client: Any, job_ids: list[str], identity: str
) -> list[tuple[str, str, str]]:
    """Activities of the jobs (and their child workflows) started on worker ``identity``."""
    from temporalio.api.enums.v1 import PendingActivityState

    async def describe(wid: str) -> Any:
        try:
            return (await client.get_workflow_handle(wid).describe()).raw_description
        except Exception:  # closed, or the server is restarting
            return None

    out: list[tuple[str, str, str]] = []
    todo = list(job_ids)
    while todo:
        raws = await asyncio.gather(*(describe(w) for w in todo))
        todo = []
        for raw in raws:
            if raw is None:
                continue
            wid = raw.workflow_execution_info.execution.workflow_id
            todo += [c.workflow_id for c in raw.pending_children]
            for a in raw.pending_activities:
                started = a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                if started and a.last_worker_identity == identity:
                    out.append((wid, a.activity_id, a.activity_type.name))
    return out


@dataclass(frozen=True)
class LostTask:
    """A workflow task that a worker started and never finished: it timed out."""

    wid: str
    started_event: int
    started: float
    """Unix time the worker took it."""
    identity: str
    """The worker that took it."""
    timed_out: float
    moved_on: float | None
    """Unix time of the workflow's next completed workflow task (None: there was none)."""

    @property
    def item(self) -> tuple[str, str, str]:
        """How a fault lists it beside the steps it hit."""
        return (self.wid, f"task@{self.started_event}", "workflow task")


def lost_tasks(wid: str, events: list[Any]) -> list[LostTask]:
    """The workflow tasks of one history that a worker started and that then timed out (a
    sticky queue's schedule-to-start timeout was started by no one and is not one)."""
    from temporalio.api.enums.v1 import EventType as E

    started: dict[int, Any] = {}
    out = []
    for e in events:
        if e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started[e.event_id] = e
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            took = started.get(e.workflow_task_timed_out_event_attributes.started_event_id)
            if took is None:
                continue
            moved_on = next(
                (
                    x
                    for x in events
                    if x.event_id > e.event_id
                    and x.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                ),
                None,
            )
            out.append(
                LostTask(
                    wid=wid,
                    started_event=took.event_id,
                    started=_time(took),
                    identity=took.workflow_task_started_event_attributes.identity,
                    timed_out=_time(e),
                    moved_on=_time(moved_on) if moved_on else None,
                )
            )
    return out


def fault_of(task: LostTask, faults: list[Fault]) -> int | None:
    """Index of the fault that lost ``task``: the first fault of the worker that had taken it
    which began before the task timed out and, for a pause, ended after the worker took it (a
    paused worker can take a task it will not run until it is resumed; a killed one never
    comes back, and the server can record a start after the signal, its poll still open).
    None for a task that timed out on a live worker: too slow, not hit."""
    return next(
        (
            i
            for i, f in enumerate(faults)
            if f.identity == task.identity
            and f.at < task.timed_out
            and (f.kind == "kill" or task.started <= f.until)
        ),
        None,
    )


async def measure(client: Any, faults: list[Fault], workers: dict[str, str] | None = None) -> None:
    """Fill each fault's ``step_done_s`` and ``recovery_s`` from the workflows' histories, add
    the workflow tasks each fault lost, and mark what another fault caught again.
    ``workers`` names each worker identity in the printed events."""
    from temporalio.api.enums.v1 import EventType as E

    histories: dict[str, list[Any]] = {}
    async for wf in client.list_workflows():
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        histories[wf.id] = [e async for e in handle.fetch_history_events()]
    for fault in faults:
        for wid, activity_id, _type in fault.steps:
            events = histories.get(wid, [])
            scheduled = next(
                (
                    e.event_id
                    for e in events
                    if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    and e.activity_task_scheduled_event_attributes.activity_id == activity_id
                ),
                None,
            )
            done = next(
                (
                    e
                    for e in events
                    if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                    and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled
                ),
                None,
            )
            moved_on = done and next(
                (
                    e
                    for e in events
                    if e.event_id > done.event_id
                    and e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                ),
                None,
            )
            fault.step_done_s.append(_seconds(done, fault.at))
            fault.recovery_s.append(_seconds(moved_on, fault.at))
            end = moved_on.event_id if moved_on else (events[-1].event_id if events else 0)
            fault.trails.append(_trail(events, scheduled, fault.at, end, workers))
        # A step that completed between the look at the worker and the signal was not hit.
        hit = [i for i, s in enumerate(fault.step_done_s) if s is None or s >= 0]
        fault.steps = [fault.steps[i] for i in hit]
        fault.step_done_s = [fault.step_done_s[i] for i in hit]
        fault.recovery_s = [fault.recovery_s[i] for i in hit]
        fault.trails = [fault.trails[i] for i in hit]
    lost = []
    for wid, events in histories.items():
        for task in lost_tasks(wid, events):
            i = fault_of(task, faults)
            if i is None:
                continue
            lost.append((task, i))
            fault = faults[i]
            fault.steps.append(task.item)
            fault.step_done_s.append(round(task.timed_out - fault.at, 2))
            rec = None if task.moved_on is None else round(task.moved_on - fault.at, 2)
            fault.recovery_s.append(rec)
            moved_on_id = next(
                (
                    e.event_id
                    for e in events
                    if e.event_id > task.started_event
                    and e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                ),
                events[-1].event_id,
            )
            fault.trails.append(_trail(events, None, fault.at, moved_on_id, workers))
    mark_hit_again(faults, lost)


def step_key(step: tuple[str, str, str]) -> str:
    """A step as a key of ``Fault.seen`` (the report's JSON has string keys only)."""
    return " ".join(step)


def _caught_at(fault: Fault, step: tuple[str, str, str]) -> float:
    """When ``fault`` caught ``step``: a kill at its signal; a pause at its start, or, for a
    step its worker took during the pause, when it was seen there (such a pause may have
    begun before the fault whose step it caught)."""
    return fault.at if fault.kind == "kill" else max(fault.at, fault.seen.get(step_key(step), 0))


def mark_hit_again(faults: list[Fault], lost: list[tuple[LostTask, int]] | None = None) -> None:
    """Fill each fault's ``hit_again_s`` (see ``Fault.hit_again_s``). ``lost`` pairs each lost
    workflow task with the index of the fault that lost it."""
    for i, fault in enumerate(faults):
        fault.hit_again_s = []
        for step, rec in zip(fault.steps, fault.recovery_s, strict=True):
            window = float("inf") if rec is None else rec
            mine = _caught_at(fault, step)
            caught = [_caught_at(o, step) for o in faults if o is not fault and step in o.steps]
            times = [t - fault.at for t in caught if t > mine and t - fault.at < window]
            times += [
                max(task.started, faults[j].at) - fault.at
                for task, j in lost or []
                if j != i
                and task.wid == step[0]
                and task.item != step
                and 0 < task.started - fault.at < window
            ]
            fault.hit_again_s.append(round(min(times), 2) if times else None)


def _trail(
    events: list[Any],
    scheduled: int | None,
    since: float,
    end: int,
    workers: dict[str, str] | None = None,
) -> str:
    """The step's own events and the workflow's task events from ``since`` to event ``end``,
    each with its time after ``since`` (and a start with the worker that took it): where a
    slow recovery spent its time."""
    from temporalio.api.enums.v1 import EventType

    out = []
    for e in events:
        if e.event_id > end or _time(e) < since:
            continue
        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
        attrs = getattr(e, e.WhichOneof("attributes"))
        own = getattr(attrs, "scheduled_event_id", None) == scheduled
        if name.startswith("WORKFLOW_TASK") or (name.startswith("ACTIVITY_TASK") and own):
            word = "".join(w.title() for w in name.split("_")).removeprefix("WorkflowTask")
            by = getattr(attrs, "identity", "") if name.endswith("_STARTED") else ""
            who = f"@{(workers or {}).get(by, by)}" if by else ""
            out.append(
                f"{'WT' if name.startswith('WORKFLOW') else ''}{word}+{_seconds(e, since)}{who}"
            )
    return " ".join(out)


def _time(event: Any) -> float:
    return event.event_time.ToMicroseconds() / 1e6


def _seconds(event: Any, since: float) -> float | None:
    if not event:
        return None
    return round(_time(event) - since, 2)


LOOK_AGAIN_S = 1.5
"""After a kill, the victim's steps are looked at again this much later: the server can record
a task's start on a dead worker's poll a moment after the signal (its connection not yet seen
closed), and after the first look; such an attempt stays started there until its heartbeat
times out (at least 3 s), so this look still sees it."""


# --------------------------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------------------------


@dataclass
class Round:
    number: int
    jobs: int
    succeeded: int = 0
    wrong_trees: list[str] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)
    duplicate_commits: list[str] = field(default_factory=list)
    leftover_worktrees: list[str] = field(default_factory=list)
    scratch_refs: list[str] = field(default_factory=list)
    discarded_disk_worktrees: int = 0
    """Worktrees on the disks of killed workers replaced by empty ones (not leftovers: no
    worker runs there again)."""
    kills: int = 0
    pauses: int = 0
    server_restarts: int = 0
    faults: list[Fault] = field(default_factory=list)
    wall_s: float = 0.0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    recovery_goal_s: float = 10.0
    directory: str | None = None

    def recoveries(self, kind: str = "kill") -> list[float | None]:
        """Per step hit by a fault of ``kind``: the recovery the goal applies to
        (``Fault.counted``)."""
        return [r for f in self.faults if f.kind == kind for r in f.counted()]

    @property
    def slow_recoveries(self) -> list[float | None]:
        return [r for r in self.recoveries() if r is None or r > self.recovery_goal_s]

    @property
    def clean(self) -> bool:
        return not (
            self.wrong_trees
            or self.failed_jobs
            or self.duplicate_commits
            or self.leftover_worktrees
            or self.scratch_refs
            or self.slow_recoveries
        )

    def summary(self) -> dict[str, Any]:
        kills = [r for r in self.recoveries() if r is not None]
        return {
            **asdict(self),
            "clean": self.clean,
            "recovery_median_s": round(statistics.median(kills), 2) if kills else None,
            "recovery_max_s": max(kills) if kills else None,
            "unrecovered_steps": sum(r is None for r in self.recoveries()),
            "hit_again": sum(a is not None for f in self.faults for a in f.hit_again_s),
        }


class Chaos:
    """Runs one round's jobs and faults."""

    def __init__(self, args: argparse.Namespace, number: int, root: Path) -> None:
        self.args, self.root = args, root
        self.rng = random.Random(args.seed + number if args.seed is not None else None)
        self.report = Round(number=number, jobs=args.jobs, recovery_goal_s=args.recovery_goal)
        self.task_queue = f"chaos-{number}-{os.getpid()}"
        self.server = Server(root / "server" / "temporal.db")
        self.workers: list[WorkerProcess] = []
        self.machines: list[Machine] = []
        self.spawned = 0
        self.names: dict[str, str] = {}
        """Every worker's identity and name."""

    async def worker(self, machine: Machine | None = None) -> WorkerProcess:
        if machine is None:
            machine = Machine(self.root / "machines" / f"m{len(self.machines)}")
            self.machines.append(machine)
        self.spawned += 1
        w = WorkerProcess(machine, self.server.opts.address, self.task_queue, f"w{self.spawned}")
        self.names[w.identity] = w.name
        return await w.polling()

    async def run(self) -> Round:

        args = self.args
        started = time.monotonic()
        repos = [
            make_repo(self.root / "repos" / f"job{i}", i, args.modules, args.files)
            for i in range(args.jobs)
        ]
        expected = [plain_tree(r, self.root / "plain" / r.name) for r in repos]
        await self.server.start()
        try:  # the server is stopped however the round ends
            job_ids, outcomes = await self._jobs_under_faults(repos)
        finally:
            self.server.stop()
        self.check(repos, job_ids, expected, outcomes)
        self.report.wall_s = round(time.monotonic() - started, 1)
        return self.report

    async def _jobs_under_faults(self, repos: list[Path]) -> tuple[list[str], dict[str, str]]:
        """Start the round's jobs on three workers, inject the faults until every job has
        ended, and measure the recoveries; the workers and hogs are stopped however it ends."""
        from temporalio.client import Client

        from agentparallels.plugin import AgentParallelsPlugin

        args = self.args
        plugin = AgentParallelsPlugin(store_dir=self.root / "client-blobs")
        client = await Client.connect(self.server.opts.address, plugins=[plugin])
        hogs = [hog() for _ in range(args.hogs)]
        try:
            self.workers = list(await asyncio.gather(*(self.worker() for _ in range(3))))
            job_ids = [f"chaos-{self.report.number}-{i}-{os.getpid()}" for i in range(args.jobs)]
            for repo, job_id in zip(repos, job_ids, strict=True):
                await client.start_workflow(
                    names.REFACTOR, self.job(repo), id=job_id, task_queue=self.task_queue
                )
            await self.faults(client, job_ids)
            outcomes = await self.outcomes(client, job_ids)
        finally:
            for w in self.workers:
                w.stop()
            for h in hogs:
                h.kill()
                h.wait()
        one, five, fifteen = os.getloadavg()
        self.report.load_avg = (round(one, 2), round(five, 2), round(fifteen, 2))
        await measure(client, self.report.faults, self.names)
        return job_ids, outcomes

    def job(self, repo: Path) -> Any:
        from agentparallels.core.models import CommandEdit, Limits, RefactorInput

        a = self.args
        return RefactorInput(
            repository=str(repo),
            edit=CommandEdit(command=f"sleep {a.step_s}; {EDIT}"),
            limits=Limits(parallel=a.parallel, max_files_per_shard=a.files, batch_files=1),
        )

    async def faults(self, client: Any, job_ids: list[str]) -> None:
        """Kill, pause and restart on schedule until every job has ended."""
        a = self.args
        # The server restart comes first, so that no kill's recovery includes the outage.
        start = a.kill_every if a.server_restart else 0.0
        plan: list[tuple[float, str]] = [(a.kill_every / 2, "restart")] if a.server_restart else []
        plan += [(start + (k + 1) * a.kill_every, "kill") for k in range(a.kills)]
        plan += [(start + (p + 0.5) * a.kill_every * 2, "pause") for p in range(a.pauses)]
        plan.sort()
        t0 = time.monotonic()
        paused: set[WorkerProcess] = set()
        later: list[asyncio.Task] = []
        for at, what in plan:
            while time.monotonic() - t0 < at:
                if await self.all_closed(client, job_ids):
                    break
                await asyncio.sleep(0.25)
            else:
                began = time.monotonic()
                await self.inject(what, client, job_ids, paused, later)
                if what == "restart":  # the rest of the plan counts from the server's return
                    t0 += time.monotonic() - began
                continue
            break
        await asyncio.gather(*later)

    async def inject(
        self,
        what: str,
        client: Any,
        job_ids: list[str],
        paused: set[WorkerProcess],
        later: list[asyncio.Task],
    ) -> None:
        if what == "restart":
            outage = await self.server.restart()
            self.report.server_restarts += 1
            print(f"  server restarted ({outage:.1f} s down)", flush=True)
            return
        candidates = [w for w in self.workers if w not in paused]
        victim = self.rng.choice(candidates)
        steps = await running_steps(client, job_ids, victim.identity)
        now = time.time()
        fault = Fault(
            kind=what, at=now, worker=victim.name, identity=victim.identity, until=now, steps=steps
        )
        self.report.faults.append(fault)

        async def look_again() -> None:
            # What the victim took after the first look: the server hands tasks to a poll of
            # the victim until it sees the poll gone (a killed worker's, a moment after the
            # signal) and for the whole pause (a paused worker's polls stay open). Each such
            # attempt stays started on the victim until its heartbeat times out, so a look
            # right after the signal, and one a second during a pause, sees all of them;
            # the history keeps only a step's last attempt.
            for step in await running_steps(client, job_ids, victim.identity):
                if step not in fault.steps:
                    fault.steps.append(step)
                    fault.seen[step_key(step)] = time.time()

        if what == "pause":
            victim.signal(signal.SIGSTOP)
            paused.add(victim)
            self.report.pauses += 1
            print(f"  paused {victim.name} ({len(steps)} steps running)", flush=True)

            async def resume() -> None:
                until = time.monotonic() + self.args.pause_s
                while (left := until - time.monotonic()) > 0:
                    await look_again()
                    await asyncio.sleep(min(1.0, max(left, 0)))
                await look_again()
                victim.signal(signal.SIGCONT)
                fault.until = time.time()
                paused.discard(victim)

            later.append(asyncio.create_task(resume()))
            return
        victim.kill()
        await look_again()

        async def look_later() -> None:  # a start the server recorded after the first look
            await asyncio.sleep(LOOK_AGAIN_S)
            await look_again()

        later.append(asyncio.create_task(look_later()))
        self.report.kills += 1
        self.workers.remove(victim)
        fresh = self.report.kills % 2 == 0  # every other replacement on an empty disk
        victim.machine.discarded = fresh
        self.workers.append(await self.worker(None if fresh else victim.machine))
        print(
            f"  killed {victim.name} ({len(steps)} steps running), replaced by "
            f"{self.workers[-1].name} on {'an empty' if fresh else 'the same'} HOME",
            flush=True,
        )

    async def all_closed(self, client: Any, job_ids: list[str]) -> bool:
        from temporalio.client import WorkflowExecutionStatus

        for job_id in job_ids:
            try:
                d = await client.get_workflow_handle(job_id).describe()
            except Exception:  # the server is restarting
                return False
            if d.status == WorkflowExecutionStatus.RUNNING:
                return False
        return True

    async def outcomes(self, client: Any, job_ids: list[str]) -> dict[str, str]:
        """Each job's outcome (``succeeded``, ``unchanged``, or its failure), waiting through
        server restarts up to ``--timeout`` seconds."""
        from temporalio.client import WorkflowFailureError
        from temporalio.service import RPCError

        from agentparallels.core.models import RefactorResult

        async def outcome(job_id: str) -> str:
            handle = client.get_workflow_handle(job_id, result_type=RefactorResult)
            while True:
                try:
                    return (await handle.result()).outcome
                except WorkflowFailureError as e:
                    chain, cause = [], e.cause
                    while cause is not None:
                        chain.append(str(cause))
                        cause = getattr(cause, "cause", None)
                    return "failed: " + " <- ".join(chain)
                except RPCError:
                    await asyncio.sleep(0.5)

        async with asyncio.timeout(self.args.timeout):
            done = await asyncio.gather(*(outcome(j) for j in job_ids))
        return dict(zip(job_ids, done, strict=True))

    def check(
        self, repos: list[Path], job_ids: list[str], expected: list[str], outcomes: dict[str, str]
    ) -> None:
        r = self.report
        for repo, job_id, tree in zip(repos, job_ids, expected, strict=True):
            outcome = outcomes[job_id]
            if outcome != "succeeded":
                r.failed_jobs.append(f"{job_id}: {outcome}")
                continue
            r.succeeded += 1
            got = branch_tree(repo, job_id)
            if got != tree:
                diff = git(repo, "diff", "--stat", tree, got) if got else "no branch"
                r.wrong_trees.append(f"{job_id}: {got} != plain {tree}: {diff}")
            r.duplicate_commits += [f"{job_id}: {p}" for p in edit_commit_problems(repo, job_id)]
            refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/agentparallels/")
            r.scratch_refs += [f"{job_id}: {ref}" for ref in refs.split()]
        # Every cache is the round's own, so all its worktrees count; the workers collected
        # their garbage when they were stopped. A disk replaced by an empty one is gone.
        for machine in self.machines:
            found = sorted(machine.cache.glob("worktrees/*/[!.]*"))
            if machine.discarded:
                r.discarded_disk_worktrees += len(found)
                continue
            for wt in found:
                r.leftover_worktrees.append(f"{machine.home.name}: {wt.parent.name}/{wt.name}")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

COLUMNS = (
    ("round", 5), ("ok", 4), ("wrong", 5), ("failed", 6), ("dup", 4), ("leftWT", 6),
    ("refs", 4), ("kills", 5), ("pauses", 6), ("restart", 7), ("rec.med", 7), ("rec.max", 7),
    ("wall s", 6), ("load1", 5),
)  # fmt: skip


def row(r: Round) -> str:
    s = r.summary()
    cells = (
        r.number, f"{r.succeeded}/{r.jobs}", len(r.wrong_trees), len(r.failed_jobs),
        len(r.duplicate_commits), len(r.leftover_worktrees), len(r.scratch_refs), r.kills,
        r.pauses, r.server_restarts, s["recovery_median_s"], s["recovery_max_s"], r.wall_s,
        r.load_avg[0],
    )  # fmt: skip
    widths = [w for _, w in COLUMNS]
    shown = ("-" if c is None else str(c) for c in cells)
    return "  ".join(c.rjust(w) for c, w in zip(shown, widths, strict=True))


def details(r: Round) -> list[str]:
    out = []
    for title, items in (
        ("wrong tree", r.wrong_trees),
        ("failed job", r.failed_jobs),
        ("duplicate commit", r.duplicate_commits),
        ("leftover worktree", r.leftover_worktrees),
        ("scratch ref", r.scratch_refs),
    ):
        out += [f"  {title}: {item}" for item in items]
    for f in r.faults:
        rows = zip(f.steps, f.step_done_s, f.recovery_s, f.hit_again_s, f.trails, strict=True)
        for (wid, _aid, kind), done, rec, again, trail in rows:
            counted = again if again is not None else rec
            slow = counted is None or counted > r.recovery_goal_s
            if slow or f.kind == "pause" or again is not None:
                caught = f", caught again by another fault after {again} s" if again else ""
                out.append(
                    f"  {f.kind} of {f.worker}: {kind} of {wid}: step done after {done} s, "
                    f"job moved on after {rec} s{caught}"
                )
                out.append(f"    {trail}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from agentparallels.core.steps import HEARTBEAT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=12, help="concurrent jobs (default: %(default)s)")
    p.add_argument("--modules", type=int, default=3, help="packages per job's repository")
    p.add_argument("--files", type=int, default=4, help="modules per package (one shard each)")
    p.add_argument("--parallel", type=int, default=2, help="shards of a job run at once")
    p.add_argument("--step-s", type=float, default=1.0, help="seconds each file's edit takes")
    p.add_argument("--kills", type=int, default=6, help="SIGKILLs per round (default: 6)")
    p.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    p.add_argument("--pauses", type=int, default=1, help="SIGSTOP/SIGCONT pauses per round")
    p.add_argument(
        "--pause-s",
        type=float,
        default=HEARTBEAT.total_seconds() + 3,
        help="seconds a worker stays paused (default: heartbeat timeout + 3)",
    )
    p.add_argument("--hogs", type=int, default=2, help="busy-loop processes (default: 2)")
    p.add_argument("--no-server-restart", dest="server_restart", action="store_false")
    p.add_argument(
        "--recovery-goal", type=float, default=10.0, help="longest clean recovery, seconds"
    )
    p.add_argument("--timeout", type=float, default=600, help="longest a round's jobs may take")
    p.add_argument("--seed", type=int, default=None, help="seed for the choice of victims")
    p.add_argument("--keep", action="store_true", help="keep every round's directory")
    p.add_argument("--json", action="store_true", help="print one JSON document, nothing else")
    args = p.parse_args(argv)
    for name in ("rounds", "jobs", "modules", "files", "parallel"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name in ("kills", "pauses", "hogs"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must not be negative")
    return args


async def chaos(args: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        root = Path(tempfile.mkdtemp(prefix=f"chaos-{number}-"))
        if not args.json:
            print(f"round {number}: {args.jobs} jobs in {root}", flush=True)
        r = await Chaos(args, number, root).run()
        rounds.append(r)
        if args.keep or not r.clean:
            r.directory = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
        if not r.clean:
            break
    return rounds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Stopped with SIGTERM (or ^C), a round still stops its workers, hogs and server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.json:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  the progress lines
    rounds = asyncio.run(chaos(args))
    clean = sum(r.clean for r in rounds)
    recs = sorted(x for r in rounds for x in r.recoveries() if x is not None)
    med = round(statistics.median(recs), 2) if recs else None
    summary = (
        f"{'CLEAN' if clean == args.rounds else 'UNCLEAN'}: {clean}/{args.rounds} rounds clean; "
        f"{sum(r.kills for r in rounds)} kills, {sum(r.pauses for r in rounds)} pauses, "
        f"recovery median {med} s, max {recs[-1] if recs else None} s "
        f"(goal {args.recovery_goal:g} s)"
    )
    if args.json:
        sys.stdout = sys.__stdout__
        doc = {
            "clean": clean == args.rounds,
            "summary": summary,
            "args": vars(args),
            "revision": project_revision(),
            "rounds": [r.summary() for r in rounds],
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        print("  ".join(name.rjust(w) for name, w in COLUMNS))
        for r in rounds:
            print(row(r))
            for line in details(r):
                print(line)
            if r.directory:
                print(f"  kept {r.directory}")
        print(summary)
    raise SystemExit(0 if clean == args.rounds else 1)


if __name__ == "__main__":
    run_main(main)
