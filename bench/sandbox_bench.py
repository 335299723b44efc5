"""Benchmark: the sandbox's cost per tool command.

Each command runs through ``activities._proc.run_command``, the one function every tool command
of a job goes through, on three sides in turn (``--runs`` rounds, the order rotating each
round): ``bwrap`` (deny by default: an empty root with the system, the worktree and the tools
the command names mounted into it), ``host-ro`` (the earlier layout, kept here for comparison:
the whole host bound read-only, a private ``/tmp``) and ``none`` (a plain child process), in a
scratch folder holding one Python file of a few hundred lines. The commands: ``true`` (the
bare cost of a shell), ``python -c pass`` (an interpreter start) and ``ruff check --select
E,F`` on the file (what a job runs after every batch of edits). Reported per command: median
milliseconds on each side, the ratio and the difference to ``none``, and the fastest run of
each side (the least disturbed by other load on a shared machine); the load average before and
after is recorded too.

Run from the project root: ``.venv/bin/python -m bench.sandbox_bench [--runs 30]``. It prints
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent

from agentparallels.activities import exposure, sandbox  # noqa: E402
from agentparallels.activities._proc import ruff_bin, run_command  # noqa: E402
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


SIDES = ("bwrap", "host-ro", "none")


@contextmanager
def host_read_only() -> Iterator[None]:
    """The sandbox's earlier file system: the whole host read-only, a private /tmp, this
    Python's environments, the worktree writable and its .git read-only."""

    def view(cwd: Path, command: str, env: object, ro: object = (), rw: object = ()) -> object:
        wt = str(cwd.resolve())
        mounts = [exposure.Mount("ro", "/"), exposure.Mount("tmpfs", "/tmp")]
        mounts += [exposure.Mount("ro", p) for p in {sys.prefix, sys.base_prefix}]
        mounts += [exposure.Mount("rw", wt), exposure.Mount("ro", f"{wt}/.git")]
        return exposure.View(tuple(mounts), os.environ.get("HOME", "/"))

    with mock.patch.object(exposure, "view", view):
        yield


def run_on(side: str, command: str, cwd: Path) -> float:
    # The "none" side is the unconfined baseline the sandbox's cost is measured against.
    policy = sandbox.Policy(mode="none" if side == "none" else "bwrap")
    started = time.perf_counter()
    if side == "host-ro":
        with host_read_only():
            done = run_command(command, cwd, 60, policy)
    else:
        done = run_command(command, cwd, 60, policy)
    elapsed = (time.perf_counter() - started) * 1000
    if not done.ok:
        raise SystemExit(f"`{command}` failed under {side}: {done.output}")
    return elapsed


def measure(command: str, cwd: Path, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(runs):
        for side in SIDES[i % 3 :] + SIDES[: i % 3]:
            times[side].append(run_on(side, command, cwd))
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
            for side in SIDES:  # warm caches once
                run_on(side, command, Path(tmp))
            times = measure(command, Path(tmp), args.runs)
            med = {side: statistics.median(times[side]) for side in SIDES}
            rows.append(
                {
                    "command": name,
                    "bwrap_ms": med["bwrap"],
                    "host_ro_ms": med["host-ro"],
                    "none_ms": med["none"],
                    "ratio": med["bwrap"] / med["none"],
                    "extra_ms": med["bwrap"] - med["none"],
                    "deny_vs_host_ro_ms": med["bwrap"] - med["host-ro"],
                    "bwrap_best_ms": min(times["bwrap"]),
                    "host_ro_best_ms": min(times["host-ro"]),
                    "none_best_ms": min(times["none"]),
                    "samples": times,
                }
            )
    load = {"before": load_before, "after": os.getloadavg()}
    print(
        f"{'command':<22}{'bwrap ms':>10}{'host-ro ms':>12}{'none ms':>10}{'ratio':>8}"
        f"{'extra ms':>10}{'best bwrap':>12}{'best host-ro':>14}{'best none':>11}"
    )
    for row in rows:
        print(
            f"{row['command']:<22}{row['bwrap_ms']:>10.1f}{row['host_ro_ms']:>12.1f}"
            f"{row['none_ms']:>10.1f}{row['ratio']:>7.2f}x{row['extra_ms']:>10.1f}"
            f"{row['bwrap_best_ms']:>12.1f}{row['host_ro_best_ms']:>14.1f}"
            f"{row['none_best_ms']:>11.1f}"
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
