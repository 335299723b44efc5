"""Benchmark: one edit step of ours against the raw Temporal SDK doing the same work.

Issue 15, item 5: what does the project's step (the ``refactor.edit_files`` activity with the
project's plugin: its payload codec, tracing and timeouts, the shard workspace with its lock and
idempotency check, the bulkhead, and the sandbox around every tool command) cost against a
plain activity of the raw SDK (default data converter, no plugin, no interceptors) that does the
same work? The goal: at most 1.15x.

The work, on a repository of ``--files`` Python modules, one step per run on a fresh shard:

* **ours**: a workflow calls ``refactor.edit_files`` through ``workflows._call.call`` (as a
  shard does) for all the files at once with a ``CommandEdit`` (``--edit``, one command per
  file); the step makes the shard's worktree from the worker's clone, runs the commands, runs
  ruff's verify rules on the edited files, commits each edited file as its own checkpoint and
  pushes the shard's branch into the repository.
* **raw**: a workflow of the plain SDK executes a plain activity that does the same with git and
  subprocesses directly: a worktree of a clone at the base commit, the command on each file in
  a shell (unconfined), the same ruff verify run, one commit per edited file, one push of the
  result into the repository.

Both sides must leave the same tree on their ref (checked). Runs alternate which side goes
first; medians of ``--repeat``. Also reported: the same comparison with the sandbox off
(``--sandbox none`` on our side), to separate the sandbox's share from the rest.

Run from the project root: ``.venv/bin/python -m bench.step_bench [--files 20] [--repeat 7]``;
it prints a table and writes ``bench/results/step.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.converter import DataConverter

from bench._machine import machine_busy, project_revision, run_main

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.models import (
        CommandEdit,
        EditBatchInput,
        EditBatchResult,
        JobRef,
        Limits,
        Sandbox,
        ShardRef,
    )
    from agentparallels.workflows._call import call

ROOT = Path(__file__).parent.parent  # no resolve(): the workflow sandbox re-imports this module
RESULTS = ROOT / "bench" / "results" / "step.json"
GOAL = 1.15
EDIT = "sed -i 's/VALUE_/CONST_/' {file}"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: int) -> Path:
    (path / "src").mkdir(parents=True)
    for i in range(files):
        (path / "src" / f"m{i:03d}.py").write_text(
            f"VALUE_{i} = {i}\n\n\ndef f{i}():\n    return VALUE_{i}\n"
        )
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


# --------------------------------------------------------------------------------------------
# Ours: the project's step, through the project's plugin
# --------------------------------------------------------------------------------------------


@workflow.defn(name="StepBenchWorkflow")
class StepBenchWorkflow:
    """One ``refactor.edit_files`` step, called as a shard calls it."""

    @workflow.run
    async def run(self, inp: EditBatchInput) -> EditBatchResult:
        return await call(steps.EDIT_FILES, inp, summary="bench edit")


def step_input(repo: Path, base: str, run: str, files: list[str], mode: str) -> EditBatchInput:
    job = JobRef(job_id=f"bench-{run}", repository=str(repo), base_commit=base, timestamp=0)
    limits = Limits()
    return EditBatchInput(
        shard=ShardRef(job=job, name="s0"),
        paths=tuple(files),
        checkpoint=base,
        edit=CommandEdit(command=EDIT),
        verify_rules=limits.verify_rules,
        timeout_s=limits.command_timeout_s,
        sandbox=Sandbox(mode=mode),  # type: ignore[arg-type]
        scope=tuple(files),
    )


# --------------------------------------------------------------------------------------------
# Raw: the plain SDK, the same work done directly
# --------------------------------------------------------------------------------------------


@dataclass
class RawInput:
    repository: str
    base: str
    files: list[str]
    ref: str
    verify_rules: str


RAW_ACTIVITY = "raw.edit_files"


@workflow.defn(name="RawStepBenchWorkflow")
class RawStepBenchWorkflow:
    @workflow.run
    async def run(self, inp: RawInput) -> str:
        return await workflow.execute_activity(
            RAW_ACTIVITY,
            inp,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30),
            result_type=str,
        )


@activity.defn(name=RAW_ACTIVITY)
def raw_edit_files(inp: RawInput) -> str:
    """Edit the files in a worktree of a clone, commit each edited file, push the result."""
    from agentparallels.activities._proc import ruff_bin

    clone = Path(os.environ["STEP_BENCH_RAW_CACHE"]) / "clone"
    if not clone.exists():
        subprocess.run([*GIT, "clone", "--quiet", "--bare", inp.repository, str(clone)], check=True)
    wt = clone.parent / f"wt-{uuid.uuid4().hex[:8]}"
    git(clone, "worktree", "add", "--quiet", "--detach", str(wt), inp.base)
    try:
        for path in inp.files:
            subprocess.run(
                EDIT.replace("{file}", shlex.quote(path)), shell=True, cwd=wt, check=True
            )
        edited = [p for p in git(wt, "diff", "--name-only", "-z").split("\0") if p]
        subprocess.run(
            [ruff_bin(), "check", "--isolated", "--no-cache", "--quiet", "--select",
             inp.verify_rules, *edited],
            cwd=wt, check=True,
        )  # fmt: skip
        for path in edited:
            git(wt, "commit", "--quiet", "--no-verify", "-m", f"edit {path}", "--", path)
        head = git(wt, "rev-parse", "HEAD")
        git(wt, "push", "--quiet", inp.repository, f"{head}:{inp.ref}")
        return head
    finally:
        git(clone, "worktree", "remove", "--force", str(wt))


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from agentparallels import devserver
    from agentparallels.activities.refactor import edit_files
    from agentparallels.plugin import AgentParallelsPlugin
    from agentparallels.worker import HEARTBEAT_EVERY

    os.environ["AGENTPARALLELS_CACHE_DIR"] = str(work / "cache")
    os.environ["STEP_BENCH_RAW_CACHE"] = str(work / "raw")
    (work / "raw").mkdir()
    repo = make_repo(work / "repo", args.files)
    base = git(repo, "rev-parse", "HEAD")
    files = sorted(p for p in git(repo, "ls-files", "-z").split("\0") if p)
    plugin = AgentParallelsPlugin(
        store_dir=work / "blobs", workflows=[StepBenchWorkflow], activities=[edit_files]
    )
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(ROOT / ".venv" / "bin" / "temporal"),
        plugins=[plugin],
        dev_server_extra_args=devserver.dynamic_config_flags(),
        dev_server_log_level="error",
    )
    async with env:
        client = env.client
        plain = {"plugins": [], "interceptors": [], "data_converter": DataConverter.default}
        raw = Client(**{**client.config(), **plain})  # the SDK as it comes: nothing of ours
        queue, raw_queue = f"step-{uuid.uuid4().hex[:8]}", f"raw-{uuid.uuid4().hex[:8]}"
        raw_worker = Worker(
            raw,
            task_queue=raw_queue,
            workflows=[RawStepBenchWorkflow],
            activities=[raw_edit_files],
            activity_executor=ThreadPoolExecutor(4),
        )
        runs: dict[str, list[float]] = {"ours": [], "ours_unsandboxed": [], "raw": []}
        trees: dict[str, set[str]] = {k: set() for k in runs}
        counter = iter(range(10**6))

        async def once(side: str) -> float:
            n = next(counter)
            started = time.perf_counter()
            if side == "raw":
                ref = f"refs/bench/raw/{n}"
                inp = RawInput(str(repo), base, files, ref, Limits().verify_rules)
                await raw.execute_workflow(
                    RawStepBenchWorkflow.run, inp, id=f"raw-{n}", task_queue=raw_queue
                )
                took = time.perf_counter() - started
                trees[side].add(git(repo, "rev-parse", f"{ref}^{{tree}}"))
                return took
            mode = "bwrap" if side == "ours" else "none"
            step = step_input(repo, base, f"{n}", files, mode)
            result = await client.execute_workflow(
                StepBenchWorkflow.run, step, id=f"ours-{n}", task_queue=queue
            )
            took = time.perf_counter() - started
            if len(result.outcomes) != len(files):
                raise RuntimeError(f"{side}: {len(result.outcomes)} outcomes for {len(files)}")
            trees[side].add(git(repo, "rev-parse", f"{result.tip}^{{tree}}"))
            return took

        # The plugin the client carries registers the bench's workflow and our step, and
        # gives the worker its thread pool; heartbeats are sent as a job worker sends them.
        ours = Worker(client, task_queue=queue, max_heartbeat_throttle_interval=HEARTBEAT_EVERY)
        async with ours, raw_worker:
            for side in runs:  # warm up: imports, the clones, the sandbox's probe
                await once(side)
            busy = machine_busy()
            began = time.perf_counter()
            for rep in range(args.repeat):
                order = list(runs) if rep % 2 == 0 else list(reversed(runs))
                for side in order:
                    runs[side].append(await once(side))
                print(
                    f"  run {rep + 1}/{args.repeat}: "
                    + "  ".join(f"{k} {1000 * v[-1]:.0f} ms" for k, v in runs.items()),
                    flush=True,
                )
            wall = time.perf_counter() - began
            others = max(machine_busy() - busy, 0.0)
    if len({*trees["ours"], *trees["raw"], *trees["ours_unsandboxed"]}) != 1:
        raise RuntimeError(f"the sides left different trees: {trees}")
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "files": args.files,
        "repeat": args.repeat,
        "edit": EDIT,
        "median_ms": {k: round(1000 * v, 1) for k, v in med.items()},
        "runs_ms": {k: [round(1000 * x, 1) for x in v] for k, v in runs.items()},
        "ratio": round(med["ours"] / med["raw"], 2),
        "ratio_unsandboxed": round(med["ours_unsandboxed"] / med["raw"], 2),
        "goal": GOAL,
        "machine_cpu_share": round(others / (wall * (os.cpu_count() or 1)), 2),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "revision": project_revision(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20, metavar="N", help="files in the step")
    parser.add_argument("--repeat", type=int, default=7, metavar="R")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.files < 1 or args.repeat < 1:
        parser.error("--files and --repeat must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="step-bench-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    m = report["median_ms"]
    print(
        f"\n{report['files']} files, medians of {report['repeat']}: ours {m['ours']} ms, "
        f"ours unsandboxed {m['ours_unsandboxed']} ms, raw SDK {m['raw']} ms\n"
        f"ratio {report['ratio']}x (goal {GOAL}x), unsandboxed {report['ratio_unsandboxed']}x; "
        f"load average {report['load_avg'][0]:.1f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    run_main(main)
