"""What a repository's past agent jobs say a tool call costs, and which calls fall outside it.

A traced job built from fixed steps can be compared with its own earlier runs step by step;
an agent decides its calls at run time, so a call it has never made before has nothing to be
compared with. The baseline fills that gap per repository, from the jobs that ran there:

- every agent job returns, in its result, a summary of its tool calls per **(tool, command)**
  (:class:`ToolStats`: calls, calls that failed, and a thinned sorted sample of durations).
  The command is the configured command a tool runs (``run_tests``: the test command;
  ``run_check``: ruff's rules and the check command); the reading and writing tools have none;
- the client that starts a job reads the results of the repository's latest finished agent
  jobs through visibility (:mod:`agentparallels.baselines`) and hands the job a
  :class:`Baseline`: per (tool, command) its calls, failures, the jobs that made it, and the
  median, 95th percentile and longest duration;
- the unit judges each call against it (:func:`judge`): **new** when no past job made a call
  of that (tool, command), **slow** when it took longer than ``FAR`` times the 95th
  percentile, and at least ``SLACK_MS`` more. The 95th percentile, not the maximum, so one
  freak run in the past does not hide every later one; three times it, because a test run on
  a shared machine varies by up to about twice from run to run, and a real regression (a
  hanging test, a command that now downloads the world) is usually an order of magnitude;
  the slack keeps calls of milliseconds (a read, a search) from being flagged for a pause of
  the machine.

A job with no past jobs on its repository has no baseline at all and flags nothing: every call
would be new. Pure values and functions, no I/O: safe in workflow code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from agentparallels.core import redact
from agentparallels.core._value import Value

__all__ = [
    "BASELINE_SAMPLES",
    "COMMAND_CHARS",
    "FAR",
    "MAX_FLAGS",
    "SAMPLES",
    "SLACK_MS",
    "Baseline",
    "ToolFlag",
    "ToolNorm",
    "ToolStats",
    "baseline_of",
    "judge",
    "merged",
    "percentile",
    "thinned",
    "tool_command",
]

SAMPLES = 16
"""Durations a unit's and a job's result keep per (tool, command): enough for a 95th
percentile once the past jobs' are merged, small enough that a unit's result stays within
its 8 KiB however many calls it made."""
BASELINE_SAMPLES = 240
"""Durations merged per (tool, command) over the past jobs before the norm is taken."""
FAR = 3
"""A call is slow past ``FAR`` x the 95th percentile of its baseline (module docstring)."""
SLACK_MS = 1000
"""... and past the 95th percentile plus this many milliseconds."""
MAX_FLAGS = 5
"""Flagged calls a unit's result lists (it counts them all)."""
COMMAND_CHARS = 120


def tool_command(tool: str, test_cmd: str | None, check_cmd: str | None, verify_rules: str) -> str:
    """The command a call of ``tool`` runs, as the baseline keys it (credentials in URLs
    redacted, shortened); empty for tools that run none."""
    if tool == "run_tests":
        command = test_cmd or ""
    elif tool == "run_check":
        command = f"ruff {verify_rules}" + (f" + {check_cmd}" if check_cmd else "")
    else:
        return ""
    return redact.text(" ".join(command.split()))[:COMMAND_CHARS]


def thinned(durations: Iterable[int], keep: int) -> tuple[int, ...]:
    """``durations`` sorted, and at most ``keep`` of them chosen evenly over the sorted list
    (the shortest and the longest always kept), so the percentiles stay close."""
    ordered = sorted(durations)
    if len(ordered) <= keep:
        return tuple(ordered)
    last = len(ordered) - 1
    return tuple(ordered[round(i * last / (keep - 1))] for i in range(keep))


def percentile(ordered: tuple[int, ...], q: float) -> int:
    """The ``q`` quantile (0..1) of sorted ``ordered``, nearest rank; 0 when empty."""
    if not ordered:
        return 0
    rank = max(1, -(-round(q * 1000) * len(ordered) // 1000))  # ceil without floats' drift
    return ordered[min(rank, len(ordered)) - 1]


class ToolStats(Value):
    """One (tool, command)'s calls: in a unit, a job, or the past jobs of a baseline."""

    tool: str
    command: str = ""
    calls: int = 0
    failures: int = 0
    """Calls whose outcome was not ok (a refused edit, a failed check, failing tests)."""
    durations_ms: tuple[int, ...] = ()
    """Sorted, thinned to at most ``SAMPLES`` (see :func:`thinned`)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.tool, self.command


def merged(stats: Iterable[ToolStats], keep: int = SAMPLES) -> tuple[ToolStats, ...]:
    """Stats of the same (tool, command) added up, durations thinned to ``keep``; in the order
    each key first appears."""
    out: dict[tuple[str, str], ToolStats] = {}
    for s in stats:
        was = out.get(s.key)
        if was is None:
            out[s.key] = s.model_copy(update={"durations_ms": thinned(s.durations_ms, keep)})
            continue
        out[s.key] = was.model_copy(
            update={
                "calls": was.calls + s.calls,
                "failures": was.failures + s.failures,
                "durations_ms": thinned((*was.durations_ms, *s.durations_ms), keep),
            }
        )
    return tuple(out.values())


class ToolNorm(Value):
    """What a (tool, command) took in the past jobs of a repository."""

    tool: str
    command: str = ""
    jobs: int
    """Past jobs that made at least one such call."""
    calls: int
    failures: int = 0
    p50_ms: int
    p95_ms: int
    max_ms: int

    @property
    def limit_ms(self) -> int:
        """Longer than this is far outside the norm (module docstring)."""
        return max(self.p95_ms * FAR, self.p95_ms + SLACK_MS)


class Baseline(Value):
    """Handed to an agent job at start: the norms of its repository's past jobs."""

    jobs: int
    """Past jobs read (finished agent jobs on the repository whose result had stats)."""
    tools: tuple[ToolNorm, ...] = ()

    def norm(self, tool: str, command: str) -> ToolNorm | None:
        return next((n for n in self.tools if (n.tool, n.command) == (tool, command)), None)


def baseline_of(jobs: Iterable[tuple[ToolStats, ...]]) -> Baseline | None:
    """The baseline of past jobs' stats (one tuple per job); None when there is none."""
    per_job = [s for s in jobs if s]
    if not per_job:
        return None
    norms = []
    for total in merged((s for job in per_job for s in job), BASELINE_SAMPLES):
        ordered = total.durations_ms
        norms.append(
            ToolNorm(
                tool=total.tool,
                command=total.command,
                jobs=sum(any(s.key == total.key for s in job) for job in per_job),
                calls=total.calls,
                failures=total.failures,
                p50_ms=percentile(ordered, 0.5),
                p95_ms=percentile(ordered, 0.95),
                max_ms=ordered[-1] if ordered else 0,
            )
        )
    return Baseline(jobs=len(per_job), tools=tuple(norms))


class ToolFlag(Value):
    """A tool call outside its repository's baseline."""

    unit: str
    call: int
    """The call's number in its unit (as in the step's key ``<job>/<unit>/<n>``)."""
    tool: str
    command: str = ""
    kind: Literal["new", "slow"]
    duration_ms: int
    ok: bool = True
    p95_ms: int | None = None
    limit_ms: int | None = None
    jobs: int = 0
    """Past jobs of the baseline that made such calls (0 for a new one)."""

    def line(self) -> str:
        """One line for events, the UI and ``graph``."""
        what = self.tool + (f" `{self.command}`" if self.command else "")
        took = f"{self.duration_ms / 1000:.2f} s" + ("" if self.ok else ", not ok")
        if self.kind == "new":
            return f"{what}: no baseline, first seen on this repository (call {self.call}, {took})"
        return (
            f"{what}: {took}, far outside its baseline (call {self.call}; p95 "
            f"{(self.p95_ms or 0) / 1000:.2f} s over {self.jobs} past jobs, limit "
            f"{(self.limit_ms or 0) / 1000:.2f} s)"
        )


def judge(
    baseline: Baseline, unit: str, call: int, tool: str, command: str, duration_ms: int, ok: bool
) -> ToolFlag | None:
    """The flag a call earns against ``baseline``, or None when it is within it."""
    norm = baseline.norm(tool, command)
    call_ = ToolFlag(
        unit=unit, call=call, tool=tool, command=command, kind="new", duration_ms=duration_ms, ok=ok
    )
    if norm is None:
        return call_
    if duration_ms > norm.limit_ms:
        return call_.model_copy(
            update={
                "kind": "slow",
                "p95_ms": norm.p95_ms,
                "limit_ms": norm.limit_ms,
                "jobs": norm.jobs,
            }
        )
    return None
