"""The refactor job's agent steps: planning the change, and editing one file."""

from __future__ import annotations

from datetime import timedelta

import git
from temporalio.exceptions import ApplicationError

from activities import _git
from activities._defn import defn
from activities._workspace import scratch_worktree, worktree
from activities.checks import format_file, uses_ruff, verify
from activities.editors import EditFailed, PlanRejected, editor_for
from agentparallels.errors import BAD_INPUT, GIT_CONFLICT
from agentparallels.models import (
    SCRATCH_NAMESPACE,
    CommandEdit,
    EditInput,
    EditOutcome,
    EditSpec,
    Plan,
    PlanInput,
)


def bad_input(message: str) -> ApplicationError:
    return ApplicationError(message, type=BAD_INPUT, non_retryable=True)


def describe(edit: EditSpec) -> str:
    if isinstance(edit, CommandEdit):
        return f"run `{edit.command}`"
    return f"rename {edit.old} -> {edit.new}"


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


@defn("refactor.plan", start_to_close=timedelta(minutes=30))
def plan(inp: PlanInput) -> Plan:
    """List the files the edit changes. A rename is computed here, once, for the whole project,
    and kept as a commit under the job's scratch refs for the shards to copy from."""
    base = resolve_base(inp.repository, inp.base_ref)
    editor = editor_for(inp.edit)
    change_ref = f"{SCRATCH_NAMESPACE}/{inp.job_id}/change"
    cache = _git.cached_repo(inp.repository)
    _git.ensure_commit(cache, inp.repository, base)
    with scratch_worktree(inp.repository, inp.job_id, "plan", base) as wt:
        ruff_format = uses_ruff(wt)
        if not editor.precomputed:
            try:
                files = editor.plan(wt)
            except PlanRejected as e:
                raise bad_input(str(e)) from None
            return Plan(base_commit=base, files=tuple(files), ruff_format=ruff_format)
        change = _git.remote_ref(inp.repository, change_ref)
        if change is None:  # not computed by an earlier attempt
            try:
                editor.plan(wt)
            except PlanRejected as e:
                raise bad_input(str(e)) from None
            message = f"{describe(inp.edit)} (change set)\n\n{_git.JOB_TRAILER}: {inp.job_id}"
            change = _git.commit_all(wt, message, inp.timestamp)
            if change is None:
                return Plan(base_commit=base, files=(), ruff_format=ruff_format)
            _git.push(wt, inp.repository, [(change_ref, change, None)])
        _git.ensure_commit(cache, inp.repository, change)
        names = _git.run(cache, "diff", "--name-only", "--no-renames", "-z", base, change)
        files = sorted(p for p in names.split("\0") if p)
    return Plan(base_commit=base, files=tuple(files), change_commit=change, ruff_format=ruff_format)


@defn("refactor.edit_file", start_to_close=timedelta(minutes=30))
def edit_file(inp: EditInput) -> EditOutcome:
    """Edit one file on the shard's branch, verify it, and commit it as the next checkpoint.

    Idempotent: if an earlier attempt already committed this edit on top of ``inp.checkpoint``
    (its worker died before reporting), that commit is returned and nothing is redone.
    """
    job, ref, path = inp.shard.job, inp.shard.ref, inp.path
    tip = _git.remote_ref(job.repository, ref)
    if tip != inp.checkpoint:
        return _earlier_attempt(inp, tip)
    wt = worktree(job.repository, job.job_id, inp.shard.name, tip)
    try:
        editor_for(inp.edit).apply(wt, path, inp.change_commit, inp.timeout_s)
    except EditFailed as e:
        return EditOutcome(
            path=path, status="failed", commit=tip, command=e.command, output=e.output
        )
    changed = _git.changed_paths(wt)
    stray = [p for p in changed if p != path]
    if stray:
        return EditOutcome(
            path=path,
            status="failed",
            commit=tip,
            command=describe(inp.edit),
            output=f"changed files outside its target {path}: {', '.join(stray)}",
        )
    if not changed:
        return EditOutcome(path=path, status="unchanged", commit=tip)
    if inp.ruff_format:
        format_file(wt, path, inp.timeout_s)
    failure = verify(wt, path, inp.verify_rules, inp.check_cmd, inp.timeout_s)
    if failure:
        command, done = failure
        return EditOutcome(
            path=path, status="failed", commit=tip, command=command, output=done.output
        )
    message = (
        f"{describe(inp.edit)}: {path}\n\n"
        f"{_git.JOB_TRAILER}: {job.job_id}\n{_git.EDIT_TRAILER}: {path}"
    )
    sha = _git.commit_all(wt, message, job.timestamp)
    if sha is None:
        return EditOutcome(path=path, status="unchanged", commit=tip)
    _git.push(wt, job.repository, [(ref, sha, tip)])
    return EditOutcome(path=path, status="committed", commit=sha)


def _earlier_attempt(inp: EditInput, tip: str | None) -> EditOutcome:
    """The branch is not at the expected checkpoint: accept it only if it holds exactly this
    edit, committed by an earlier attempt of this same step."""
    job = inp.shard.job
    if tip is not None:
        cache = _git.cached_repo(job.repository)
        _git.ensure_commit(cache, job.repository, tip)
        message = _git.run(cache, "log", "-1", "--format=%B", tip)
        parent = _git.run(cache, "rev-parse", f"{tip}^")
        if parent == inp.checkpoint and _git.trailer(message, _git.EDIT_TRAILER) == inp.path:
            return EditOutcome(path=inp.path, status="committed", commit=tip)
    raise ApplicationError(
        f"{inp.shard.ref} is at {tip or 'nothing'}, expected {inp.checkpoint}: something else "
        "moved the job's branch; start the job again",
        type=GIT_CONFLICT,
        non_retryable=True,
    )
