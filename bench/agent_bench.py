"""Benchmark: the coding agent's cost per tool-calling step, durable against a bare loop.

Both sides talk to one scripted model server (``agentparallels.testing.fake_llm.FakeLLM``, a
real HTTP server on 127.0.0.1 speaking OpenAI's streamed tool-calling wire format, answering
after ``--latency-ms`` as a hosted model would) and run the same tool functions on the same
kind of repository, in one run:

* **durable**: ``AgentWorkflow`` started through the client with the project's plugin (codec,
  tracing, the sandbox) on an in-process worker: a plan, one unit whose every turn is one
  recorded ``llm.call`` step and one ``agent.tool`` step, the merge, the checks, the publish.
* **bare**: a plain ``for`` loop in this process that calls the same model step function
  (``activities.llm.call_model``) and the same tool function (``activities.agent_tools``)
  directly, with the same messages and the same checkpoint commits, and nothing durable.

Each side runs a unit of ``--turns`` tool-calling turns (the mix: read a file, search, edit a
file, list files, in turn) and one of ``--short`` turns; the **cost per step** is the
difference of the two runs' wall times divided by the difference of their turns, so what a
job does once (planning, merge, checks, publish, start-up) cancels out. The ratio of the two
sides' costs per step is the figure of issue 14 (goal: at most 1.3x with the model's latency
included). Also reported: the whole jobs' times, and the **history bytes per tool call** of
the durable unit (the unit's ``history_size_bytes``, every run of it, over its tool calls;
goal: at most 2 KB).

Run from the project root: ``.venv/bin/python -m bench.agent_bench [--turns 40] [--short 8]
[--latency-ms 300] [--repeat 2]``. It prints a table and writes ``bench/results/agent.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._machine import project_revision, run_main

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "bench" / "results" / "agent.json"
MODEL = "openai:bench-coder"
UNIT = "work"
GOAL_RATIO = 1.3
GOAL_BYTES = 2048
SCOPE = ("pkg/a.py",)


def make_repo(path: Path) -> Path:
    """A small package: the unit edits ``pkg/a.py`` and reads the rest."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "VALUE = 0\n",
        **{f"pkg/m{i}.py": f"def f{i}(x: int) -> int:\n    return x + {i}\n" for i in range(20)},
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=b@x", "commit", "-qm", "init"],
    ):
        subprocess.run(cmd, cwd=path, check=True)
    return path


def tree_of(repo: Path, commit: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", f"{commit}^{{tree}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def turn_calls(turns: int) -> list[dict[str, Any]]:
    """The unit's answers: ``turns`` tool-calling turns, then finish."""
    answers = []
    for n in range(turns):
        kind = n % 4
        if kind == 0:
            call = ("read_file", {"path": f"pkg/m{n % 20}.py"})
        elif kind == 1:
            call = ("search", {"pattern": f"return x \\+ {n % 20}"})
        elif kind == 2:  # the k-th edit turns VALUE = k into VALUE = k + 1
            k = n // 4
            call = (
                "edit_file",
                {"path": "pkg/a.py", "old": f"VALUE = {k}", "new": f"VALUE = {k + 1}"},
            )
        else:
            call = ("list_files", {"directory": "pkg"})
        answers.append({"tool_calls": [{"name": call[0], "arguments": call[1]}]})
    answers.append({"tool_calls": [{"name": "run_check", "arguments": {}}]})
    answers.append({"tool_calls": [{"name": "finish", "arguments": {"summary": "done"}}]})
    return answers


def script(fake: Any, turns: int, latency_ms: int) -> None:
    from agentparallels.core.agentjob import PLANNER_MARKER, unit_marker

    plan = {
        "summary": "one unit",
        "units": [
            {"name": UNIT, "goal": "bump VALUE", "scope": list(SCOPE), "capability": "python"}
        ],
    }
    fake.push_thread(PLANNER_MARKER, {"content": json.dumps(plan), "delay_ms": latency_ms})
    fake.push_thread(unit_marker(UNIT), *({**a, "delay_ms": latency_ms} for a in turn_calls(turns)))


def agent_input(repo: Path, fake: Any, turns: int) -> Any:
    from agentparallels.core.agentjob import AgentInput, AgentLimits

    return AgentInput(
        repository=str(repo),
        task="bump VALUE in pkg/a.py",
        model=MODEL,
        base_url=fake.openai_base_url,
        files=("pkg/*.py",),
        limits=AgentLimits(turns=turns + 4, edits_without_check=turns + 4),
    )


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------


async def durable(client: Any, queue: str, repo: Path, fake: Any, turns: int) -> dict:
    from agentparallels.core import names
    from agentparallels.core.agentjob import AgentResult

    job_id = f"agent-bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    result: AgentResult = await client.execute_workflow(
        names.AGENT,
        agent_input(repo, fake, turns),
        id=job_id,
        task_queue=queue,
        result_type=AgentResult,
    )
    wall = time.perf_counter() - started
    assert result.outcome == "succeeded", result
    [unit] = result.units
    history = 0
    run_id: str | None = None
    unit_id = f"{job_id}/unit-{UNIT}-1"
    while True:  # every run of the unit, following continue-as-new
        handle = client.get_workflow_handle(unit_id, run_id=run_id)
        info = (await handle.describe()).raw_description.workflow_execution_info
        history += info.history_size_bytes
        last = [e async for e in handle.fetch_history_events()][-1]
        attrs = last.workflow_execution_continued_as_new_event_attributes
        if not attrs.new_execution_run_id:
            break
        run_id = attrs.new_execution_run_id
    return {
        "wall_s": wall,
        "tool_calls": unit.tool_calls,
        "turns": unit.turns,
        "unit_history_bytes": history,
        "tree": tree_of(repo, result.head),
    }


async def bare(repo: Path, fake: Any, turns: int) -> dict:
    """The same work as a plain loop: the model step and the tool step called as functions."""
    from agentparallels.activities.agent_tools import agent_tool
    from agentparallels.activities.llm import call_model
    from agentparallels.core.agentjob import TOOLS, RepoMap, ToolRequest, UnitInput, UnitPlan
    from agentparallels.core.llm import Message, ModelRequest
    from agentparallels.core.models import JobRef
    from agentparallels.workflows.agent import planner_messages
    from agentparallels.workflows.agent_unit import first_message, system_prompt

    started = time.perf_counter()
    inp = agent_input(repo, fake, turns)
    base = subprocess.run(  # noqa: ASYNC221 - once, before the clock matters
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    job = JobRef(
        job_id=f"bare-{uuid.uuid4().hex[:8]}",
        repository=str(repo),
        base_commit=base,
        timestamp=int(time.time()),
    )

    def ask(messages: tuple[Message, ...], **extra: Any) -> Any:
        req = ModelRequest(model=MODEL, base_url=inp.base_url, messages=messages, **extra)
        return call_model(req)

    the_map = RepoMap(text="pkg/a.py", files=(), tokens=3, base_commit=base)
    await ask(planner_messages(inp, the_map), output="AgentPlan")
    unit = UnitPlan(name=UNIT, goal="bump VALUE", scope=SCOPE)
    uinp = UnitInput(
        job=job,
        parent_id=job.job_id,
        unit=unit,
        task=inp.task,
        start=base,
        model=MODEL,
        base_url=inp.base_url,
        files=inp.files,
        limits=inp.limits,
    )
    conversation = (
        Message(role="system", content=system_prompt(uinp)),
        Message(role="user", content=first_message(uinp)),
    )
    head, calls, done = base, 0, False
    while not done:
        answer = await ask(conversation, tools=TOOLS)
        conversation = (
            *conversation,
            Message(role="assistant", content=answer.text, tool_calls=answer.tool_calls),
        )
        for tc in answer.tool_calls:
            if tc.name == "finish":
                done, reply = True, "Finished."
            else:
                calls += 1
                outcome = await asyncio.to_thread(
                    agent_tool,
                    ToolRequest(
                        unit=uinp.ref,
                        checkpoint=head,
                        start=base,
                        call=tc,
                        key=f"{job.job_id}/{calls}",
                        scope=SCOPE,
                        files=inp.files,
                    ),
                )
                head, reply = outcome.head, outcome.output
            conversation = (
                *conversation,
                Message(role="tool", content=reply, tool_call_id=tc.id),
            )
    wall = time.perf_counter() - started
    return {"wall_s": wall, "tool_calls": calls, "tree": tree_of(repo, head)}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def one(side: str, turns: int, args: argparse.Namespace, env: Any, work: Path) -> dict:
    """One run of ``side`` with a unit of ``turns`` turns, on a fresh repository and script."""
    from agentparallels.testing.fake_llm import FakeLLM

    repo = make_repo(work / f"{side}-{turns}-{uuid.uuid4().hex[:6]}")
    with FakeLLM() as fake:
        script(fake, turns, args.latency_ms)
        if side == "bare":
            return await bare(repo, fake, turns)
        return await durable(env.client, env.queue, repo, fake, turns)


class _Env:
    def __init__(self, client: Any, queue: str) -> None:
        self.client, self.queue = client, queue


async def run(args: argparse.Namespace, work: Path) -> dict:
    from temporalio.testing import WorkflowEnvironment

    from agentparallels import devserver, worker
    from agentparallels.codec import data_converter
    from agentparallels.core import attributes
    from agentparallels.plugin import AgentParallelsPlugin

    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"  # for call_model in this process
    os.environ["AGENTPARALLELS_BLOB_DIR"] = str(work / "blobs")
    os.environ["AGENTPARALLELS_CACHE_DIR"] = str(work / "cache")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(ROOT / ".venv" / "bin" / "temporal"),
        plugins=[AgentParallelsPlugin(data_converter=data_converter(work / "blobs"))],
        search_attributes=attributes.ALL,
        dev_server_extra_args=devserver.dynamic_config_flags(),
        dev_server_log_level="error",
    )
    runs: dict[str, dict[int, list[dict]]] = {"durable": {}, "bare": {}}
    async with env:
        queue = f"agent-bench-{uuid.uuid4().hex[:8]}"
        async with worker.build_worker(env.client, worker.WorkerOptions(task_queue=queue)):
            bench_env = _Env(env.client, queue)
            await one("durable", 4, args, bench_env, work)  # warm up: imports, caches, server
            await one("bare", 4, args, bench_env, work)
            for rep in range(args.repeat):
                sides = ["durable", "bare"] if rep % 2 == 0 else ["bare", "durable"]
                for turns in (args.short, args.turns):
                    for side in sides:
                        r = await one(side, turns, args, bench_env, work)
                        runs[side].setdefault(turns, []).append(r)
                        print(
                            f"  run {rep + 1}/{args.repeat} {side:<7} {turns:>3} turns: "
                            f"{r['wall_s']:6.2f} s",
                            flush=True,
                        )
    return summarise(runs, args)


def summarise(runs: dict[str, dict[int, list[dict]]], args: argparse.Namespace) -> dict:
    for turns in (args.short, args.turns):  # both sides did the same work
        trees = {r["tree"] for side in runs.values() for r in side[turns]}
        if len(trees) != 1:
            raise SystemExit(f"the sides' trees differ at {turns} turns: {sorted(trees)}")
    per_step: dict[str, float] = {}
    whole: dict[str, dict[int, float]] = {}
    for side, by_turns in runs.items():
        wall = {t: statistics.median(r["wall_s"] for r in rs) for t, rs in by_turns.items()}
        whole[side] = {t: round(w, 3) for t, w in wall.items()}
        per_step[side] = (wall[args.turns] - wall[args.short]) / (args.turns - args.short)
    long_runs = runs["durable"][args.turns]
    bytes_per_call = statistics.median(r["unit_history_bytes"] / r["tool_calls"] for r in long_runs)
    return {
        "per_step_ms": {k: round(1000 * v, 1) for k, v in per_step.items()},
        "ratio": round(per_step["durable"] / per_step["bare"], 3),
        "whole_job_s": whole,
        "history_bytes_per_tool_call": round(bytes_per_call),
        "unit_history_bytes": [r["unit_history_bytes"] for r in long_runs],
        "tool_calls": long_runs[0]["tool_calls"],
        "runs": runs,
    }


def report(result: dict, args: argparse.Namespace) -> str:
    ps, whole = result["per_step_ms"], result["whole_job_s"]
    lines = [
        f"{'side':<8} {'ms/step':>8}  {args.short:>3} turns s  {args.turns:>3} turns s",
        *(
            f"{side:<8} {ps[side]:>8.1f}  {whole[side][args.short]:>11.2f}  "
            f"{whole[side][args.turns]:>11.2f}"
            for side in ("durable", "bare")
        ),
        f"durable/bare per tool-calling step: {result['ratio']:.2f}x "
        f"(goal <= {GOAL_RATIO}x; model latency {args.latency_ms} ms per answer)",
        f"history per tool call: {result['history_bytes_per_tool_call']} B "
        f"(goal <= {GOAL_BYTES} B; {result['tool_calls']} tool calls, unit histories "
        f"{result['unit_history_bytes']} B)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, metavar="N")
    parser.add_argument("--short", type=int, default=8, metavar="N")
    parser.add_argument("--latency-ms", type=int, default=300, metavar="MS")
    parser.add_argument("--repeat", type=int, default=2, metavar="R")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 3 <= args.short < args.turns:
        parser.error("--short must be at least 3 (a unit that edits) and less than --turns")
    work = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    load = os.getloadavg()[0]
    print(
        f"agent bench: units of {args.short} and {args.turns} turns, model latency "
        f"{args.latency_ms} ms, {args.repeat} repeats; load average {load:.1f} on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    try:
        result = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(result, args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "project": project_revision(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": load},
        "params": vars(args),
        **result,
    }
    RESULTS.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


__all__ = ["main"]

if __name__ == "__main__":
    run_main(main)
