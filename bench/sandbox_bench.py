"""Benchmark: the sandbox's cost per tool command.

Each command runs through ``activities._proc.run_command``, the one function every tool command
of a job goes through, once under the ``bwrap`` policy and once under ``none``, alternating
(``--runs`` pairs, the side going first alternating too), in a scratch folder holding one
Python file of a few hundred lines. The commands: ``true`` (the bare cost of a shell),
``python -c pass`` (an interpreter start) and ``ruff check --select E,F`` on the file (what a
job runs after every batch of edits). Reported per command: median milliseconds on each side,
the ratio and the difference, and the fastest run of each side (the least disturbed by other
load on a shared machine); the load average before and after is recorded too.

Run from the project root: ``.venv/bin/python bench/sandbox_bench.py [--runs 30]``. It prints
a table and writes everything to ``bench/results/sandbox.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities import sandbox  # noqa: E402
from activities._proc import ruff_bin, run_command  # noqa: E402
from bench._machine import project_revision  # noqa: E402

SAMPLE = "\n\n".join(
    f"def to_cents_{i}(amount: float, rate: float = 1.0) -> int:\n"
    f"    total = amount * rate + {i}\n"
    "    return int(round(total * 100))\n"
    for i in range(100)
)


def commands(file: Path) -> dict[str, str]:
    return {
        "true": "true",
        "python -c pass": f"{shlex.quote(sys.executable)} -c pass",
        "ruff check (1 file)": (
            f"{ruff_bin()} check --isolated --no-cache --quiet --select E,F {file.name}"
        ),
    }


def measure(command: str, cwd: Path, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"bwrap": [], "none": []}
    policies = {"bwrap": sandbox.Policy(), "none": sandbox.Policy(mode="none")}
    for i in range(runs):
        order = ("bwrap", "none") if i % 2 == 0 else ("none", "bwrap")
        for side in order:
            started = time.perf_counter()
            done = run_command(command, cwd, 60, policies[side])
            times[side].append((time.perf_counter() - started) * 1000)
            if not done.ok:
                raise SystemExit(f"`{command}` failed under {side}: {done.output}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="pairs of runs per command")
    args = parser.parse_args()
    if why := sandbox.problem("bwrap"):
        raise SystemExit(why)
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        file = Path(tmp) / "money.py"
        file.write_text(SAMPLE)
        for name, command in commands(file).items():
            run_command(command, Path(tmp), 60, sandbox.Policy())  # warm caches once
            times = measure(command, Path(tmp), args.runs)
            bwrap, none = (statistics.median(times[s]) for s in ("bwrap", "none"))
            rows.append({
                "command": name, "bwrap_ms": bwrap, "none_ms": none,
                "ratio": bwrap / none, "extra_ms": bwrap - none,
                "bwrap_best_ms": min(times["bwrap"]), "none_best_ms": min(times["none"]),
                "samples": times,
            })  # fmt: skip
    load = {"before": load_before, "after": os.getloadavg()}
    print(
        f"{'command':<22}{'bwrap ms':>10}{'none ms':>10}{'ratio':>8}{'extra ms':>10}"
        f"{'best bwrap':>12}{'best none':>11}"
    )
    for row in rows:
        print(
            f"{row['command']:<22}{row['bwrap_ms']:>10.1f}{row['none_ms']:>10.1f}"
            f"{row['ratio']:>7.2f}x{row['extra_ms']:>10.1f}"
            f"{row['bwrap_best_ms']:>12.1f}{row['none_best_ms']:>11.1f}"
        )
    out = ROOT / "bench" / "results" / "sandbox.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "runs": args.runs,
                "rows": rows,
                "load_average": load,
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "revision": project_revision(),
            },
            indent=1,
        )
    )
    print(
        f"medians of {args.runs} runs each; load average {load_before[0]:.1f} before, "
        f"{load['after'][0]:.1f} after; written to {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
