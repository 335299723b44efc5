"""Inputs and results of the refactor job, sent through Temporal's pydantic data converter.

Everything here is a value: frozen, and small. File contents never travel in these models; they
carry paths and git object names, and activities read the files when they need them.
"""

from __future__ import annotations

import hashlib
import keyword
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from agentparallels.core import redact
from agentparallels.core._value import Sandbox, Value
from agentparallels.core.checklist import ApprovalOptions, Checklist
from agentparallels.core.events import Hook, JobEvent
from agentparallels.core.llm import KEY_VARIABLES, BudgetLimits, Price, Usage, split_model

SCRATCH_NAMESPACE = "refs/agentparallels"
"""Scratch refs of running jobs live below this in the job's repository, removed at its end."""
BRANCH_PREFIX = "agentparallels"
"""A successful job leaves its result on the branch ``agentparallels/<job-id>``."""

WORKFLOW_TASK_TIMEOUT = timedelta(seconds=3)
"""How long a workflow task may run on a worker before the server gives it to another, for
every job and child workflow. A worker killed while holding one, or stopped (a stopped
process keeps its polls open, and the server goes on handing it tasks), stalls the job this
long each time: with the SDK's default (10 s) the main cause of slow recoveries in `make
chaos`, and at 5 s a task given twice to a paused worker stalled its job 10 s. A workflow task
here takes milliseconds (under a second on a starved machine, a cold replay included, since a
run imports only its own modules); one that times out is retried, and from the fourth
attempt the server adds 5 s, doubled at each attempt after, so a slow but live worker still
gets through."""


HIDDEN_INPUTS = ConfigDict(hide_input_in_errors=True)
"""For values that hold an edit spec: its model endpoint may carry a secret, which an error
about it must not repeat (pydantic otherwise quotes the input)."""


class BaseEdit(Value):
    """What every kind of edit knows about itself: how it is checked (pydantic validators, run
    wherever a spec is made or decoded: the CLI, a client of the library, a workflow's input)
    and how it is described. The activities pick their editor by ``kind``."""

    model_config = HIDDEN_INPUTS

    flag: ClassVar[str]
    """The command-line option that asks for this kind of edit."""

    def summary(self) -> str:
        """What the job does, in one line: the CLI's and the Temporal UI's summary."""
        raise NotImplementedError

    def label(self) -> str:
        """What one step does, briefly: the start of its commit messages."""
        raise NotImplementedError

    def as_model(self) -> ModelEdit | None:
        """This edit, if a model makes it (one file per step, after a recorded model call)."""
        return None

    def key_variable(self) -> str | None:
        """The environment variable of the key the worker making its model calls needs."""
        return None


class RenameEdit(BaseEdit):
    """Semantic rename with rope."""

    kind: Literal["rename"] = "rename"
    old: str
    """Dotted path of what to rename: ``pkg.mod.func``, ``pkg.mod.Class.method``, ``pkg.mod``..."""
    new: str
    """The new bare identifier."""

    flag: ClassVar[str] = "--rename"

    @field_validator("old")
    @classmethod
    def _dotted(cls, old: str) -> str:
        if not old.strip():
            raise ValueError("a rename needs the dotted path of what to rename, e.g. pkg.mod.func")
        return old

    @field_validator("new")
    @classmethod
    def _bare(cls, new: str) -> str:
        if "." in new:
            raise ValueError(
                f"the new name '{new}' must be a bare identifier; the symbol stays where it is"
            )
        if not new.isidentifier() or keyword.iskeyword(new):
            raise ValueError(
                f"'{new}' is not a valid Python identifier: the new name must be a bare name "
                "such as new_name (letters, digits and _, not starting with a digit, not a "
                "keyword)"
            )
        return new

    def summary(self) -> str:
        return f"rename {self.old} -> {self.new}"

    def label(self) -> str:
        return self.summary()


class CommandEdit(BaseEdit):
    """Any per-file codemod command; ``{file}`` is replaced by the file's path in the worktree."""

    kind: Literal["command"] = "command"
    command: str
    files: tuple[str, ...] = ("**/*.py",)
    """Glob patterns (git pathspec ``:(glob)``) choosing the tracked files to run it on."""

    flag: ClassVar[str] = "--edit-cmd"

    @field_validator("command")
    @classmethod
    def _per_file(cls, command: str) -> str:
        if "{file}" not in command:
            raise ValueError(
                "an edit command must contain {file}, which is replaced by each file's path, "
                "e.g. 'ruff check --fix --select UP {file}'"
            )
        return command

    def summary(self) -> str:
        return f"run `{self.command}` on each file"

    def label(self) -> str:
        return f"run `{self.command}`"


class ModelEdit(BaseEdit):
    """A language model edits each file as instructed."""

    kind: Literal["model"] = "model"
    instruct: str
    files: tuple[str, ...] = ("**/*.py",)
    """Glob patterns (git pathspec ``:(glob)``) choosing the tracked files to edit."""
    model: str
    """``provider:model``, e.g. ``openai:gpt-4.1``."""
    base_url: str | None = None
    related_tokens: int = Field(2000, ge=0)
    """Tokens of sibling files given to the model as read-only context."""
    max_tokens: int = Field(8192, ge=1)
    """Longest answer, in tokens."""

    flag: ClassVar[str] = "--instruct"

    @field_validator("instruct")
    @classmethod
    def _said(cls, instruct: str) -> str:
        if not instruct.strip():
            raise ValueError("the instruction is empty: say what the model should change")
        return instruct

    @field_validator("model")
    @classmethod
    def _provider(cls, model: str) -> str:
        split_model(model)  # its ValueError names the fix
        return model

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        if url and (why := redact.endpoint_refusal(url)):
            raise ValueError(why)
        return url

    def summary(self) -> str:
        return f"{self.model} edits each file: {self.instruct[:80]}"

    def label(self) -> str:
        return f"{self.model}: {self.instruct.splitlines()[0][:60]}"

    def as_model(self) -> ModelEdit:
        return self

    def key_variable(self) -> str | None:
        """None with ``base_url``: an endpoint of one's own may need no key of a provider."""
        return None if self.base_url else KEY_VARIABLES[split_model(self.model)[0]]


EditSpec = Annotated[RenameEdit | CommandEdit | ModelEdit, Field(discriminator="kind")]
"""How a job changes files: one of the kinds above, told apart by ``kind`` (every recorded
input carries it; a spec made in Python gets it by default)."""


class Limits(Value):
    """Bounds of one job."""

    parallel: int = Field(4, ge=1, le=64)
    """Most shards (child workflows) running at once."""
    max_files_per_shard: int | None = Field(None, ge=1)
    """Most files in a shard: small modules are packed together up to this, a larger module
    is split. None (the default): the job's files spread over ``parallel`` shards, at least
    ``sharding.MIN_SHARD_FILES`` each, so a small job is one shard and a large one has one
    per parallel slot: every shard fills a worktree of the whole repository, so their number
    must not grow with the repository (``sharding.files_per_shard``)."""
    shard_tokens: int | None = Field(None, ge=1)
    """Most tokens (counted at plan time) in a shard, so each sub-agent's files fit its
    window: modules are packed whole while they fit, a larger one is split by files, and a
    single file over it fails the plan (None: no token limit)."""
    batch_files: int | None = Field(None, ge=1)
    """Files one edit step handles: each file still gets its own verification and commit, but
    a batch's commits are pushed together, so a crashed worker redoes at most one batch. None
    (the default): 50, or 500 for an edit the plan computed (a rename, whose files are copied
    from its change set and cheap to redo; ``workflows.shard.PRECOMPUTED_BATCH_FILES``)."""
    breaker_threshold: int = Field(3, ge=1)
    """Consecutive failed verifications of edits that open a shard's circuit breaker."""
    command_timeout_s: float = Field(300.0, gt=0)
    """Wall-clock limit, in seconds, of each edit, check or test command."""
    verify_rules: str = "E9,F63,F7,F82"
    """The ruff rules every edited file must pass: syntax errors and undefined names by default."""
    sandbox: Sandbox = Sandbox()
    """Where edit, check and test commands and hooks run: ``bwrap`` (deny by default: only the
    worktree, the system and the commands' own tools visible; no network, no secrets, resource
    limits), plus the paths and variables ``--sandbox-ro/-rw/-env`` add; or ``none``."""


class RefactorInput(Value):
    """What the user asked for."""

    model_config = HIDDEN_INPUTS

    repository: str
    """Absolute path of a local git repository, or a git URL."""
    base_ref: str = "HEAD"
    edit: EditSpec
    check_cmd: str | None = None
    """Run after every file edit, in the shard's worktree; ``{file}`` is replaced by the path."""
    test_cmd: str | None = None
    """Run once on the merged result before the job succeeds."""
    apply: bool = False
    """Fast-forward the repository's current branch to the result (local repositories only)."""
    limits: Limits = Limits()
    budget: BudgetLimits = BudgetLimits()
    """Token budgets of the job's model calls (model edits only)."""
    prices: dict[str, Price] = {}
    """Prices of the models used, for the estimated cost."""
    reuse: dict[str, ShardResult] = {}
    """Shards (by name) an earlier run of this job finished, as ``agentparallels resume``
    found them in its history: each is taken as done if its commits are still in reach and
    fit this run's plan, and is run again otherwise."""
    checklist: Checklist = Checklist()
    """The checks that vote on the merged result before it is published."""
    approval: ApprovalOptions | None = None
    """When set, a person must approve the prepared result before it is published."""
    hooks: tuple[Hook, ...] = ()
    """User commands run before and after steps, each with a veto (``--hook``)."""
    subscribers: tuple[str, ...] = ()
    """Workflow ids that get the job's events as the ``job_events`` signal."""


class JobRef(Value):
    """Where a job's git state lives; every git activity gets one."""

    job_id: str
    repository: str
    base_commit: str
    timestamp: int
    """Author and committer date (Unix seconds) of every commit the job makes, so that the same
    edit on the same parent always yields the same commit: retries cannot duplicate work."""

    @property
    def scratch(self) -> str:
        return f"{SCRATCH_NAMESPACE}/{self.job_id}"

    @property
    def branch(self) -> str:
        return f"{BRANCH_PREFIX}/{self.job_id}"


class PlanInput(Value):
    model_config = HIDDEN_INPUTS

    job_id: str
    repository: str
    base_ref: str
    edit: EditSpec
    timestamp: int
    format_change: bool = False
    """For an edit computed here (a rename): format the whole change set once with the
    repository's ruff settings, as the plain tool does, so that no shard formats it again."""
    count_tokens: bool = True
    """Give each file's size in tokens (``Plan.tokens``): for a model's edit (its budget) or
    shards packed by tokens (``Limits.shard_tokens``); other jobs skip reading every file."""
    verify_rules: str | None = None
    """For an edit computed here: ruff's verify rules (``Limits.verify_rules``) to check the
    whole change set against once, after formatting. A change set that passes says so in its
    commit (``Agentparallels-Verified: <rules>``), and a shard that would check each of its
    files against the same rules alone copies them as they are, without a worktree."""
    sandbox: Sandbox = Sandbox()
    """Where the formatting and verify rules run (the job's sandbox)."""
    timeout_s: float = Limits().command_timeout_s


class Plan(Value):
    """The orchestrator's decision: which files change, and where the precomputed change set is."""

    base_commit: str
    files: tuple[str, ...]
    tokens: tuple[int, ...] = ()
    """Each file's size in tokens, in the order of ``files``."""
    change_commit: str | None = None
    """For editors that compute all changes at once (rename): the commit holding them, kept
    reachable under the job's scratch refs. Children copy their files from it."""
    ruff_format: bool = False
    """The repository uses ruff: re-sort imports and format each changed file."""
    respelled: tuple[str, ...] = ()
    """A rename's files that spell the name otherwise (NFKC, e.g. a ligature): renamed by the
    token-level fallback (``activities/rename_engine.py``), not by rope alone."""
    unparsed: tuple[str, ...] = ()
    """A rename's files that mention the name but do not parse: left unchanged."""


class Shard(Value):
    name: str
    modules: tuple[str, ...]
    """The modules (directories) whose files it holds, in order."""
    files: tuple[str, ...]
    tokens: int = 0
    """The files' size in tokens, as counted by the plan."""

    @property
    def label(self) -> str:
        extra = f" (+{len(self.modules) - 1} more)" if len(self.modules) > 1 else ""
        return f"{self.modules[0]}{extra}"


class ShardInput(Value):
    model_config = HIDDEN_INPUTS

    budget: BudgetLimits = BudgetLimits()
    """This shard's share of the job's token budgets (the job's own when ``ledger``)."""
    prices: dict[str, Price] = {}
    job: JobRef
    parent_id: str
    shard: Shard
    edit: EditSpec
    change_commit: str | None = None
    ruff_format: bool = False
    check_cmd: str | None = None
    limits: Limits = Limits()
    hooks: tuple[Hook, ...] = ()
    ledger: bool = False
    """Model calls reserve their tokens from the job's ledger in the parent (workflows.ledger)
    instead of checking a fixed share."""
    file_tokens: dict[str, int] = {}
    """Each file's size in tokens as the plan counted it, for model calls' estimates."""


class ShardRef(Value):
    job: JobRef
    name: str

    @property
    def ref(self) -> str:
        return f"{self.job.scratch}/shards/{self.name}"


TIME_BOX_CHUNK = 25
"""Commands a time-boxed edit step (``EditBatchInput.time_box_s``) runs in one sandbox before
it looks at the clock."""


class EditBatchInput(Value):
    model_config = HIDDEN_INPUTS

    shard: ShardRef
    paths: tuple[str, ...]
    """Files to edit, in order. Editing stops at the first file that fails."""
    checkpoint: str
    """The commit the shard's branch must be at before this step."""
    edit: EditSpec
    change_commit: str | None = None
    ruff_format: bool = False
    check_cmd: str | None = None
    verify_rules: str = Limits().verify_rules
    timeout_s: float = Limits().command_timeout_s
    sandbox: Sandbox = Sandbox()
    scope: tuple[str, ...] = ()
    """Every path the step may change (the bulkhead): the shard's files. Empty: ``paths``."""
    answer: str | None = None
    """For a model edit (one file): the model's answer, a whole file or a unified diff."""
    time_box_s: float | None = None
    """For a command edit: run the commands :data:`TIME_BOX_CHUNK` at a time and start no more
    once this many seconds have passed; commit and report the files edited by then (the first
    of ``paths``), and the shard's next step takes the rest. A command that changes another
    file of ``paths`` than its own is refused when that file is not among those the step got
    to (as a change outside its batch was without a time box). None: every file of
    ``paths``."""
    sparse: bool = False
    """The shard's worktree may hold its files only (a sparse checkout), not the whole tree:
    for an edit the plan computed and formatted, with no check command or hook that could read
    other files. Honoured only for such an edit (see ``activities.refactor.edit_files``)."""


class EditOutcome(Value):
    path: str
    status: Literal["committed", "unchanged", "failed"]
    commit: str
    """The file's own commit when committed; otherwise the checkpoint it was tried on."""
    command: str | None = None
    """For a failure: the command that failed."""
    output: str = ""
    """For a failure: the tail of its output."""


class EditBatchResult(Value):
    outcomes: tuple[EditOutcome, ...]
    """One per file handled, in order; a failure, if any, is the last."""
    tip: str
    """The shard's branch after this step: the checkpoint of the next."""


class RefUpdate(Value):
    job: JobRef
    ref: str
    target: str | None
    """Commit to set the ref to; None deletes it."""


def files_digest(files: tuple[str, ...] | list[str]) -> str:
    """A short digest of a shard's file list, in order: a later run of the job takes a shard's
    result over only if it was made for exactly the same files."""
    return hashlib.sha256("\0".join(files).encode()).hexdigest()[:32]


class ShardResult(Value):
    name: str
    head: str
    files_changed: tuple[str, ...]
    attempts: int
    files_digest: str = ""
    """``files_digest`` of every file the shard was given (changed or not); empty in results
    of runs from before it was recorded."""
    usage: Usage = Usage()
    phase_tokens: dict[str, int] = {}
    """Tokens its model calls used, per budget phase."""
    cost_usd: float | None = 0.0


class MergeInput(Value):
    job: JobRef
    shard_heads: tuple[str, ...]


class CheckInput(Value):
    job: JobRef
    commit: str
    command: str
    timeout_s: float
    sandbox: Sandbox = Sandbox()


class CheckRun(Value):
    command: str
    exit_code: int
    passed: bool
    output: str = ""


class PublishInput(Value):
    job: JobRef
    commit: str
    apply: bool = False
    clean_up: bool = False
    """Then delete the job's scratch refs and this worker's worktrees of it, as ``git.cleanup``
    does: the job's last step, folded into this one."""


class Published(Value):
    branch: str
    applied: bool
    apply_note: str = ""
    cleaned: bool = False
    """The step also cleaned up (``PublishInput.clean_up``); if not, the job's own cleanup
    step does it."""


class ModuleSummary(Value):
    module: str
    shards: tuple[str, ...]
    files_changed: tuple[str, ...]


class ShardProgress(Value):
    name: str
    label: str
    """The shard's modules, for display."""
    state: Literal["pending", "running", "done", "failed", "cancelled"] = "pending"
    files_total: int
    files_done: int = 0
    breaker: Literal["closed", "open", "half-open"] = "closed"
    failures: int = 0
    """Consecutive failed verifications so far."""
    tokens: int = 0
    """Tokens its model calls used so far."""
    events: tuple[JobEvent, ...] = ()
    """Events since the shard's previous report, for the parent to publish."""
    phase_tokens: dict[str, int] = {}
    """The same, per budget phase."""


class PhaseBudget(Value):
    """One phase of the job's token budget, as the progress query shows it."""

    phase: str
    spent: int
    allowance: int | None
    """What the phase may spend in all under the budget rule (its share plus the earlier
    phases' unspent tokens); None when the job has no token budget."""
    reserved: int = 0
    """Held by model calls under way; what they do not use returns to the pool."""
    remaining: int | None = None
    """The largest call the ledger would grant in this phase now (the enforced figure)."""


class Progress(Value):
    job_id: str
    phase: str
    files_total: int = 0
    files_done: int = 0
    shards: tuple[ShardProgress, ...] = ()
    tokens: int = 0
    """Tokens of the job's model calls so far."""
    budget: tuple[PhaseBudget, ...] = ()
    """Tokens per phase (plan, execute, verify) against what each may spend."""
    reserved: int = 0
    """Tokens held by model calls under way."""
    remaining: int | None = None
    """Tokens of the job's budget neither spent nor reserved; None: no job-wide budget."""
    cost_usd: float | None = None
    """Dollars the job's model calls have cost so far (``--price``); None: not priced."""
    message: str = ""
    """Why the job waits, when it does (for budget, for the model provider)."""


class RefactorResult(Value):
    job_id: str
    outcome: Literal["succeeded", "unchanged"]
    branch: str | None
    base_commit: str
    head_commit: str
    files_changed: tuple[str, ...]
    modules: tuple[ModuleSummary, ...]
    checks: tuple[CheckRun, ...]
    applied: bool = False
    apply_note: str = ""
    usage: Usage = Usage()
    """Tokens of the job's model calls."""
    cost_usd: float | None = None
    """Estimated cost of those calls, when every model used has a price."""
    reused_shards: tuple[str, ...] = ()
    """Shards taken over from an earlier run of the job (its progress log, or ``reuse``)
    instead of being run again."""
    respelled: tuple[str, ...] = ()
    """Files renamed by the token-level fallback (see :attr:`Plan.respelled`)."""
    unparsed: tuple[str, ...] = ()
    """Files that mention the renamed name but do not parse: not renamed (fix and rerun)."""


__all__ = [
    "BRANCH_PREFIX",
    "BaseEdit",
    "CheckInput",
    "CheckRun",
    "CommandEdit",
    "EditBatchInput",
    "EditBatchResult",
    "EditOutcome",
    "EditSpec",
    "HIDDEN_INPUTS",
    "JobRef",
    "Limits",
    "MergeInput",
    "ModelEdit",
    "ModuleSummary",
    "PhaseBudget",
    "Plan",
    "PlanInput",
    "Progress",
    "PublishInput",
    "Published",
    "RefUpdate",
    "RefactorInput",
    "RefactorResult",
    "RenameEdit",
    "SCRATCH_NAMESPACE",
    "Shard",
    "ShardInput",
    "ShardProgress",
    "ShardRef",
    "ShardResult",
    "TIME_BOX_CHUNK",
    "WORKFLOW_TASK_TIMEOUT",
    "files_digest",
]
