"""Watching an agent job's tool calls against its repository's baseline (``core.baseline``).

:class:`ToolWatch` is the unit's side: it adds each tool call's outcome and duration (measured
by the step, so read from history on replay) to the unit's stats, judges the call against the
job's baseline and signals a flagged call to the job at once. :class:`JobWatch` is the job's
side: it records each flag as a ``tool_flagged`` event, keeps the latest for the Temporal UI's
current details (with the cost so far and the provider breaker's state), and adds up the units'
stats and flags for the result, where the repository's next job finds them.

Everything here is workflow state and decisions taken from recorded values: a replay takes
the same ones. A job started without a baseline (none given, or an older job) sends no
signal, so its history is what it was before there were baselines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

from agentparallels.core import names

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.agentjob import AgentInput, ToolOutcome, UnitInput, UnitResult
    from agentparallels.core.baseline import (
        MAX_FLAGS,
        SAMPLES,
        ToolFlag,
        ToolStats,
        judge,
        merged,
        thinned,
        tool_command,
    )
    from agentparallels.core.tools import ToolCall

TOOL_FLAG_SIGNAL = names.TOOL_FLAG_SIGNAL
SHOWN_FLAGS = 5
"""Flagged calls the job's current details list (the newest)."""


class ToolWatch:
    """A unit's tool calls: stats per (tool, command), and flags against the baseline."""

    def __init__(self, inp: UnitInput) -> None:
        self.inp = inp
        self._stats: dict[tuple[str, str], ToolStats] = {}
        self.flags: list[ToolFlag] = []
        self.flagged = 0

    def command_of(self, tool: str) -> str:
        inp = self.inp
        return tool_command(tool, inp.test_cmd, inp.check_cmd, inp.limits.verify_rules)

    async def observe(self, tc: ToolCall, outcome: ToolOutcome, number: int) -> None:
        """Count call ``number`` of the unit; flag it (and tell the job) when the baseline
        has no such call yet, or it took far longer than the baseline's norm."""
        key = (tc.name, self.command_of(tc.name))
        was = self._stats.get(key) or ToolStats(tool=key[0], command=key[1])
        first = was.calls == 0
        self._stats[key] = was.model_copy(
            update={
                "calls": was.calls + 1,
                "failures": was.failures + (not outcome.ok),
                "durations_ms": thinned((*was.durations_ms, outcome.elapsed_ms), SAMPLES),
            }
        )
        baseline = self.inp.baseline
        if baseline is None:
            return
        flag = judge(baseline, self.inp.unit.name, number, *key, outcome.elapsed_ms, outcome.ok)
        if flag is None or flag.kind == "new" and not first:  # new: once per unit
            return
        self.flagged += 1
        if len(self.flags) < MAX_FLAGS:
            self.flags.append(flag)
        try:
            parent = workflow.get_external_workflow_handle(self.inp.parent_id)
            await parent.signal(TOOL_FLAG_SIGNAL, flag)
        except FailureError as e:  # the job has ended: the result still lists the flag
            workflow.logger.info("flag not sent to the job: %s", e)

    def stats(self) -> tuple[ToolStats, ...]:
        return merged(self._stats.values())

    def go_on(
        self, stats: tuple[ToolStats, ...], flags: tuple[ToolFlag, ...], flagged: int
    ) -> None:
        """Take over what the unit's run before a continue-as-new observed."""
        self._stats = {(s.tool, s.command): s for s in stats}
        self.flags, self.flagged = list(flags), flagged


class JobWatch:
    """The job's side (module docstring). ``on_change`` refreshes the UI's details."""

    def __init__(self, record: Callable[..., object], on_change: Callable[[], None]) -> None:
        self._record = record
        self._on_change = on_change
        self.baseline_jobs = 0
        self.recent: list[ToolFlag] = []
        self.flagged = 0
        self.breaker: str | None = None
        """The provider breaker's state, shown when set."""
        self._stats: tuple[ToolStats, ...] = ()
        self._flags: list[ToolFlag] = []
        self._unit_flagged = 0
        self._costs: list[float | None] = []
        workflow.set_signal_handler(TOOL_FLAG_SIGNAL, self.signalled)

    def begin(self, inp: AgentInput) -> None:
        self.baseline_jobs = inp.baseline.jobs if inp.baseline else 0

    def signalled(self, flag: ToolFlag) -> None:
        """A unit flagged a call: an event now, a line in the UI."""
        self.flagged += 1
        self.recent = [*self.recent, flag][-SHOWN_FLAGS:]
        self._record("tool_flagged", shard=flag.unit, detail=flag.line())
        self._on_change()

    def unit_done(self, result: UnitResult) -> None:
        """A unit's result (every attempt counts: its calls were made)."""
        self._stats = merged((*self._stats, *result.tools))
        self._flags += result.flags
        self._unit_flagged += result.flagged
        self._costs.append(result.cost_usd)

    def result_fields(self) -> dict[str, Any]:
        """The result's ``tool_stats``, ``flags``, ``flagged`` and ``baseline_jobs``."""
        return {
            "tool_stats": self._stats,
            "flags": tuple(self._flags[: 2 * MAX_FLAGS]),
            "flagged": self._unit_flagged,
            "baseline_jobs": self.baseline_jobs,
        }

    def cost(self, *others: float | None) -> str:
        """``, $0.0123 so far``: the finished units' calls and ``others`` (the planner's, the
        reviewers'), or nothing when a model has no price."""
        costs = [*others, *self._costs]
        if any(c is None for c in costs):
            return ""
        return f", ${sum(c or 0.0 for c in costs):.4f} so far"

    def details(self) -> str:
        """The lines the job's current details end with."""
        lines = []
        if self.breaker is not None:
            lines.append(f"provider breaker: **{self.breaker}**")
        if self.baseline_jobs:
            lines.append(f"baseline: {self.baseline_jobs} past jobs; {self.flagged} calls flagged")
        else:
            lines.append("baseline: none (no past agent job on this repository)")
        lines += [f"- ⚠ [{f.unit}] {f.line()}" for f in self.recent]
        return "\n\n" + "\n".join(lines)


__all__ = ["JobWatch", "SHOWN_FLAGS", "TOOL_FLAG_SIGNAL", "ToolWatch"]
