"""The coding agent's values: its input, the plan, the units, the tools and their results.

``agentparallels agent`` is a pipeline (plan -> execute -> merge -> verify -> publish): a
planner model turns the task and a map of the repository into units of work
(:class:`AgentPlan`); each unit is a child workflow running a tool-using loop in its own
worktree, allowed to write only its scope; their heads are merged in dependency order, checked,
verified by the publish invariant and published. See docs/agent.md.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import Field, model_validator

from agentparallels.core._value import Sandbox, Value
from agentparallels.core.agent_session import UnitCarry
from agentparallels.core.agentreview import ApprovalRecord, PlanApproval, ReviewOptions, ReviewRound
from agentparallels.core.baseline import Baseline, ToolFlag, ToolStats
from agentparallels.core.checklist import ApprovalOptions
from agentparallels.core.llm import BudgetLimits, Price, Usage, output_model
from agentparallels.core.models import CheckRun, JobRef, Published, ShardRef
from agentparallels.core.tools import ToolCall, ToolFormat, ToolSpec

UNIT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PLANNER_MARKER = "You plan a coding job"
"""The planner's system message starts with this (a scripted model server answers by it)."""
REPAIR_UNIT = "repair"
"""The name of the unit that fixes the merged result when verification fails."""
CAPABILITIES = ("python", "tests", "docs")
"""What a unit may need; workers advertise each by a task queue (``worker --capability``)."""


class UnitPlan(Value):
    """One unit of work: a goal, the files it may write, what it needs, what it waits for."""

    name: str
    """Lower-case letters, digits and dashes; unique in the plan."""
    goal: str
    scope: tuple[str, ...]
    """Repository-relative paths the unit may write (existing files, or new ones)."""
    capability: str = "python"
    depends_on: tuple[str, ...] = ()
    """Units whose result this one builds on: it starts from their merged heads."""


@output_model
class AgentPlan(Value):
    units: tuple[UnitPlan, ...]
    summary: str = ""
    """The planner's one-paragraph account of the approach."""


class AgentLimits(Value):
    """How far the agent may go: per unit, per tool call, per job."""

    max_units: int = Field(4, ge=1, le=32)
    parallel: int = Field(2, ge=1, le=32)
    """Units running at once."""
    turns: int = Field(30, ge=1)
    """Model calls per unit (malformed answers count)."""
    max_tokens: int = Field(4096, ge=1)
    """Longest answer, in tokens."""
    output_chars: int = Field(6000, ge=200)
    """Most characters of a tool's output the model sees (the tail of a test run)."""
    read_lines: int = Field(400, ge=10)
    """Most lines ``read_file`` returns at once."""
    map_tokens: int = Field(2000, ge=100)
    """Budget of the planner's repository map, in tokens."""
    breaker_threshold: int = Field(3, ge=1)
    """Consecutive failed checks after which a unit stops (the circuit breaker)."""
    repeat_limit: int = Field(3, ge=2)
    """The same tool call with no change in between this many times is a loop."""
    edits_without_check: int = Field(8, ge=2)
    """Edits to one file with no passing check in between before it is a loop."""
    plan_retries: int = Field(2, ge=0)
    """Times an invalid plan goes back to the planner with its errors."""
    budget_timeout_s: float = Field(3600.0, gt=0)
    """How long a job paused for budget waits for ``agentparallels budget JOB --add N``
    before it refuses the call and rolls back."""
    provider_failures: int = Field(5, ge=1)
    """Consecutive ``ModelUnavailable`` failures, across the job's calls, that open the
    provider breaker."""
    provider_cooldown_s: float = Field(30.0, gt=0)
    """The breaker's first cool-down; it doubles after each failed probe."""
    provider_probes: int = Field(5, ge=1)
    """Failed half-open probes after which the provider is taken as down and the job ends."""
    command_timeout_s: float = Field(300.0, gt=0)
    sandbox: Sandbox = Sandbox()
    verify_rules: str = "E9,F63,F7,F82"
    """Ruff rules ``run_check`` and the verify phase apply on top of ``--check-cmd``."""
    context_threshold: float = Field(0.6, ge=0.1, le=0.9)
    """Before a unit's model call, a conversation estimated past this fraction of the model's
    window has its oldest turns summarised by the model (``workflows/agent_context.py``)."""
    context_window: int | None = Field(None, ge=2048)
    """The model's window in tokens; None: ``agentparallels.core.tokens.window_of``."""
    run_events: int = Field(4000, ge=200, le=40_000)
    """A unit's run continues as new at the next turn boundary past this many history events
    (or when the server suggests it), carrying its state."""
    run_bytes: int = Field(4_000_000, ge=200_000, le=40_000_000)
    """The same, in bytes of history."""

    @model_validator(mode="after")
    def _room_to_answer(self) -> AgentLimits:
        if self.context_window is not None and (
            self.context_window * self.context_threshold <= 2 * self.max_tokens
        ):
            raise ValueError(
                f"context_window {self.context_window} x context_threshold "
                f"{self.context_threshold} leaves no room for answers of max_tokens "
                f"{self.max_tokens}: raise the window or the threshold, or lower max_tokens"
            )
        return self


class AgentInput(Value):
    """The ``agentparallels agent`` job."""

    repository: str
    base_ref: str = "HEAD"
    task: str = Field(min_length=1)
    model: str
    """``provider:model`` for the planner and every unit."""
    base_url: str | None = None
    tool_format: Literal["auto", "native", "json"] = "auto"
    """``auto``: native tool calling for OpenAI and Anthropic; ``json`` for servers without it."""
    files: tuple[str, ...] = ("**/*",)
    """Globs of the files units may read and write (repository-relative)."""
    test_cmd: str | None = None
    check_cmd: str | None = None
    limits: AgentLimits = AgentLimits()
    budget: BudgetLimits = BudgetLimits()
    """``total`` is a hard cap on the whole job's tokens."""
    prices: dict[str, Price] = {}
    capabilities: dict[str, str] = {}
    """Capability -> task queue; a capability not listed runs on the job's own queue."""
    apply: bool = False
    resumed: Resumed | None = None
    """Set by ``agentparallels resume``: what this run keeps of the failed run it resumes."""
    review: ReviewOptions | None = None
    """A committee of reviewers votes on the verified change (``--reviewers``)."""
    plan_approval: PlanApproval | None = None
    """A person approves the plan before any edit (``--approve-plan``)."""
    approval: ApprovalOptions | None = None
    """A person approves the result before it is published (``--require-approval``)."""
    baseline: Baseline | None = None
    """The repository's past agent jobs' tool calls (``core.baseline``), read by the client
    that starts the job; None: no past job, nothing is flagged."""


class RepoMapInput(Value):
    job: JobRef
    """The job (its base commit still unknown: the step resolves ``base_ref``)."""
    base_ref: str = "HEAD"
    task: str
    files: tuple[str, ...]
    tokens: int


class RepoMap(Value):
    """Paths and top-level symbols, ranked by relevance to the task, within a token budget."""

    base_commit: str
    """``base_ref`` resolved: the commit every unit starts from."""
    text: str
    files: tuple[str, ...]
    """Every file of the repository matching the job's globs (what a plan may name)."""
    tokens: int


class UnitInput(Value):
    job: JobRef
    parent_id: str
    unit: UnitPlan
    task: str
    """The whole job's task, for context."""
    start: str
    """The commit the unit starts from: the base, or its dependencies' merged heads."""
    model: str
    base_url: str | None = None
    tool_format: ToolFormat = "native"
    files: tuple[str, ...] = ("**/*",)
    test_cmd: str | None = None
    check_cmd: str | None = None
    limits: AgentLimits = AgentLimits()
    budget: BudgetLimits = BudgetLimits()
    prices: dict[str, Price] = {}
    ledger: bool = False
    """Reserve tokens from the parent's ledger before each model call."""
    breaker_attempts: int = 0
    """Attempts of one model call under the job's provider breaker (each failure reported in
    its settlement; the step does not retry ``ModelUnavailable`` itself); 0: no breaker."""
    note: str = ""
    """More for the first message: the failing output a repair unit is to fix, or why a unit
    runs again on top of merged work."""
    attempt: int = 1
    resume_from: UnitCheckpoint | None = None
    """The last checkpoint of this unit in the run a resumed job resumes: the unit goes on
    from its commit, with its files counted as changed, instead of from ``start``."""
    baseline: Baseline | None = None
    """The job's baseline: the unit flags calls outside it."""
    carry: UnitCarry | None = None
    """Set when an earlier run of this unit continued as new: where it stood."""

    @property
    def ref(self) -> ShardRef:
        """The unit's branch (``<scratch>/shards/unit-<name>-<attempt>``) and worktree."""
        return ShardRef(job=self.job, name=f"unit-{self.unit.name}-{self.attempt}")


class ToolRequest(Value):
    """One tool call of a unit, run by the ``agent tool`` step."""

    unit: ShardRef
    checkpoint: str
    """The unit's head before the call (the workflow's record of it)."""
    start: str | None = None
    """The commit the unit started from (``UnitInput.start``; None: the job's base): before
    the unit's first edit its branch does not exist, and ``run_check`` checks the files
    changed since."""
    call: ToolCall
    key: str
    """Unique per call in the job (unit, attempt, call number): in the trailer of the commit
    an edit makes, so a retry of the step finds the commit it already pushed."""
    scope: tuple[str, ...]
    files: tuple[str, ...] = ("**/*",)
    test_cmd: str | None = None
    check_cmd: str | None = None
    verify_rules: str = AgentLimits().verify_rules
    timeout_s: float = 300.0
    sandbox: Sandbox = Sandbox()
    output_chars: int = 6000
    read_lines: int = 400


class ToolOutcome(Value):
    ok: bool
    """The call did what it asked (an edit applied, a check or the tests passed)."""
    output: str
    """What the model is told, capped."""
    head: str
    """The unit's head after the call: a new checkpoint commit after an edit."""
    changed: tuple[str, ...] = ()
    """Files this call changed."""
    check: Literal["passed", "failed"] | None = None
    """For ``run_check`` and ``run_tests``."""
    state: str = ""
    """The worktree's tree id after the call: equal states mean no progress."""
    summary: str = ""
    """One line for the UI: ``read src/a.py:1-80``, ``edit src/a.py``, ``tests: 3 failed``."""
    elapsed_ms: int = 0
    """How long the tool took in the step (its last attempt), for the baseline."""


class UnitResult(Value):
    """What a unit hands back (MapReduce): a condensed summary, never file contents."""

    name: str
    head: str
    start: str
    files_changed: tuple[str, ...]
    summary: str
    turns: int
    tool_calls: int
    usage: Usage = Usage()
    cost_usd: float | None = 0.0
    checks_passed: bool = False
    """A check or test run passed after the unit's last edit."""
    kept_from: str | None = None
    """The job whose run made this result, when a resumed job kept it (no model call)."""
    tools: tuple[ToolStats, ...] = ()
    """Its tool calls per (tool, command): counts and durations (``core.baseline``)."""
    flags: tuple[ToolFlag, ...] = ()
    """Calls outside the job's baseline, the first ``MAX_FLAGS``."""
    flagged: int = 0
    """Every call flagged."""


class UnitCheckpoint(Value):
    """How far a unit that did not finish got: its last checkpoint commit (the write-ahead
    log's head) and the files its edits changed since ``start``."""

    name: str
    start: str
    head: str
    changed: tuple[str, ...]
    stopped: str = ""
    """Why it stopped, for its next run's first message."""


class Resumed(Value):
    """What a resumed run takes over from the failed or cancelled run it resumes (read from
    that run's history by ``agentparallels.resume_agent``)."""

    previous: str
    """The job id of the run resumed."""
    base_commit: str = ""
    plan: AgentPlan | None = None
    """The earlier run's plan, kept; None: it never made a valid one, so plan again."""
    kept: tuple[UnitResult, ...] = ()
    """Finished units: not run again if their heads are still in reach."""
    checkpoints: tuple[UnitCheckpoint, ...] = ()
    """Unfinished units that committed edits: they go on from their last checkpoint."""
    redo: tuple[str, ...] = ()
    """Units ``--from-unit`` asked to redo (the unit and what depends on it)."""


class UnitMergeInput(Value):
    """Merge the units' heads, in this order, onto ``base``; the result kept at
    ``<scratch>/<ref>``."""

    job: JobRef
    base: str
    heads: tuple[str, ...]
    names: tuple[str, ...]
    """The unit of each head, to name the one that conflicts."""
    ref: str


class UnitMerge(Value):
    commit: str
    """The heads merged so far: all of them, or those before the one that conflicts; in the
    job's repository either way (a unit run again on top of it may be on another worker)."""
    conflict: str | None = None
    """The unit whose head does not merge on ``commit``."""
    files: tuple[str, ...] = ()
    """The files in conflict."""
    changed: tuple[str, ...] = ()
    """The files ``commit`` changes from the base: what the job changed, net (an edit undone
    later is not among them)."""


class AgentResult(Value):
    job_id: str
    outcome: Literal["succeeded", "no_changes"]
    branch: str | None
    base_commit: str
    head: str
    files_changed: tuple[str, ...]
    plan: AgentPlan
    units: tuple[UnitResult, ...]
    checks: tuple[CheckRun, ...] = ()
    usage: Usage = Usage()
    cost_usd: float | None = 0.0
    published: Published | None = None
    resumed_from: str | None = None
    """The job this one resumed (``agentparallels resume``)."""
    reviews: tuple[ReviewRound, ...] = ()
    """Every round of the review committee's votes, in order."""
    approvals: tuple[ApprovalRecord, ...] = ()
    """Every decision a person took at an approval gate, in order."""
    tool_stats: tuple[ToolStats, ...] = ()
    """Every unit's tool calls per (tool, command): the next job's baseline reads these."""
    flags: tuple[ToolFlag, ...] = ()
    flagged: int = 0
    baseline_jobs: int = 0
    """Past jobs the baseline came from (0: none)."""


def _tool(name: str, description: str, required: Sequence[str], **props: str) -> ToolSpec:
    kinds = {"int": "integer", "str": "string"}
    return ToolSpec(
        name=name,
        description=description,
        parameters={
            "type": "object",
            "properties": {k: {"type": kinds[v]} for k, v in props.items()},
            "required": list(required),
        },
    )


TOOLS: tuple[ToolSpec, ...] = (
    _tool("list_files", "List the repository's files under a directory (default: all).", (),
          directory="str"),
    _tool("read_file", "Read lines of a file (1-based, inclusive; default the first 400).",
          ("path",), path="str", start="int", end="int"),
    _tool("search", "Search the repository's files for a regular expression (git grep).",
          ("pattern",), pattern="str", path="str"),
    _tool("edit_file", "Replace the one occurrence of `old` in a file with `new` (copy `old` "
          "exactly, with enough lines to be unique).", ("path", "old", "new"),
          path="str", old="str", new="str"),
    _tool("write_file", "Create a new file with the given content (only files in your scope).",
          ("path", "content"), path="str", content="str"),
    _tool("run_check", "Lint the files you changed (ruff and the project's check command).", ()),
    _tool("run_tests", "Run the project's tests; returns the exit code and the output's tail.", ()),
    _tool("finish", "Say you are done, with a short summary of what you changed and why.",
          ("summary",), summary="str"),
)  # fmt: skip
"""The unit's tools; each but ``finish`` is one ``agent tool`` step."""


def unit_marker(name: str) -> str:
    """Text in the first message of unit ``name`` (every attempt of it), and nowhere else."""
    return f"You are unit `{name}` of a coding job"


def in_files(path: str, globs: Collection[str]) -> bool:
    """``path`` matches one of ``globs``; ``**/`` also matches no directory at all, wherever it
    stands, as in git (``tests/**/*.py`` matches ``tests/test_a.py``)."""
    return any(
        fnmatch.fnmatch(path, g) or ("**/" in g and fnmatch.fnmatch(path, g.replace("**/", "")))
        for g in globs
    )


def path_error(path: str) -> str | None:
    """Why ``path`` is not a clean repository-relative path, or None."""
    if not path or path.startswith("/") or "\\" in path:
        return f"{path!r} is not a relative path"
    if posixpath.normpath(path) != path or path.split("/")[0] == "..":
        return f"{path!r} must be a normalised path inside the repository"
    if any(part.lower() in (".git", "git~1") for part in path.split("/")):
        return f"{path!r} is inside a .git folder, which no unit may touch"
    return None


def plan_errors(
    plan: AgentPlan, files: Collection[str], globs: Collection[str], max_units: int
) -> list[str]:
    """Everything wrong with ``plan``, each saying how to fix it: at least one and at most
    ``max_units`` units, unique valid names, known dependencies without cycles, known
    capabilities, scopes inside the repository and ``globs`` (new files allowed), and scopes
    disjoint unless one unit depends (transitively) on the other."""
    errors: list[str] = []
    units = {u.name: u for u in plan.units}
    if not plan.units:
        errors.append("the plan has no units; give at least one")
    if len(plan.units) > max_units:
        errors.append(f"the plan has {len(plan.units)} units, at most {max_units} are allowed")
    if len(units) < len(plan.units):
        errors.append("unit names must be unique")
    for u in plan.units:
        errors += _unit_errors(u, units, files, globs)
    errors += _cycle_errors(units)
    if not errors:
        errors += _overlap_errors(plan.units, units)
    return errors


def _unit_errors(
    u: UnitPlan, units: dict[str, UnitPlan], files: Collection[str], globs: Collection[str]
) -> list[str]:
    errors = []
    if not UNIT_NAME.match(u.name):
        errors.append(f"unit name {u.name!r}: use lower-case letters, digits and dashes")
    elif u.name == REPAIR_UNIT:
        errors.append(f"unit name {u.name!r} is reserved for the job's own repair unit")
    if u.capability not in CAPABILITIES:
        errors.append(
            f"unit {u.name}: capability {u.capability!r} is not one of {', '.join(CAPABILITIES)}"
        )
    if not u.scope:
        errors.append(f"unit {u.name}: its scope is empty; name the files it may write")
    for path in u.scope:
        if problem := path_error(path):
            errors.append(f"unit {u.name}: {problem}")
        elif path not in files and not in_files(path, globs):
            errors.append(
                f"unit {u.name}: {path} is outside the files the job may change "
                f"({', '.join(globs)})"
            )
    for dep in u.depends_on:
        if dep not in units or dep == u.name:
            errors.append(f"unit {u.name} depends on {dep!r}, which is not another unit")
    return errors


def ancestors(name: str, units: dict[str, UnitPlan]) -> set[str]:
    """Every unit ``name`` depends on, directly or not."""
    seen: set[str] = set()
    todo = list(units[name].depends_on) if name in units else []
    while todo:
        dep = todo.pop()
        if dep in units and dep not in seen:
            seen.add(dep)
            todo += units[dep].depends_on
    return seen


def _cycle_errors(units: dict[str, UnitPlan]) -> list[str]:
    return [
        f"unit {n} depends on itself through {', '.join(sorted(ancestors(n, units) - {n}))}"
        for n in units
        if n in ancestors(n, units)
    ]


def _overlap_errors(plan: Sequence[UnitPlan], units: dict[str, UnitPlan]) -> list[str]:
    errors = []
    for i, a in enumerate(plan):
        for b in plan[i + 1 :]:
            shared = sorted(set(a.scope) & set(b.scope))
            ordered = a.name in ancestors(b.name, units) or b.name in ancestors(a.name, units)
            if shared and not ordered:
                errors.append(
                    f"units {a.name} and {b.name} may both write {', '.join(shared)}; "
                    "make one depend on the other or split the files"
                )
    return errors


def dependants(names: Collection[str], plan: AgentPlan) -> set[str]:
    """``names`` and every unit that depends on one of them, directly or not."""
    units = {u.name: u for u in plan.units}
    return {u.name for u in plan.units if u.name in names or ancestors(u.name, units) & set(names)}


def topological(plan: AgentPlan) -> list[UnitPlan]:
    """The plan's units, each after the units it depends on (ties in plan order)."""
    done: list[UnitPlan] = []
    names: set[str] = set()
    pending = list(plan.units)
    while pending:
        ready = next(u for u in pending if set(u.depends_on) <= names)
        pending.remove(ready)
        done.append(ready)
        names.add(ready.name)
    return done


AgentInput.model_rebuild()  # their resume fields name models defined after them
UnitInput.model_rebuild()

__all__ = [
    "CAPABILITIES",
    "PLANNER_MARKER",
    "REPAIR_UNIT",
    "TOOLS",
    "AgentInput",
    "AgentLimits",
    "AgentPlan",
    "AgentResult",
    "RepoMap",
    "RepoMapInput",
    "Resumed",
    "ToolOutcome",
    "ToolRequest",
    "UnitCheckpoint",
    "UnitInput",
    "UnitMerge",
    "UnitMergeInput",
    "UnitPlan",
    "UnitResult",
    "ancestors",
    "dependants",
    "in_files",
    "path_error",
    "plan_errors",
    "topological",
    "unit_marker",
]
