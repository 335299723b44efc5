"""Benchmark: a multi-file refactor run as a durable job vs the same tools run plainly.

For each repository size N it generates a real git repository (N modules in packages of ten
under ``src/gen/``, one helper ``gen.core.util.to_cents`` used from most of them, a small
pytest suite, ruff configured) and measures, each on a fresh copy of that repository:

* ``rename``: (a) a ``RefactorWorkflow`` job with a ``RenameEdit``, against (b) the plain
  tool: ``rename_engine.rename`` in-process, then what the job runs on the changed files
  (ruff's import sorting and ``ruff format``, as the repository configures ruff, and the
  verify rules), then the test command once.
* ``codemod``: (c) a job with a ``CommandEdit`` (``ruff check --fix --select UP {file}`` on
  ``**/*.py``), against (d) the same command run per file in a loop, then import sorting and
  formatting of the changed files, the verify rules on all files, then the test command once.

Both sides end in a commit, and the bench checks that they produce the same tree. One dev
server serves the whole run; each job gets a fresh task queue and worker (started before its
clock starts). The sides alternate which goes first. Medians over ``--repeat`` runs and the
durable/plain ratio are printed and written to ``bench/results/latest.json``, with the CPU
seconds of both sides, the load other processes put on the machine meanwhile, and (unless
``--no-profile``) where the last durable job of each case spent its time.

Run from the project root: ``.venv/bin/python -m bench.refactor_bench [--sizes 50 200]
[--repeat 3]``; ``make bench`` runs it with the defaults. ``--help`` lists the job's limits
that can be varied.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentparallels import devserver
from agentparallels.core import names
from bench._machine import (
    dev_server_pid,
    machine_busy,
    proc_cpu,
    project_revision,
    run_main,
)

ROOT = Path(__file__).resolve().parent.parent

FILES_PER_PACKAGE = 10
OLD = "gen.core.util.to_cents"
NEW = "as_cents"
TEST_CMD = "python -m pytest -q -p no:cacheprovider"
CODEMOD = "ruff check --fix --exit-zero --isolated --no-cache --quiet --select UP {file}"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
RESULTS = ROOT / "bench" / "results" / "latest.json"


# --------------------------------------------------------------------------------------------
# The generated repository
# --------------------------------------------------------------------------------------------

PYPROJECT = """\
[project]
name = "gen"
version = "0.1.0"
requires-python = ">=3.11"

[tool.pytest.ini_options]
pythonpath = ["src"]
testpaths = ["tests"]

[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "I"]
"""

UTIL = '''\
"""Money helpers used across the generated code base."""

from decimal import ROUND_HALF_UP, Decimal


def to_cents(amount) -> int:
    """Whole cents of ``amount``, rounded half up."""
    return int((Decimal(str(amount)) * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def from_cents(cents: int) -> Decimal:
    return Decimal(cents) / 100
'''

# Modules that use the helper; the ones that do not still carry the same codemod targets.
# ``{n}`` is the module's number; some modules import the module object instead of the name.
MODULE_BY_NAME = '''\
"""Generated module {dotted}."""

from typing import List, Optional

from gen.core.util import to_cents


class Ledger{n}(object):
    def __init__(self, amounts: List[float]) -> None:
        self.amounts = amounts

    def total(self) -> int:
        return sum(to_cents(a) for a in self.amounts)


def describe_{n}(amount: float, label: Optional[str] = None) -> str:
    return "{{}}: {{}}".format(label or "{dotted}", to_cents(amount))


def total_{n}(values: List[float]) -> int:
    return Ledger{n}(values).total() + to_cents(0.5)
'''

MODULE_BY_MODULE = '''\
"""Generated module {dotted}."""

from typing import List, Optional

from gen.core import util


class Ledger{n}(object):
    def __init__(self, amounts: List[float]) -> None:
        self.amounts = amounts

    def total(self) -> int:
        return sum(util.to_cents(a) for a in self.amounts)


def describe_{n}(amount: float, label: Optional[str] = None) -> str:
    return "{{}}: {{}}".format(label or "{dotted}", util.to_cents(amount))


def total_{n}(values: List[float]) -> int:
    return Ledger{n}(values).total() + util.to_cents(0.5)
'''

MODULE_PLAIN = '''\
"""Generated module {dotted}."""

from typing import List, Optional


class Ledger{n}(object):
    def __init__(self, amounts: List[float]) -> None:
        self.amounts = amounts

    def total(self) -> int:
        return int(sum(self.amounts))


def describe_{n}(amount: float, label: Optional[str] = None) -> str:
    return "{{}}: {{}}".format(label or "{dotted}", amount)


def total_{n}(values: List[float]) -> int:
    return Ledger{n}(values).total()
'''

TEST_UTIL = """\
from gen.core.util import from_cents, to_cents


def test_to_cents_rounds_half_up():
    assert to_cents(1.005) == 101
    assert to_cents(19.99) == 1999
    assert from_cents(to_cents(2.5)) == 2.5
"""

TEST_MODULE = """\
from gen.{package} import {module}


def test_{package}_{module}():
    assert {module}.total_{n}([1.0, 2.25]) == {expected}
    assert {module}.describe_{n}(1.5, "x") == "x: {described}"
"""


def module_paths(size: int) -> list[tuple[str, str]]:
    """(package, module) of each of ``size`` modules; ``core`` holds ``util`` and comes first."""
    out: list[tuple[str, str]] = [("core", "util")]
    packages = ["core"] + [f"pkg{i:02d}" for i in range(1, size // FILES_PER_PACKAGE + 1)]
    for package in packages:
        for m in range(FILES_PER_PACKAGE - (package == "core")):
            if len(out) == size:
                return out
            out.append((package, f"m{m:02d}"))
    return out


def generate_repo(root: Path, size: int) -> dict[str, Any]:
    """Write and commit the repository: ``size`` Python modules (``__init__.py`` files and
    tests not counted), then make sure it is already clean under ruff so that only the edit
    changes files."""
    root.mkdir(parents=True)
    files: dict[str, str] = {"pyproject.toml": PYPROJECT, "src/gen/__init__.py": ""}
    users = 0
    tests: list[str] = []
    for i, (package, module) in enumerate(module_paths(size)):
        files.setdefault(f"src/gen/{package}/__init__.py", "")
        path = f"src/gen/{package}/{module}.py"
        if module == "util":
            files[path] = UTIL
            continue
        dotted = f"gen.{package}.{module}"
        template = (MODULE_PLAIN, MODULE_BY_NAME, MODULE_BY_MODULE)[
            0 if i % 10 == 9 else 1 + (i % 4 == 0)
        ]
        users += template is not MODULE_PLAIN
        files[path] = template.format(dotted=dotted, n=i)
        if len(tests) < 4 and i % 7 == 1:  # a few modules get a test of their own
            uses = template is not MODULE_PLAIN
            expected = 325 + 50 if uses else 3
            described = 150 if uses else 1.5
            tests.append(f"tests/test_{package}_{module}.py")
            files[tests[-1]] = TEST_MODULE.format(
                package=package, module=module, n=i, expected=expected, described=described
            )
    files["tests/test_util.py"] = TEST_UTIL
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    ruff = _ruff()
    sh([ruff, "check", "--no-cache", "--quiet", "--fix", "--select", "I", "."], root)
    sh([ruff, "format", "--no-cache", "--quiet", "."], root)
    sh([*GIT, "init", "--quiet", "--initial-branch=main"], root)
    sh([*GIT, "add", "--all"], root)
    sh([*GIT, "commit", "--quiet", "-m", "generated code base"], root)
    done = subprocess.run(
        shlex.split(TEST_CMD), cwd=root, env=_tool_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the generated repository's tests fail:\n{done.stdout}{done.stderr}")
    py = [p for p in files if p.endswith(".py")]
    return {
        "modules": size,
        "python_files": len(py),
        "packages": len(
            {p.rsplit("/", 1)[0] for p in py if p.startswith("src/gen/")} - {"src/gen"}
        ),
        "modules_using_helper": users,
        "test_files": len(tests) + 1,
    }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _ruff() -> str:
    from agentparallels.activities._proc import ruff_bin

    return ruff_bin()


def _tool_env() -> dict[str, str]:
    """The environment the job's commands get (this venv first on PATH, no GIT_* variables)."""
    from agentparallels.activities._proc import tool_env

    return tool_env()


def sh(cmd: list[str] | str, cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd,
        cwd=cwd,
        shell=isinstance(cmd, str),
        env=_tool_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def git_out(cwd: Path, *args: str) -> str:
    return sh([*GIT, *args], cwd).stdout.strip()


def copy_repo(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


def _uses_ruff(root: Path) -> bool:
    from agentparallels.activities.checks import uses_ruff

    return uses_ruff(root)


# --------------------------------------------------------------------------------------------
# The plain tool
# --------------------------------------------------------------------------------------------


def ruff_after_edit(repo: Path, changed: list[str], check_all: bool) -> None:
    """What the job runs on each changed file, batched: sort imports and format (when the
    repository configures ruff), then the verify rules (on every file for the codemod)."""
    from agentparallels.core.models import Limits

    ruff = _ruff()
    py = [p for p in changed if p.endswith(".py") and (repo / p).exists()]
    if py and _uses_ruff(repo):
        sh([ruff, "check", "--no-cache", "--quiet", "--fix", "--select", "I", "--", *py], repo)
        sh([ruff, "format", "--no-cache", "--quiet", "--", *py], repo)
    targets = ["."] if check_all else py
    if targets:
        rules = Limits().verify_rules
        sh(
            [ruff, "check", "--isolated", "--no-cache", "--quiet", "--select", rules, *targets],
            repo,
        )


def run_tests_and_commit(repo: Path, message: str) -> str:
    done = sh(TEST_CMD, repo, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tests failed after the plain edit:\n{done.stdout}{done.stderr}")
    sh([*GIT, "add", "--all"], repo)
    sh([*GIT, "commit", "--quiet", "--no-verify", "-m", message], repo)
    return git_out(repo, "rev-parse", "HEAD^{tree}")


def plain_rename(repo: Path) -> tuple[str, int]:
    from agentparallels.activities import rename_engine

    changed = rename_engine.rename(repo, OLD, NEW)
    ruff_after_edit(repo, changed, check_all=False)
    return run_tests_and_commit(repo, f"rename {OLD} -> {NEW}"), len(changed)


def plain_codemod(repo: Path) -> tuple[str, int]:
    files = [p for p in git_out(repo, "ls-files", "-z", "--", "*.py").split("\0") if p]
    env = _tool_env()
    for path in files:
        subprocess.run(
            CODEMOD.replace("{file}", shlex.quote(path)),
            shell=True,
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    changed = [p for p in git_out(repo, "diff", "--name-only", "-z").split("\0") if p and p.strip()]
    ruff_after_edit(repo, changed, check_all=True)
    return run_tests_and_commit(repo, "codemod"), len(changed)


# --------------------------------------------------------------------------------------------
# The durable job
# --------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """Where a durable job's time went, from its workflow histories and the wrapped helpers."""

    activities: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Activity type -> run times (started -> completed), seconds."""
    queue_wait: list[float] = field(default_factory=list)
    """Scheduled -> started of every activity, seconds."""
    commands: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Subprocess kind (``git push``, ``ruff format`` ...) -> durations, seconds."""
    shards: int = 0
    shard_walls: list[float] = field(default_factory=list)
    """Each shard workflow's run time (its first to its last event), seconds."""
    gaps: list[float] = field(default_factory=list)
    """Per shard: run time not covered by any of its activities (workflow tasks, scheduling,
    the progress signal), seconds."""
    phases: dict[str, float] = field(default_factory=dict)
    """The job's phases (plan, shards, merge, test, publish, cleanup) in seconds."""
    files: int = 0
    """The repository's module count, the unit of the per-100-files counts."""
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Over the job and its shard workflows: ``workflows``, ``workflow tasks``, ``signals``,
    ``history events``, and ``activity <type>`` per activity scheduled (retries included)."""

    def summary(self, wall: float) -> dict[str, Any]:
        acts = {
            k: {"count": len(v), "total_s": round(sum(v), 3), "mean_ms": round(1000 * _mean(v), 1)}
            for k, v in sorted(self.activities.items(), key=lambda kv: -sum(kv[1]))
        }
        cmds = {
            k: {"count": len(v), "total_s": round(sum(v), 3), "mean_ms": round(1000 * _mean(v), 1)}
            for k, v in sorted(self.commands.items(), key=lambda kv: -sum(kv[1]))
        }
        return {
            "wall_s": round(wall, 3),
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
            "shards": self.shards,
            "shard_wall_mean_s": round(_mean(self.shard_walls), 3),
            "shard_gap_total_s": round(sum(self.gaps), 3),
            "shard_gap_share": round(sum(self.gaps) / max(sum(self.shard_walls), 1e-9), 3),
            "activity_busy_s": round(sum(sum(v) for v in self.activities.values()), 3),
            "queue_wait_total_s": round(sum(self.queue_wait), 3),
            "queue_wait_mean_ms": round(1000 * _mean(self.queue_wait), 1),
            "activities": acts,
            "subprocesses": cmds,
            "counts": dict(sorted(self.counts.items())),
            "counts_per_100_files": {
                k: round(100 * v / max(self.files, 1), 1) for k, v in sorted(self.counts.items())
            },
        }


class CpuMeter:
    """CPU seconds used during a block: by this process (the worker's threads, or the plain
    tool's in-process rope), by the subprocesses it waited for (git, ruff, pytest), and by
    the dev server; and, apart from the total, by every other process on the machine
    (``others``: load the bench did not cause, which slows it down)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.used: dict[str, float] = {}

    def _now(self) -> tuple[float, float, float, float]:
        t = os.times()
        return (
            time.process_time(),
            t.children_user + t.children_system,
            proc_cpu(self.server_pid),
            machine_busy(),
        )

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        used = [b - a for a, b in zip(self._start, self._now(), strict=True)]
        ours = sum(used[:3])
        self.used = {
            "python": round(used[0], 3),
            "subprocesses": round(used[1], 3),
            "server": round(used[2], 3),
            "total": round(ours, 3),
            "others": round(max(used[3] - ours, 0.0), 3),
        }


DURING_SHARDS = "progress.shard_done (during shards)"
"""The parent's step per finished shard: it runs while other shards edit, so its time lies
inside the shards phase and is left out of the sum that gives the rest."""
PHASES = {
    "refactor.plan": "plan",
    "git.merge": "merge",
    "check.run": "test",
    "git.publish": "publish",
    "git.cleanup": "cleanup",
    "progress.shard_done": DURING_SHARDS,
}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


@contextmanager
def traced_subprocesses(profile: Profile | None):
    """Time the project's git and tool invocations (the worker runs in this process): every
    GitPython command, and every ``run_command`` an activity module imported; a no-op without
    a profile."""
    if profile is None:
        yield
        return
    import git

    from agentparallels import activities
    from agentparallels.activities import _proc

    def timed(fn: Callable[..., Any], kind: Callable[..., str]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.commands[kind(*args, **kwargs)].append(time.perf_counter() - start)

        return wrapper

    def git_kind(_self: Any, command: Any, *_: Any, **__: Any) -> str:
        # The subcommand, past global options: ``git -C <dir> worktree add`` is "git worktree".
        words = list(command) if isinstance(command, list | tuple) else str(command).split()
        rest = iter(words[1:])
        for word in rest:
            if word in ("-C", "-c"):
                next(rest, None)
            elif not word.startswith("-"):
                return f"git {word}"
        return "git"

    def tool_kind(command: str, *_: Any, **__: Any) -> str:
        words = command.split()
        tool = Path(words[0]).name
        if tool.startswith("python") and "pytest" in command:
            return "pytest (the test command)"
        if tool != "ruff":
            return tool
        if "--select UP" in command:
            return "ruff check --select UP (the codemod)"
        if "--select I " in command:
            return "ruff check --select I (sort imports)"
        if words[1] == "check" and "--isolated" in command:
            return "ruff check (verify rules)"
        return f"ruff {words[1]}"

    patched: list[tuple[Any, str, Any]] = [(git.Git, "execute", git.Git.execute)]
    for name, module in list(sys.modules.items()):
        if name.startswith(f"{activities.__name__}.") and module is not None:
            if getattr(module, "run_command", None) is _proc.run_command:
                patched.append((module, "run_command", _proc.run_command))
    git.Git.execute = timed(git.Git.execute, git_kind)
    for owner, attr, original in patched[1:]:
        setattr(owner, attr, timed(original, tool_kind))
    try:
        yield
    finally:
        for owner, attr, original in patched:
            setattr(owner, attr, original)


async def read_histories(client: Any, job_id: str, profile: Profile) -> None:
    """Activity run and queue times of the job and all its shard workflows, the job's phases,
    and how much of each shard's time no activity was running."""
    from temporalio.api.enums.v1 import EventType as E

    ids = [job_id]
    seen = 0
    while seen < len(ids):
        wf_id = ids[seen]
        seen += 1
        history = await client.get_workflow_handle(wf_id).fetch_history()
        scheduled: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        busy: list[tuple[float, float]] = []
        times = [ev.event_time.ToDatetime().timestamp() for ev in history.events]
        first = times[0]
        count_events(history.events, profile.counts)
        for ev, t in zip(history.events, times, strict=True):
            if ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = ev.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[ev.event_id] = (name, t)
            elif ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sid = ev.activity_task_started_event_attributes.scheduled_event_id
                started[sid] = t
                profile.queue_wait.append(t - scheduled[sid][1])
            elif ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                name = scheduled[sid][0]
                profile.activities[name].append(t - started[sid])
                busy.append((started[sid], t))
                if wf_id == job_id:  # the job's own steps are its phases
                    phase = PHASES.get(name, name)
                    profile.phases[phase] = profile.phases.get(phase, 0.0) + t - started[sid]
            elif ev.event_type == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                attrs = ev.start_child_workflow_execution_initiated_event_attributes
                ids.append(attrs.workflow_id)
                profile.shards += 1
                profile.phases.setdefault("_shards_from", t)
            elif ev.event_type == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
                profile.phases["_shards_to"] = t
        if wf_id == job_id:
            profile.phases["total"] = times[-1] - first
        else:
            wall = times[-1] - first
            profile.shard_walls.append(wall)
            profile.gaps.append(wall - sum(end - start for start, end in busy))
    span = profile.phases.pop("_shards_to", 0.0) - profile.phases.pop("_shards_from", 0.0)
    profile.phases["shards (all edits)"] = span
    profile.phases["other (workflow tasks, scheduling)"] = profile.phases["total"] - sum(
        v for k, v in profile.phases.items() if k not in ("total", DURING_SHARDS)
    )


def count_events(events: Any, counts: dict[str, int]) -> None:
    """Add one workflow history's round trips to ``counts``: the workflow tasks the worker
    ran, the activities scheduled (by type) and the signals received. Each is a trip through
    the server, so these numbers per 100 files show what a job's orchestration costs as it
    grows, apart from the edits themselves."""
    from temporalio.api.enums.v1 import EventType as E

    counts["workflows"] += 1
    counts["history events"] += len(events)
    for ev in events:
        if ev.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            counts["workflow tasks"] += 1
        elif ev.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            counts["signals"] += 1
        elif ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = ev.activity_task_scheduled_event_attributes.activity_type.name
            counts["activities"] += 1
            counts[f"activity {name}"] += 1


def job_limits(args: argparse.Namespace) -> Any:
    from agentparallels.core.models import Limits

    return Limits(
        parallel=args.parallel,
        max_files_per_shard=args.max_files_per_shard,
        batch_files=args.batch_files,
        sandbox=args.sandbox,
    )


async def durable_job(
    client: Any,
    repo: Path,
    edit: Any,
    args: argparse.Namespace,
    profile: Profile | None,
    server_pid: int | None,
) -> dict:
    from agentparallels import worker
    from agentparallels.core.models import RefactorInput, RefactorResult

    job_id = f"bench-{uuid.uuid4().hex[:10]}"
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    limits = job_limits(args)
    inp = RefactorInput(repository=str(repo), edit=edit, test_cmd=TEST_CMD, limits=limits)
    options = worker.WorkerOptions(task_queue=queue, max_concurrent_activities=args.max_activities)
    async with worker.build_worker(client, options):
        with traced_subprocesses(profile), CpuMeter(server_pid) as cpu:
            start = time.perf_counter()
            result = await client.execute_workflow(
                names.REFACTOR,
                inp,
                id=job_id,
                task_queue=queue,
                result_type=RefactorResult,
                request_eager_start=True,  # as the CLI's in-process worker gets it
            )
            wall = time.perf_counter() - start
    if result.outcome != "succeeded" or not all(c.passed for c in result.checks):
        raise RuntimeError(f"job {job_id} did not succeed: {result}")
    tree = git_out(repo, "rev-parse", f"{result.head_commit}^{{tree}}")
    out = {
        "wall": wall,
        "cpu": cpu.used,
        "tree": tree,
        "files": len(result.files_changed),
        "job_id": job_id,
    }
    if profile is not None:
        await read_histories(client, job_id, profile)
        out["profile"] = profile.summary(wall) | {"cpu_s": cpu.used}
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def speed_probe() -> dict[str, float]:
    """How fast the machine is right now: a fixed pure-Python loop, and 20 spawns of
    ``git --version`` (the jobs spawn many processes). On a shared VM both drift."""
    start = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    loop = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(20):
        subprocess.run(["git", "--version"], capture_output=True, check=True)
    spawn = time.perf_counter() - start
    return {"python_loop_s": round(loop, 3), "spawn_ms": round(1000 * spawn / 20, 2)}


def fmt_profile(p: dict) -> str:
    phases = " | ".join(f"{k} {v:.2f}s" for k, v in p["phases_s"].items() if k != "total")
    cpu = p["cpu_s"]
    name, edit = next(
        ((k, v) for k, v in p["activities"].items() if k.startswith("refactor.edit")),
        ("refactor.edit", {"count": 0, "mean_ms": 0}),
    )
    lines = [
        f"wall {p['wall_s']:.2f}s: {phases}",
        f"{p['shards']} shards; {name} {edit['count']}x, {edit['mean_ms']:.0f} ms "
        f"each; {100 * p['shard_gap_share']:.0f}% of the shards' time no activity ran "
        f"(workflow tasks, progress signals, dispatch); activity queue wait "
        f"{p['queue_wait_mean_ms']:.0f} ms on average",
        f"CPU {cpu['total']:.2f}s = worker process {cpu['python']:.2f}s + git/ruff/pytest "
        f"{cpu['subprocesses']:.2f}s + dev server {cpu['server']:.2f}s",
        "subprocesses (count x mean = total):",
    ]
    for k, v in list(p["subprocesses"].items())[:14]:
        lines.append(f"  {k:<36} {v['count']:>4} x {v['mean_ms']:6.1f} ms = {v['total_s']:6.2f}s")
    lines.append("workflow round trips (job and shards: count, per 100 files):")
    for k, v in p["counts"].items():
        lines.append(f"  {k:<36} {v:>6} {p['counts_per_100_files'][k]:>8.1f}")
    return "\n".join(lines)


def _median_cpu(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def fmt_table(rows: list[dict]) -> str:
    head = (
        f"{'files':>5}  {'edit':<8} {'changed':>7}  {'durable s':>9}  {'plain s':>8}  "
        f"{'ratio':>6}  {'CPU s durable':>13}  {'CPU s plain':>11}  {'same tree':>9}  "
        f"{'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['size']:>5}  {r['edit']:<8} {r['files_changed']:>7}  "
            f"{r['durable_median_s']:>9.2f}  {r['plain_median_s']:>8.2f}  "
            f"{r['ratio']:>5.2f}x  {r['cpu_durable_median_s']['total']:>13.2f}  "
            f"{r['cpu_plain_median_s']['total']:>11.2f}  {'yes' if r['same_tree'] else 'NO':>9}  "
            f"{100 * r['others_load']:>5.0f}%"
        )
    lines.append(
        "ratio = durable/plain of the medians; CPU s = median CPU seconds of the bench "
        "(worker or plain tool, their subprocesses, the dev server); others = share of the "
        "machine's CPU other processes used meanwhile"
    )
    if any(r["others_load"] > 0.1 for r in rows):
        lines.append("WARNING: other processes loaded the machine; the times are inflated")
    return "\n".join(lines)


async def run(args: argparse.Namespace, work: Path) -> dict:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from agentparallels.core import attributes
    from agentparallels.core.models import CommandEdit, RenameEdit
    from agentparallels.plugin import AgentParallelsPlugin

    os.environ["AGENTPARALLELS_CACHE_DIR"] = str(work / "cache")
    edits = {
        "rename": (RenameEdit(old=OLD, new=NEW), plain_rename),
        "codemod": (CommandEdit(command=CODEMOD, files=("**/*.py",)), plain_codemod),
    }
    started = time.perf_counter()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(ROOT / ".venv" / "bin" / "temporal"),
        # The project's plugin, with plain pydantic payloads: no encryption or external storage.
        plugins=[AgentParallelsPlugin(data_converter=pydantic_data_converter)],
        search_attributes=attributes.ALL,
        dev_server_extra_args=devserver.dynamic_config_flags(devserver.FAST_TIMERS),
        dev_server_log_level="error",
    )
    server_s = time.perf_counter() - started
    server_pid = dev_server_pid()
    print(f"dev server up in {server_s:.1f}s; work dir {work}", flush=True)
    rows: list[dict] = []
    repos: dict[int, dict] = {}
    probes = [speed_probe()]
    profiles: dict[str, dict] = {}
    async with env:
        for size in args.sizes:
            if size != args.sizes[0]:
                probes.append(speed_probe())
            template = work / f"template-{size}"
            repos[size] = generate_repo(template, size)
            print(f"\n== {size} modules: {repos[size]}", flush=True)
            for name, (edit, plain) in edits.items():
                durable_s: list[float] = []
                plain_s: list[float] = []
                cpu: dict[str, list[dict]] = {"durable": [], "plain": []}
                trees: set[str] = set()
                changed = 0
                for rep in range(args.repeat):
                    # Alternate which side goes first, so that neither always gets warm caches.
                    order = ("durable", "plain") if rep % 2 == 0 else ("plain", "durable")
                    for side in order:
                        repo = copy_repo(template, work / f"{name}-{size}-{rep}-{side}")
                        if side == "plain":
                            with CpuMeter(server_pid) as meter:
                                start = time.perf_counter()
                                tree, changed = plain(repo)
                                plain_s.append(time.perf_counter() - start)
                            cpu["plain"].append(meter.used)
                            trees.add(tree)
                        else:
                            last = rep == args.repeat - 1
                            profile = Profile(files=size) if args.profile and last else None
                            res = await durable_job(
                                env.client, repo, edit, args, profile, server_pid
                            )
                            durable_s.append(res["wall"])
                            cpu["durable"].append(res["cpu"])
                            trees.add(res["tree"])
                            if profile is not None:
                                profiles[f"{name}-{size}"] = res["profile"]
                        shutil.rmtree(repo, ignore_errors=True)
                    print(
                        f"  {name:<8} run {rep + 1}/{args.repeat}: durable {durable_s[-1]:6.2f}s"
                        f"  plain {plain_s[-1]:6.2f}s",
                        flush=True,
                    )
                d, p = statistics.median(durable_s), statistics.median(plain_s)
                rows.append(
                    {
                        "size": size,
                        "edit": name,
                        "files_changed": changed,
                        "durable_s": [round(x, 3) for x in durable_s],
                        "plain_s": [round(x, 3) for x in plain_s],
                        "durable_median_s": round(d, 3),
                        "plain_median_s": round(p, 3),
                        "ratio": round(d / p, 3),
                        "cpu_durable_median_s": _median_cpu(cpu["durable"]),
                        "cpu_plain_median_s": _median_cpu(cpu["plain"]),
                        "cpu_durable_s": cpu["durable"],
                        "cpu_plain_s": cpu["plain"],
                        "same_tree": len(trees) == 1,
                        "others_load": round(
                            sum(c["others"] for c in cpu["durable"] + cpu["plain"])
                            / ((sum(durable_s) + sum(plain_s)) * (os.cpu_count() or 1)),
                            3,
                        ),
                    }
                )
    return {
        "project": project_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": {
            "sizes": args.sizes,
            "repeat": args.repeat,
            "rename": f"{OLD} -> {NEW}",
            "codemod": CODEMOD,
            "test_cmd": TEST_CMD,
            "limits": job_limits(args).model_dump(),
            "worker": {"max_concurrent_activities": args.max_activities},
        },
        "repos": {str(k): v for k, v in repos.items()},
        "dev_server_start_s": round(server_s, 2),
        "speed_probes": probes + [speed_probe()],
        "results": rows,
        "profiles": profiles,
        "total_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    from agentparallels import worker
    from agentparallels.core.models import Limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], metavar="N")
    parser.add_argument("--repeat", type=int, default=3, metavar="N")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="do not break the last durable run of each case down by phase, activity and "
        "subprocess (the breakdown wraps the project's git and tool helpers with timers)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=Limits().parallel,
        metavar="N",
        help="the jobs' Limits.parallel: shards run at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-files-per-shard",
        type=int,
        default=Limits().max_files_per_shard,
        metavar="N",
        help="the jobs' Limits.max_files_per_shard (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-files",
        type=int,
        default=Limits().batch_files,
        metavar="N",
        help="the jobs' Limits.batch_files: files per edit activity (default: %(default)s)",
    )
    parser.add_argument(
        "--max-activities",
        type=int,
        default=worker.WorkerOptions().max_concurrent_activities,
        metavar="N",
        help="the worker's max_concurrent_activities (default: %(default)s)",
    )
    parser.add_argument(
        "--sandbox",
        choices=["bwrap", "none"],
        default=Limits().sandbox.mode,
        help="the jobs' Limits.sandbox: tool commands in bubblewrap or not (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if min(args.sizes) < 2 or args.repeat < 1:
        parser.error("sizes must be >= 2 and --repeat >= 1")
    work = Path(tempfile.mkdtemp(prefix="refactor-bench-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + fmt_table(report["results"]))
    for key, prof in report["profiles"].items():
        print(f"\nwhere the time of the last durable {key} job went:")
        print(textwrap.indent(fmt_profile(prof), "  "))
    probes = ", ".join(
        f"{p['python_loop_s']:.2f}s/{p['spawn_ms']:.1f}ms" for p in report["speed_probes"]
    )
    print(f"\nmachine speed probes (python loop / process spawn), start to end: {probes}")
    print(f"total {report['total_s']}s on {report['machine']['cpus']} cpus")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    run_main(main)
