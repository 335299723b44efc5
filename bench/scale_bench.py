"""Benchmark: the same refactor job on 1, 2 and 3 worker processes that share no disk.

Issue 15, item 6. Each worker is an ``agentparallels worker`` process with its own ``HOME``,
cache and blob store (as on separate machines: ``bench.chaos.Machine``), and the job's
repository is reached by a git URL (``git daemon`` on 127.0.0.1, pushes enabled), not by a
path every worker can open. One dev server (SQLite file) serves all runs. For each worker count
the job runs on a fresh copy of the same generated repository (``bench.refactor_bench``'s
1000 modules by default), and the bench reports its wall time, the speed-up over one worker,
how its shards spread over the workers (from the histories: which worker ran each edit step),
and the CPU the dev server and the machine spent. Every run must produce the same tree.

The machine this runs on bounds the speed-up: worker processes on one machine share its cores,
so a third worker on two cores adds parallel polling, not CPU. Read the figures with the cores
and the dev server's CPU beside them (``docs/deploy.md`` says what changes on a real cluster).

Run from the project root: ``.venv/bin/python -m bench.scale_bench [--files 1000] [--edit
codemod]``; it prints a table and writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._machine import machine_busy, proc_cpu, project_revision, run_main
from bench.chaos import Machine, Server, WorkerProcess, free_port
from bench.refactor_bench import CODEMOD, NEW, OLD, TEST_CMD, copy_repo, generate_repo, git_out

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "scale.json"


class GitDaemon:
    """``git daemon`` serving every repository under ``base`` at git://127.0.0.1:<port>/."""

    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_port()
        self.proc = subprocess.Popen(
            [
                "git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                f"--base-path={base}", "--listen=127.0.0.1", f"--port={self.port}", str(base),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.1)

    def url(self, repo: Path) -> str:
        return f"git://127.0.0.1:{self.port}/{repo.relative_to(self.base)}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def edit_of(name: str) -> Any:
    from agentparallels.core.models import CommandEdit, RenameEdit

    return RenameEdit(old=OLD, new=NEW) if name == "rename" else CommandEdit(command=CODEMOD)


async def one_run(
    client: Any, server: Server, daemon: GitDaemon, template: Path, work: Path,
    workers: int, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    from agentparallels.core import names
    from agentparallels.core.models import Limits, RefactorInput, RefactorResult

    repo = copy_repo(template, daemon.base / f"repo-{workers}w")
    queue = f"scale-{workers}-{uuid.uuid4().hex[:6]}"
    procs = [
        WorkerProcess(Machine(work / f"machines-{workers}" / f"m{i}"), server.opts.address,
                      queue, f"w{i}")
        for i in range(workers)
    ]  # fmt: skip
    try:
        await asyncio.gather(*(p.polling() for p in procs))
        inp = RefactorInput(
            repository=daemon.url(repo),
            edit=edit_of(args.edit),
            test_cmd=TEST_CMD,
            limits=Limits(parallel=args.parallel),
        )
        job_id = f"scale-{workers}w-{uuid.uuid4().hex[:6]}"
        server_cpu, busy = proc_cpu(server.proc.pid), machine_busy()
        started = time.perf_counter()
        result = await client.execute_workflow(
            names.REFACTOR, inp, id=job_id, task_queue=queue, result_type=RefactorResult
        )
        wall = time.perf_counter() - started
        server_cpu = proc_cpu(server.proc.pid) - server_cpu
        busy = machine_busy() - busy
    finally:
        for p in procs:
            p.stop()
    if result.outcome != "succeeded":
        raise RuntimeError(f"{job_id}: {result.outcome}")
    by_worker = await steps_by_worker(client, job_id, {p.identity: p.name for p in procs})
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "tree": git_out(repo, "rev-parse", f"{result.head_commit}^{{tree}}"),
        "files_changed": len(result.files_changed),
        "edit_steps_by_worker": by_worker,
        "dev_server_cpu_s": round(server_cpu, 2),
        "machine_cpu_s": round(busy, 2),
    }


async def steps_by_worker(client: Any, job_id: str, names_of: dict[str, str]) -> dict[str, int]:
    """How many edit steps each worker ran, over the job's shard workflows."""
    from temporalio.api.enums.v1 import EventType as E

    from agentparallels.core import names

    counts: dict[str, int] = {}
    shard_ids = []
    async for e in client.get_workflow_handle(job_id).fetch_history_events():
        if e.event_type == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            shard_ids.append(
                e.start_child_workflow_execution_initiated_event_attributes.workflow_id
            )
    for wid in shard_ids:
        scheduled: set[int] = set()
        async for e in client.get_workflow_handle(wid).fetch_history_events():
            if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                if (
                    e.activity_task_scheduled_event_attributes.activity_type.name
                    == names.EDIT_FILES
                ):
                    scheduled.add(e.event_id)
            elif e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = e.activity_task_started_event_attributes
                if attrs.scheduled_event_id in scheduled:
                    who = names_of.get(attrs.identity, attrs.identity)
                    counts[who] = counts.get(who, 0) + 1
    return dict(sorted(counts.items()))


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from temporalio.client import Client

    from agentparallels.plugin import AgentParallelsPlugin

    template = work / "template"
    repo_stats = generate_repo(template, args.files)
    served = work / "served"
    served.mkdir()
    daemon = GitDaemon(served)
    server = Server(work / "server" / "temporal.db")
    await server.start()
    try:
        plugin = AgentParallelsPlugin(store_dir=work / "client-blobs")
        client = await Client.connect(server.opts.address, plugins=[plugin])
        rows: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            order = args.workers if rep % 2 == 0 else list(reversed(args.workers))
            for n in order:
                row = await one_run(client, server, daemon, template, work / f"r{rep}", n, args)
                rows.append(row)
                shutil.rmtree(daemon.base / f"repo-{n}w", ignore_errors=True)
                print(
                    f"  {n} worker(s), run {rep + 1}: {row['wall_s']} s, edit steps "
                    f"{row['edit_steps_by_worker']}, dev server CPU {row['dev_server_cpu_s']} s",
                    flush=True,
                )
    finally:
        server.stop()
        daemon.stop()
    if len({r["tree"] for r in rows}) != 1:
        raise RuntimeError("the runs produced different trees")
    med = {
        n: statistics.median(r["wall_s"] for r in rows if r["workers"] == n) for n in args.workers
    }
    one = med[min(args.workers)]
    return {
        "edit": args.edit,
        "files": args.files,
        "repo": repo_stats,
        "parallel": args.parallel,
        "repeat": args.repeat,
        "median_wall_s": med,
        "speedup": {n: round(one / t, 2) for n, t in med.items()},
        "runs": rows,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "revision": project_revision(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, metavar="N")
    parser.add_argument("--edit", choices=["codemod", "rename"], default="codemod")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], metavar="N")
    parser.add_argument(
        "--parallel", type=int, default=6, metavar="N", help="the job's shards at once"
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="R")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.files < 1 or args.repeat < 1 or min(args.workers) < 1:
        parser.error("--files, --repeat and --workers must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.edit}, {args.files} modules, parallel {args.parallel}, {os.cpu_count()} cpus:")
    for n, t in report["median_wall_s"].items():
        print(f"  {n} worker(s): {t:.2f} s, speed-up {report['speedup'][n]}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    run_main(main)
