"""The refactor job's agent steps: planning the change, and editing one file."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import git
from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git, bulkhead, sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._editors import EditFailed, PlanRejected, editor_for
from agentparallels.activities._workspace import (
    JOB_TREE,
    BranchMoved,
    ShardWorkspace,
    clean_at,
    scratch_worktree,
)
from agentparallels.activities.checks import format_files, uses_ruff, verify
from agentparallels.core import steps, tokens
from agentparallels.core.errors import BAD_INPUT, GIT_CONFLICT
from agentparallels.core.models import (
    SCRATCH_NAMESPACE,
    EditBatchInput,
    EditBatchResult,
    EditOutcome,
    Limits,
    Plan,
    PlanInput,
)


def bad_input(message: str) -> ApplicationError:
    return ApplicationError(message, type=BAD_INPUT, non_retryable=True)


def resolve_base(repository: str, base_ref: str) -> str:
    """The commit ``base_ref`` names in ``repository``; a BadInput error if it names none."""
    hint = (
        f"base ref '{base_ref}' not found in {repository}; pass an existing branch, tag or commit"
    )
    if _git.is_local(repository):
        try:
            return _git.run(
                repository, "rev-parse", "--verify", "--quiet", f"{base_ref}^{{commit}}"
            )
        except git.GitCommandError:
            raise bad_input(hint) from None
    listed = _git.ls_remote(repository, base_ref)
    for ref in (base_ref, f"refs/heads/{base_ref}", f"refs/tags/{base_ref}"):
        sha = listed.get(f"{ref}^{{}}") or listed.get(ref)  # an annotated tag's commit first
        if sha:
            return sha
    if len(base_ref) == 40 and all(c in "0123456789abcdef" for c in base_ref):
        return base_ref
    raise bad_input(hint)


def change_ref(job_id: str) -> str:
    """The scratch ref of a job's change set (a rename's, computed by its plan)."""
    return f"{SCRATCH_NAMESPACE}/{job_id}/change"


@implements(steps.PLAN)
def plan(inp: PlanInput) -> Plan:
    """List the files the edit changes. A rename is computed here, once, for the whole project,
    and kept as a commit under the job's scratch refs for the shards to copy from."""
    base = resolve_base(inp.repository, inp.base_ref)
    editor = editor_for(inp.edit)
    ref = change_ref(inp.job_id)
    cache = _git.cached_repo(inp.repository)
    # Kept for the test command, which runs in it if it runs on this worker. (Made from the
    # cache, which holds ``base`` once it is: a worktree at ``base`` is made from it.)
    with scratch_worktree(inp.repository, inp.job_id, JOB_TREE, base, keep=True) as wt:
        ruff_format = uses_ruff(wt)
        if not editor.precomputed:
            try:
                files = editor.plan(wt)
            except PlanRejected as e:
                raise bad_input(str(e)) from None
            return _plan(cache, base, None, files, ruff_format, inp.count_tokens)
        change = _git.remote_ref(inp.repository, ref)
        if change is None:  # not computed by an earlier attempt
            try:
                editor.plan(wt)
            except PlanRejected as e:
                raise bad_input(str(e)) from None
            found = getattr(editor, "report", None)
            notes = _notes(found.respelled, found.unparsed) if found else ""
            notes += _prepare_change_set(wt, inp, ruff_format)
            message = f"{inp.edit.label()} (change set)\n\n{_git.JOB_TRAILER}: {inp.job_id}{notes}"
            change = _git.commit_all(wt, message, inp.timestamp)
            if change is None:
                return Plan(
                    base_commit=base, files=(), ruff_format=ruff_format, **_read_notes(notes)
                )
            _git.push(wt, inp.repository, [(ref, change, None)])
            # Left clean at the change set (everything else is committed), and said to be:
            # the test command, next in it, then runs without a reset first.
            _git.discard(wt, reset=False)
            clean_at(wt)
        else:
            _git.ensure_commit(cache, inp.repository, change)
        names = _git.run(cache, "diff", "--name-only", "--no-renames", "-z", base, change)
        files = sorted(p for p in names.split("\0") if p)
        # Kept in the change commit, so a retry that finds it reports them too.
        message = _git.run(cache, "log", "-1", "--format=%B", change)
        formatted = _git.trailer(message, FORMATTED_TRAILER) is not None
    # A change set formatted here is not formatted again by the shards.
    plan = _plan(cache, base, change, files, ruff_format and not formatted, inp.count_tokens)
    return plan.model_copy(update=_read_notes(message))


def _prepare_change_set(wt: Path, inp: PlanInput, ruff_format: bool) -> str:
    """Format the change set in ``wt`` and check it against the verify rules, as the plain
    tool does: one ruff run each for the whole set instead of one per batch of every shard.
    Returns the trailer lines saying what was done."""
    if not (ruff_format and inp.format_change) and not inp.verify_rules:
        return ""
    sandbox.require(inp.sandbox.mode)
    policy = sandbox.Policy.of(inp.sandbox)
    changed, notes, findings = _git.changed_paths(wt), "", None
    if ruff_format and inp.format_change:
        # The verify rules' check in the same sandbox, after the formatting.
        findings = format_files(
            wt, changed, inp.timeout_s, policy, then_check=inp.verify_rules or None
        )
        notes += f"\n{FORMATTED_TRAILER}: ruff"
    # A file that fails is left for its shard to find and report, as it would without this;
    # so is a ruff that fails to run here (the check only saves the shards the work).
    if inp.verify_rules:
        if findings is None:  # not checked with the formatting
            passes = _passes(wt, changed, inp.verify_rules, inp.timeout_s, policy)
        else:
            passes = not findings
        if passes:
            notes += f"\n{VERIFIED_TRAILER}: {inp.verify_rules}"
    return notes


def _passes(
    wt: Path, paths: list[str], rules: str, timeout_s: float, policy: sandbox.Policy
) -> bool:
    try:
        return verify(wt, paths, rules, None, timeout_s, policy) is None
    except RuntimeError:  # ruff's output unreadable: the shards check their files themselves
        return False


RESPELLED_TRAILER = "Agentparallels-Respelled"
FORMATTED_TRAILER = "Agentparallels-Formatted"
"""On a change commit whose files the plan formatted (``PlanInput.format_change``)."""
VERIFIED_TRAILER = "Agentparallels-Verified"
"""On a change commit whose files all pass the verify rules it names
(``PlanInput.verify_rules``)."""
UNPARSED_TRAILER = "Agentparallels-Unparsed"


def _notes(respelled: list[str], unparsed: list[str]) -> str:
    """Trailer lines naming the files a rename handled specially (rename_engine.Renamed)."""
    lines = [f"{RESPELLED_TRAILER}: {p}" for p in respelled]
    lines += [f"{UNPARSED_TRAILER}: {p}" for p in unparsed]
    return "".join(f"\n{line}" for line in lines)


class _Notes(TypedDict):
    """The Plan fields a change commit's trailers carry."""

    respelled: tuple[str, ...]
    unparsed: tuple[str, ...]


def _read_notes(message: str) -> _Notes:
    """The Plan fields the trailers of a change commit's ``message`` name."""
    found: dict[str, list[str]] = {"respelled": [], "unparsed": []}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key == RESPELLED_TRAILER:
            found["respelled"].append(value)
        elif sep and key == UNPARSED_TRAILER:
            found["unparsed"].append(value)
    return _Notes(respelled=tuple(found["respelled"]), unparsed=tuple(found["unparsed"]))


def _plan(
    cache: Path,
    base: str,
    change: str | None,
    files: list[str],
    ruff_format: bool,
    count_tokens: bool,
) -> Plan:
    """The plan, with each file's size in tokens if asked (at the base; a file the change
    creates, as it creates it), so the workflow can pack shards that fit a window."""
    if not count_tokens:
        return Plan(
            base_commit=base, files=tuple(files), change_commit=change, ruff_format=ruff_format
        )
    texts = _git.read_blobs(cache, [f"{base}:{path}" for path in files])
    if change:
        created = _git.read_blobs(cache, [f"{change}:{path}" for path in files])
        texts = [t if t is not None else c for t, c in zip(texts, created, strict=True)]
    sizes = [tokens.count(t.decode("utf-8", "replace")) if t is not None else 0 for t in texts]
    return Plan(
        base_commit=base,
        files=tuple(files),
        tokens=tuple(sizes),
        change_commit=change,
        ruff_format=ruff_format,
    )


@implements(steps.EDIT_FILES)
def edit_files(inp: EditBatchInput) -> EditBatchResult:
    """Edit files on the shard's branch, in order: apply the edit, format, verify, and commit
    each file that passes as its own checkpoint commit, stopping at the first file that fails.
    The commits are pushed together at the end.

    Idempotent: if an earlier attempt already pushed its commits on top of ``inp.checkpoint``
    (its worker died before reporting), they are reported and nothing is redone. Attempts of
    one step on one worker take turns with the shard's workspace (see :class:`ShardWorkspace`),
    from the branch check to the push, so a retry started while a starved attempt still runs
    finds what that attempt pushed instead of resetting the worktree under it.
    """
    sandbox.require(inp.sandbox.mode)  # fail closed before anything is changed
    policy = sandbox.Policy.of(inp.sandbox)
    what = inp.edit.label()
    # Only the shard's files checked out, where nothing reads the others: the edit copies
    # them from the plan's change set, formatted there, and the default verify rules (syntax,
    # undefined names) read each file alone; other rules may look at the folders around it.
    reads_one_file = inp.verify_rules == Limits().verify_rules and not inp.check_cmd
    only = inp.sparse and editor_for(inp.edit).precomputed and reads_one_file
    if only and not inp.ruff_format and (blobs := _verified_blobs(inp)):
        return _copy_verified(inp, what, *blobs)
    sparse = (inp.scope or inp.paths) if only and not inp.ruff_format else None
    with ShardWorkspace.held(inp.shard, inp.checkpoint, sparse) as ws:
        if (earlier := _earlier(ws, inp)) is not None:
            return earlier
        applied, failure = _apply(ws.path, inp)
        changed = ws.changed()
        bulkhead.contain(ws.path, inp.paths, inp.scope, what, changed)
        edited = [p for p in applied if p in changed]
        if inp.ruff_format:
            format_files(ws.path, edited, inp.timeout_s, policy)
            # Formatting can turn an edit back into the file as it was: that file is unchanged
            # (committing it would make an empty edit commit, which is refused).
            changed = ws.changed()
        bad = verify(ws.path, edited, inp.verify_rules, inp.check_cmd, inp.timeout_s, policy)
        if bad:
            path, command, done = bad
            applied = applied[: applied.index(path)]
            failure = _failed(path, inp.checkpoint, command, done.output)
        to_commit = [p for p in applied if p in changed]
        commits = ws.commit(to_commit, what)
        tip = commits[-1] if commits else inp.checkpoint
        ws.finish(tip, partial=failure is not None or len(applied) < len(inp.paths))
    return _result(inp, applied, dict(zip(to_commit, commits, strict=True)), tip, failure)


Entries = dict[str, tuple[str, str]]
"""path -> (mode, object id) in a tree (``_git.tree_entries``)."""


def _verified_blobs(inp: EditBatchInput) -> tuple[Entries, Entries] | None:
    """The step's files at its checkpoint and in the change commit, if the plan checked that
    commit against the step's own verify rules, every file passing (``VERIFIED_TRAILER``),
    and none of them is a symbolic link, before or after (whose target the worktree's way
    checks stays inside); else None."""
    assert inp.change_commit
    repository = inp.shard.job.repository
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, inp.change_commit)
    message = _git.run(cache, "log", "-1", "--format=%B", inp.change_commit)
    if _git.trailer(message, VERIFIED_TRAILER) != inp.verify_rules:
        return None
    _git.ensure_commit(cache, repository, inp.checkpoint)
    before = _git.tree_entries(cache, inp.checkpoint, inp.paths)
    after = _git.tree_entries(cache, inp.change_commit, inp.paths)
    if any(mode == _git.SYMLINK_MODE for mode, _ in [*before.values(), *after.values()]):
        return None
    return before, after


def _copy_verified(
    inp: EditBatchInput, what: str, before: Entries, after: Entries
) -> EditBatchResult:
    """The step for files a verified change set holds, formatted and checked already: one
    checkpoint commit per file that differs from the checkpoint, written in the worker's cache
    from the change set's blobs (``after``) with no worktree, then pushed. Idempotent as the
    worktree's way is (see ``edit_files``)."""
    with ShardWorkspace.held_without_worktree(inp.shard, inp.checkpoint) as ws:
        if (earlier := _earlier(ws, inp)) is not None:
            return earlier
        to_commit = [p for p in inp.paths if before.get(p) != after.get(p)]
        commits = ws.commit(to_commit, what, entries=after)
        tip = commits[-1] if commits else inp.checkpoint
        ws.push(tip)
    return _result(inp, list(inp.paths), dict(zip(to_commit, commits, strict=True)), tip, None)


def _earlier(ws: ShardWorkspace, inp: EditBatchInput) -> EditBatchResult | None:
    """What an earlier attempt of the step pushed (see ``ShardWorkspace.pushed_before``), as
    this step's result; None if the branch is at the checkpoint."""
    try:
        earlier = ws.pushed_before(inp.paths)
    except BranchMoved as e:
        raise ApplicationError(str(e), type=GIT_CONFLICT, non_retryable=True) from None
    return None if earlier is None else _reported(earlier)


def _result(
    inp: EditBatchInput,
    applied: list[str],
    by_path: dict[str, str],
    tip: str,
    failure: EditOutcome | None,
) -> EditBatchResult:
    """The step's outcome for each file it got to (committed or unchanged), then its failure."""
    outcomes = [
        EditOutcome(path=p, status="committed", commit=by_path[p])
        if p in by_path
        else EditOutcome(path=p, status="unchanged", commit=inp.checkpoint)
        for p in applied
    ]
    return EditBatchResult(outcomes=(*outcomes, *([failure] if failure else [])), tip=tip)


def _apply(wt: Path, inp: EditBatchInput) -> tuple[list[str], EditOutcome | None]:
    """Apply the edit to the step's files, within its scope: the files it edited, in order,
    and the failure of the one it stopped at, if any."""
    bulkhead.check_paths(wt, inp.paths, inp.scope)
    try:
        applied = editor_for(inp.edit).apply(wt, inp)
    except EditFailed as e:
        failure = _failed(e.path, inp.checkpoint, e.command, e.output)
        return list(inp.paths[: inp.paths.index(e.path)]), failure
    return list(applied), None


def _failed(path: str, checkpoint: str, command: str, output: str) -> EditOutcome:
    return EditOutcome(
        path=path, status="failed", commit=checkpoint, command=command, output=output
    )


def _reported(earlier: list[tuple[str, str]]) -> EditBatchResult:
    """What an earlier attempt of the step pushed, reported as done; the step's tip is the
    last of its commits (the files after them are left for the next steps)."""
    outcomes = tuple(EditOutcome(path=p, status="committed", commit=sha) for p, sha in earlier)
    return EditBatchResult(outcomes=outcomes, tip=earlier[-1][1])


__all__ = [
    "FORMATTED_TRAILER",
    "RESPELLED_TRAILER",
    "UNPARSED_TRAILER",
    "VERIFIED_TRAILER",
    "bad_input",
    "change_ref",
    "edit_files",
    "plan",
    "resolve_base",
]
