"""Benchmark: model calls as durable workflow steps vs the same calls made directly.

Two measurements, in one run against one dev server and one scripted model server
(``agentparallels.testing.fake_llm.FakeLLM``, a real HTTP server on 127.0.0.1 that the official SDK
talks to over TCP; it answers ``ok`` at once, so what is left is the cost of each path):

* **Overhead.** ``--calls`` sequential model calls (a) as a workflow that calls
  ``ModelSteps().ask(...)`` that many times (each call one ``llm.call`` activity, run by
  ``call_model`` in a worker in this process), against (b) the same requests streamed directly
  with one ``openai.AsyncOpenAI(..., max_retries=0)`` client, and (c) directly with a new client
  per call, as the activity makes one. Per-call milliseconds, durable/direct ratio, medians of
  ``--repeat`` runs (sides alternate which goes first), and CPU milliseconds per call (this
  process and the dev server). And (d) the **raw SDK**: the same calls as a workflow of the
  plain SDK (no plugin, no codec, no tracing, the default converter) executing a plain
  activity that streams the same request with one reused client, as the model step reuses
  its: what the project's step adds to Temporal's own cost (issue 15's goal: at most 1.15x).
* **History bytes per call.** Workflows of ``--history-calls`` calls with prompts of
  ``--prompt-kib`` KiB each (every prompt different), run with the plain pydantic data
  converter (no codec; skipped where the history would pass Temporal's 50 MB limit or a payload
  its 2 MB limit), with ``agentparallels.codec.data_converter`` (claim check from 128 KiB), and
  with the same codec at a 1 KiB threshold. ``history_size_bytes`` is read from the workflow's
  description once it has completed. The goal checked: at most 2 KB of history per call with
  the codec, whatever the prompt size.

Run from the project root: ``.venv/bin/python -m bench.llm_bench [--calls 50] [--repeat 3]``.
It prints a table and writes everything to ``bench/results/llm.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.converter import DataConverter

from bench._machine import (
    dev_server_pid,
    machine_busy,
    proc_cpu,
    project_revision,
    run_main,
)

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.llm import Message, ModelRequest
    from agentparallels.workflows.model_step import ModelSteps

# No resolve(): the workflow sandbox re-imports this module and forbids file-system access.
ROOT = Path(__file__).parent.parent  # __file__ is absolute for a script (Python >= 3.9)

RESULTS = ROOT / "bench" / "results" / "llm.json"
MODEL = "openai:bench-model"
GOAL_BYTES_PER_CALL = 2000
GOAL_VS_RAW = 1.15
"""Issue 15: the project's model step against the raw SDK's activity doing the same call."""
HISTORY_LIMIT = 50 * 1024 * 1024
"""Temporal's default hard limit on a workflow's history size (the server terminates it)."""
PAYLOAD_LIMIT = 2 * 1024 * 1024
"""Temporal's default hard limit on one payload (blob) size."""
FILLER = "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. "


def prompt_text(i: int, size: int) -> str:
    """Prompt ``i``: ``size`` characters (= bytes, ASCII), different for every ``i``."""
    head = f"Request {i}: "
    body = FILLER * (size // len(FILLER) + 1)
    return (head + body)[:size]


class BenchInput(BaseModel):
    calls: int
    prompt_bytes: int
    base_url: str


@workflow.defn(name="LlmBenchWorkflow")
class LlmBenchWorkflow:
    """``calls`` model calls in sequence, each through ``ModelSteps.ask`` (one activity)."""

    @workflow.run
    async def run(self, inp: BenchInput) -> int:
        steps = ModelSteps()
        answered = 0
        for i in range(inp.calls):
            req = ModelRequest(
                model=MODEL,
                base_url=inp.base_url,
                messages=(Message(role="user", content=prompt_text(i, inp.prompt_bytes)),),
                step=f"bench call {i}",
            )
            answer = await steps.ask(req)
            answered += answer.text == "ok"
        return answered


@dataclass
class RawInput:
    calls: int
    prompt_bytes: int
    base_url: str


RAW_ACTIVITY = "raw.model_call"


@workflow.defn(name="RawSdkBenchWorkflow")
class RawSdkBenchWorkflow:
    """The raw SDK's side: ``calls`` plain activities in sequence, each the same HTTP call."""

    @workflow.run
    async def run(self, inp: RawInput) -> int:
        answered = 0
        for i in range(inp.calls):
            text = await workflow.execute_activity(
                RAW_ACTIVITY,
                args=[i, inp.prompt_bytes, inp.base_url],
                start_to_close_timeout=timedelta(minutes=10),
                result_type=str,
            )
            answered += text == "ok"
        return answered


_RAW_CLIENTS: dict[str, Any] = {}


@activity.defn(name=RAW_ACTIVITY)
async def raw_model_call(i: int, size: int, base_url: str) -> str:
    """The request ``call_model`` sends for the workflow's call ``i``, with one client per
    endpoint reused across calls (as ``call_model`` reuses its)."""
    import openai

    client = _RAW_CLIENTS.get(base_url)
    if client is None:
        client = _RAW_CLIENTS[base_url] = openai.AsyncOpenAI(
            api_key=os.environ["OPENAI_API_KEY"], base_url=base_url, max_retries=0
        )
    return await _stream_one(client, i, size)


# --------------------------------------------------------------------------------------------
# CPU
# --------------------------------------------------------------------------------------------


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall seconds, CPU seconds of this process and of the dev server, and CPU seconds that
    other processes on the machine used, over a block."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Clock:
        self._start = (
            time.perf_counter(),
            _self_cpu(),
            proc_cpu(self.server_pid),
            machine_busy(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        wall, me, server, machine = self._start
        self.wall = time.perf_counter() - wall
        self.cpu_self = _self_cpu() - me
        self.cpu_server = proc_cpu(self.server_pid) - server
        self.cpu_others = max(machine_busy() - machine - self.cpu_self - self.cpu_server, 0.0)


# --------------------------------------------------------------------------------------------
# Overhead: durable vs direct
# --------------------------------------------------------------------------------------------


def _request_kwargs(i: int, size: int) -> dict[str, Any]:
    """What ``call_model`` sends for the workflow's request ``i`` (ModelRequest defaults)."""
    defaults = ModelRequest(model=MODEL, messages=(Message(role="user", content="x"),))
    return {
        "model": MODEL.split(":", 1)[1],
        "messages": [{"role": "user", "content": prompt_text(i, size)}],
        "temperature": defaults.temperature,
        "max_tokens": defaults.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _stream_one(client: Any, i: int, size: int) -> str:
    stream = await client.chat.completions.create(**_request_kwargs(i, size))
    text = []
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
    return "".join(text)


async def direct_calls(base_url: str, calls: int, size: int, *, client_per_call: bool) -> int:
    """``calls`` streamed requests with the official SDK, retries off; one client for all, or
    (like the activity) a new one per call."""
    import openai

    def new() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=os.environ["OPENAI_API_KEY"], base_url=base_url, max_retries=0
        )

    answered = 0
    if client_per_call:
        for i in range(calls):
            async with new() as client:
                answered += await _stream_one(client, i, size) == "ok"
    else:
        async with new() as client:
            for i in range(calls):
                answered += await _stream_one(client, i, size) == "ok"
    return answered


async def raw_calls(client: Any, queue: str, base_url: str, calls: int, size: int) -> None:
    inp = RawInput(calls=calls, prompt_bytes=size, base_url=base_url)
    answered = await client.execute_workflow(
        RawSdkBenchWorkflow.run, inp, id=f"raw-bench-{uuid.uuid4().hex[:10]}", task_queue=queue
    )
    if answered != calls:
        raise RuntimeError(f"raw SDK: {answered} of {calls} calls answered 'ok'")


async def durable_calls(client: Any, queue: str, base_url: str, calls: int, size: int) -> Any:
    inp = BenchInput(calls=calls, prompt_bytes=size, base_url=base_url)
    handle = await client.start_workflow(
        LlmBenchWorkflow.run, inp, id=f"llm-bench-{uuid.uuid4().hex[:10]}", task_queue=queue
    )
    answered = await handle.result()
    if answered != calls:
        raise RuntimeError(f"workflow {handle.id}: {answered} of {calls} calls answered 'ok'")
    return handle


def bench_plugin(converter: Any) -> Any:
    """The project's plugin with ``converter``, registering only the bench's workflow and the
    model-call activity."""
    from agentparallels.activities.llm import call_model
    from agentparallels.plugin import AgentParallelsPlugin

    return AgentParallelsPlugin(
        data_converter=converter, workflows=[LlmBenchWorkflow], activities=[call_model]
    )


def bench_worker(client: Any, queue: str) -> Any:
    """A worker of ``client``, which carries a :func:`bench_plugin`."""
    from temporalio.worker import Worker

    return Worker(client, task_queue=queue)


async def overhead(
    client: Any, base_url: str, args: argparse.Namespace, server_pid: int | None
) -> dict:
    from temporalio.client import Client
    from temporalio.worker import Worker

    size = args.overhead_prompt_bytes
    queue = f"llm-bench-{uuid.uuid4().hex[:10]}"
    raw_queue = f"raw-bench-{uuid.uuid4().hex[:10]}"
    plain = {"plugins": [], "interceptors": [], "data_converter": DataConverter.default}
    raw = Client(**{**client.config(), **plain})  # the SDK as it comes: nothing of ours
    raw_worker = Worker(
        raw, task_queue=raw_queue, workflows=[RawSdkBenchWorkflow], activities=[raw_model_call]
    )
    runs: dict[str, list[dict]] = {
        "durable": [], "raw_sdk": [], "direct": [], "direct_new_client": []
    }  # fmt: skip
    async with bench_worker(client, queue), raw_worker:
        # Warm up every path (imports, the sandbox, connections) before any clock starts.
        await durable_calls(client, queue, base_url, 3, size)
        await raw_calls(raw, raw_queue, base_url, 3, size)
        await direct_calls(base_url, 3, size, client_per_call=False)
        await direct_calls(base_url, 3, size, client_per_call=True)
        for rep in range(args.repeat):
            sides = list(runs) if rep % 2 == 0 else list(reversed(runs))
            for side in sides:
                with Clock(server_pid) as clock:
                    if side == "durable":
                        await durable_calls(client, queue, base_url, args.calls, size)
                    elif side == "raw_sdk":
                        await raw_calls(raw, raw_queue, base_url, args.calls, size)
                    else:
                        answered = await direct_calls(
                            base_url, args.calls, size, client_per_call=side != "direct"
                        )
                        if answered != args.calls:
                            raise RuntimeError(f"{side}: {answered} of {args.calls} answered")
                runs[side].append(
                    {
                        "wall_s": round(clock.wall, 4),
                        "cpu_self_s": round(clock.cpu_self, 3),
                        "cpu_server_s": round(clock.cpu_server, 3),
                        "cpu_others_s": round(clock.cpu_others, 3),
                    }
                )
            print(
                f"  overhead run {rep + 1}/{args.repeat}: "
                + "  ".join(
                    f"{k} {1000 * v[-1]['wall_s'] / args.calls:.1f} ms/call"
                    for k, v in runs.items()
                ),
                flush=True,
            )
    per_call: dict[str, dict[str, float]] = {}
    for side, rs in runs.items():
        per_call[side] = {
            "ms": round(1000 * statistics.median(r["wall_s"] for r in rs) / args.calls, 2),
            "cpu_ms": round(
                1000
                * statistics.median(r["cpu_self_s"] + r["cpu_server_s"] for r in rs)
                / args.calls,
                2,
            ),
            "cpu_server_ms": round(
                1000 * statistics.median(r["cpu_server_s"] for r in rs) / args.calls, 2
            ),
        }
    d, r, p, n = (per_call[k]["ms"] for k in ("durable", "raw_sdk", "direct", "direct_new_client"))
    every = [r for rs in runs.values() for r in rs]
    others = sum(r["cpu_others_s"] for r in every) / (
        sum(r["wall_s"] for r in every) * (os.cpu_count() or 1)
    )
    return {
        "calls": args.calls,
        "repeat": args.repeat,
        "prompt_bytes": size,
        "runs": runs,
        "per_call": per_call,
        "ratio": round(d / p, 2),
        "ratio_vs_raw_sdk": round(d / r, 2),
        "raw_sdk_vs_direct": round(r / p, 2),
        "ratio_vs_new_client": round(d / n, 2),
        "added_ms_per_call": round(d - p, 2),
        "others_load": round(others, 3),
    }


# --------------------------------------------------------------------------------------------
# History bytes per call
# --------------------------------------------------------------------------------------------


def _blob_stats(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
    return len(files), sum(p.stat().st_size for p in files)


def would_exceed(calls: int, size: int) -> str | None:
    """Why a run without codec would break Temporal's limits (each prompt is recorded once, in
    its ActivityTaskScheduled event), or None."""
    payload = size + 1024  # the request's other fields and the JSON around them
    if payload >= PAYLOAD_LIMIT:
        return f"a {payload} B payload exceeds the 2 MiB payload limit"
    if calls * payload >= HISTORY_LIMIT:
        return f"~{calls * payload / 1e6:.0f} MB of history exceeds the 50 MiB limit"
    return None


async def history(
    clients: dict[str, tuple[Any, Path | None]], base_url: str, args: argparse.Namespace
) -> list[dict]:
    rows: list[dict] = []
    for name, (client, blobs) in clients.items():
        queue = f"llm-bench-{uuid.uuid4().hex[:10]}"
        async with bench_worker(client, queue):
            handle = await durable_calls(client, queue, base_url, 0, 0)
            info = (await handle.describe()).raw_description.workflow_execution_info
            empty = info.history_size_bytes
            for kib in args.prompt_kib:
                size = kib * 1024
                row: dict[str, Any] = {
                    "converter": name,
                    "prompt_kib": kib,
                    "calls": args.history_calls,
                    "empty_workflow_bytes": empty,
                }
                skip = would_exceed(args.history_calls, size) if blobs is None else None
                if skip:
                    rows.append(row | {"skipped": skip})
                    print(f"  {name:<12} {kib:>4} KiB: skipped ({skip})", flush=True)
                    continue
                before = _blob_stats(blobs) if blobs else (0, 0)
                start = time.perf_counter()
                handle = await durable_calls(client, queue, base_url, args.history_calls, size)
                wall = time.perf_counter() - start
                info = (await handle.describe()).raw_description.workflow_execution_info
                after = _blob_stats(blobs) if blobs else (0, 0)
                total = info.history_size_bytes
                row |= {
                    "history_bytes": total,
                    "history_events": info.history_length,
                    "bytes_per_call": round(total / args.history_calls),
                    "marginal_bytes_per_call": round((total - empty) / args.history_calls),
                    "blobs_written": after[0] - before[0],
                    "blob_bytes_written": after[1] - before[1],
                    "wall_s": round(wall, 2),
                    "workflow_id": handle.id,
                }
                rows.append(row)
                print(
                    f"  {name:<12} {kib:>4} KiB x {args.history_calls}: history {total} B, "
                    f"{row['bytes_per_call']} B/call, {row['blobs_written']} blobs, {wall:.1f}s",
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: Path) -> dict:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from agentparallels import devserver
    from agentparallels.codec import DEFAULT_THRESHOLD, data_converter
    from agentparallels.testing.fake_llm import FakeLLM

    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"  # for call_model in this process
    blobs = work / "blobs"
    low_blobs = work / "blobs-low"
    started = time.perf_counter()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(ROOT / ".venv" / "bin" / "temporal"),
        plugins=[bench_plugin(data_converter(blobs))],
        dev_server_extra_args=devserver.dynamic_config_flags(devserver.FAST_TIMERS),
        dev_server_log_level="error",
    )
    server_s = time.perf_counter() - started
    server_pid = dev_server_pid()
    print(f"dev server up in {server_s:.1f}s; work dir {work}", flush=True)
    async with env:
        config = env.client.config()

        def with_converter(converter: Any) -> Client:
            return Client(**{**config, "plugins": [bench_plugin(converter)]})

        low = args.low_threshold
        clients: dict[str, tuple[Any, Path | None]] = {
            "none": (with_converter(pydantic_data_converter), None),
            f"codec {DEFAULT_THRESHOLD // 1024} KiB": (env.client, blobs),
        }
        if low:
            clients[f"codec {low // 1024 or low} {'KiB' if low >= 1024 else 'B'}"] = (
                with_converter(data_converter(low_blobs, low)),
                low_blobs,
            )
        with FakeLLM() as fake:
            print(f"\n== overhead: {args.calls} sequential calls, fake model at {fake.url}")
            over = await overhead(env.client, fake.openai_base_url, args, server_pid)
            print(
                f"\n== history: {args.history_calls} calls per workflow, prompts of "
                f"{', '.join(map(str, args.prompt_kib))} KiB"
            )
            hist = await history(clients, fake.openai_base_url, args)
    return {
        "project": project_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": {
            "calls": args.calls,
            "repeat": args.repeat,
            "overhead_prompt_bytes": args.overhead_prompt_bytes,
            "history_calls": args.history_calls,
            "prompt_kib": args.prompt_kib,
            "codec_threshold": DEFAULT_THRESHOLD,
            "low_threshold": low,
            "goal_bytes_per_call": GOAL_BYTES_PER_CALL,
        },
        "dev_server_start_s": round(server_s, 2),
        "overhead": over,
        "history": hist,
        "total_s": round(time.perf_counter() - started, 1),
    }


def fmt_overhead(o: dict) -> str:
    pc = o["per_call"]
    head = f"{'path':<34} {'ms/call':>8}  {'CPU ms/call':>11}  {'of which server':>15}"
    names = {
        "durable": "durable (workflow, ModelSteps.ask)",
        "raw_sdk": "raw SDK (workflow, plain activity)",
        "direct": "direct (one AsyncOpenAI client)",
        "direct_new_client": "direct (new client per call)",
    }
    lines = [head, "-" * len(head)]
    for key, label in names.items():
        lines.append(
            f"{label:<34} {pc[key]['ms']:>8.2f}  {pc[key]['cpu_ms']:>11.2f}  "
            f"{pc[key]['cpu_server_ms']:>15.2f}"
        )
    lines.append(
        f"durable/direct {o['ratio']:.2f}x"
        f" (vs a new client per call {o['ratio_vs_new_client']:.2f}x)"
        f"; durability adds {o['added_ms_per_call']:.1f} ms per call"
        f" ({o['calls']} calls, {o['prompt_bytes']} B prompts, medians of {o['repeat']} runs)"
    )
    lines.append(
        f"durable/raw SDK {o['ratio_vs_raw_sdk']:.2f}x (goal <= {GOAL_VS_RAW:.2f}x: what the"
        f" project's step adds to Temporal's own); raw SDK/direct {o['raw_sdk_vs_direct']:.2f}x"
    )
    lines.append(
        f"other processes used {100 * o['others_load']:.0f}% of the machine's CPU meanwhile"
        + (" (WARNING: the times are inflated)" if o["others_load"] > 0.1 else "")
    )
    return "\n".join(lines)


def fmt_history(rows: list[dict]) -> str:
    head = (
        f"{'converter':<14} {'prompt':>7} {'calls':>5}  {'history B':>10}  {'B/call':>8}  "
        f"{'marginal B/call':>15}  {'blobs':>5}  {'<= 2 KB/call':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{r['converter']:<14} {str(r['prompt_kib']) + ' KiB':>7} {r['calls']:>5}  "
        if "skipped" in r:
            lines.append(start + f"skipped: {r['skipped']}")
            continue
        ok = "yes" if r["bytes_per_call"] <= GOAL_BYTES_PER_CALL else "NO"
        lines.append(
            start + f"{r['history_bytes']:>10}  {r['bytes_per_call']:>8}  "
            f"{r['marginal_bytes_per_call']:>15}  {r['blobs_written']:>5}  {ok:>12}"
        )
    lines.append(
        "B/call = history_size_bytes / calls; marginal = (history - that of a workflow of 0 "
        "calls) / calls; blobs = payloads written to the claim-check store"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, metavar="N")
    parser.add_argument("--repeat", type=int, default=3, metavar="R")
    parser.add_argument(
        "--overhead-prompt-bytes",
        type=int,
        default=1024,
        metavar="B",
        help="prompt size of the overhead calls (default: %(default)s)",
    )
    parser.add_argument(
        "--history-calls",
        type=int,
        default=20,
        metavar="K",
        help="model calls per workflow in the history measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--prompt-kib",
        type=int,
        nargs="+",
        default=[1, 100, 500],
        metavar="KIB",
        help="prompt sizes of the history measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--low-threshold",
        type=int,
        default=1024,
        metavar="B",
        help="also measure history with the codec at this threshold; 0 skips it "
        "(default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.calls < 1 or args.repeat < 1 or args.history_calls < 1:
        parser.error("--calls, --repeat and --history-calls must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + fmt_overhead(report["overhead"]))
    print("\n" + fmt_history(report["history"]))
    print(f"\ntotal {report['total_s']}s on {report['machine']['cpus']} cpus")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    run_main(main)
