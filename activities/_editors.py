"""Editors: the agent step that changes files, behind one interface.

An editor first *plans* on a worktree at the base commit (which files it will change) and then
*applies* its change to a shard's files, in order, in the shard's worktree. A rename is computed
once for the whole project at planning time and committed; applying it copies the files' new
state from the change commit. A command editor runs its command on each file, and refuses a
command that changes any file but its own (one outside the shard's files is a bulkhead
violation, see :mod:`activities.bulkhead`).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import git

from agentparallels.activities import _git, bulkhead, rename_engine, sandbox
from agentparallels.activities._proc import BatchFailure, BatchUnclear, run_command, run_commands
from agentparallels.core.models import (
    TIME_BOX_CHUNK,
    CommandEdit,
    EditBatchInput,
    EditSpec,
    ModelEdit,
    RenameEdit,
)


class EditFailed(Exception):
    """Editing ``path`` failed (the files before it were edited); counted by the shard's
    circuit breaker like a failed check."""

    def __init__(self, path: str, command: str, output: str) -> None:
        super().__init__(f"{path}: {command}: {output}")
        self.path = path
        self.command = command
        self.output = output


class PlanRejected(Exception):
    """The edit cannot be planned as asked (bad input): the message says how to fix it."""


class Editor(Protocol):
    precomputed: bool
    """True when :meth:`plan` leaves the whole change in the worktree, to be committed."""

    def plan(self, wt: Path) -> list[str]:
        """Paths (relative, posix) this edit will change, sorted."""
        ...

    def apply(self, wt: Path, step: EditBatchInput) -> Sequence[str]:
        """Change ``step.paths`` in ``wt``, in order; raises :class:`EditFailed` for the first
        that fails. Returns the paths it got to: all of them, or, for a step with a time box
        (``step.time_box_s``), the first ones, edited by the time it ran out."""
        ...


class RenameEditor:
    precomputed = True

    def __init__(self, spec: RenameEdit) -> None:
        self.spec = spec
        self.report = rename_engine.Renamed(paths=[])
        """What :meth:`plan` found: files renamed by the token-level fallback, files that
        mention the name but do not parse."""

    def plan(self, wt: Path) -> list[str]:
        try:
            self.report = rename_engine.rename_report(wt, self.spec.old, self.spec.new)
        except rename_engine.RenameError as e:
            raise PlanRejected(str(e)) from e
        return self.report.paths

    def apply(self, wt: Path, step: EditBatchInput) -> Sequence[str]:
        assert step.change_commit, "a rename is applied from its change commit"
        source = f"--source={step.change_commit}"
        _git.run(wt, "restore", source, "--staged", "--worktree", "--", *step.paths)
        return step.paths


class CommandEditor:
    precomputed = False

    def __init__(self, spec: CommandEdit) -> None:
        self.spec = spec

    def plan(self, wt: Path) -> list[str]:
        return tracked(wt, self.spec.files)

    def apply(self, wt: Path, step: EditBatchInput) -> Sequence[str]:
        paths, policy = step.paths, sandbox.Policy.of(step.sandbox)
        # Optimistically: every command in one sandbox, then one look at what changed. A
        # change outside the shard's files is a violation; only if something outside the files
        # edited changed, or a batch's shell stopped without saying where, are the commands run
        # again one by one, from a clean worktree, to find the culprit (codemods are meant to
        # be repeatable).
        ran, failure, unclear = self._batches(wt, step, policy)
        applied = paths[:ran]
        stray = unclear
        if not unclear:
            changed = _git.changed_paths(wt)
            bulkhead.contain(wt, paths, step.scope, f"`{self.spec.command}`", changed)
            stray = any(p not in set(applied) for p in changed)
        if stray:
            _git.discard(wt)
            self._run(wt, applied, step.timeout_s, policy, check_each=True)
        elif failure is not None:
            raise EditFailed(paths[failure.index], failure.command, failure.done.output)
        return applied

    def _batches(
        self, wt: Path, step: EditBatchInput, policy: sandbox.Policy
    ) -> tuple[int, BatchFailure | None, bool]:
        """Run the step's commands in one sandbox or, with a time box, in chunks of
        :data:`TIME_BOX_CHUNK` until the box is used up. Returns how many ran (the failed one
        included), the failure that stopped them, and whether a batch's shell stopped without
        saying where (all of its commands counted as run)."""
        commands = [self._command(p) for p in step.paths]
        size = len(commands) if step.time_box_s is None else TIME_BOX_CHUNK
        started, ran = time.monotonic(), 0
        while ran < len(commands):
            chunk = commands[ran : ran + size]
            try:
                failure = run_commands(chunk, wt, step.timeout_s, policy)
            except BatchUnclear:
                return ran + len(chunk), None, True
            if failure is not None:
                index = ran + failure.index
                return index + 1, BatchFailure(index, failure.command, failure.done), False
            ran += len(chunk)
            if step.time_box_s is not None and time.monotonic() - started >= step.time_box_s:
                break
        return ran, None, False

    def _command(self, path: str) -> str:
        return self.spec.command.replace("{file}", shlex.quote(path))

    def _run(
        self,
        wt: Path,
        paths: Sequence[str],
        timeout_s: float,
        policy: sandbox.Policy,
        *,
        check_each: bool,
    ) -> None:
        allowed: set[str] = set()
        for path in paths:
            command = self._command(path)
            done = run_command(command, wt, timeout_s, policy)
            if not done.ok:
                raise EditFailed(path, command, done.output)
            allowed.add(path)
            if not check_each:
                continue
            stray = [p for p in _git.changed_paths(wt) if p not in allowed]
            if stray:
                raise EditFailed(
                    path, command, f"changed files outside its target {path}: {', '.join(stray)}"
                )


def tracked(wt: Path, patterns: Sequence[str]) -> list[str]:
    """Tracked files matching the glob ``patterns``, sorted."""
    pathspecs = [f":(glob){pattern}" for pattern in patterns]
    out = _git.run(wt, "ls-files", "-z", "--", *pathspecs)
    return sorted(p for p in out.split("\0") if p)


FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)


class ModelEditor:
    """Applies a model's answer for one file: a unified diff (```diff) or the whole file."""

    precomputed = False

    def __init__(self, spec: ModelEdit) -> None:
        self.spec = spec

    def plan(self, wt: Path) -> list[str]:
        return tracked(wt, self.spec.files)

    def apply(self, wt: Path, step: EditBatchInput) -> Sequence[str]:
        (path,) = step.paths
        answer = step.answer or ""
        blocks = FENCE.findall(answer)
        what = f"apply {self.spec.model}'s answer to {path}"
        if not blocks and not answer.strip():
            raise EditFailed(path, what, "the answer was empty")
        language, body = blocks[0] if blocks else ("", answer)
        if language == "diff" or body.startswith(("--- ", "diff --git")):
            self._patch(wt, path, body, what)
        else:
            (wt / path).write_text(body if body.endswith("\n") else body + "\n")
        return step.paths

    def _patch(self, wt: Path, path: str, diff: str, what: str) -> None:
        touched = {
            line.split(maxsplit=1)[1].removeprefix("a/").removeprefix("b/")
            for line in diff.splitlines()
            if line.startswith(("--- ", "+++ ")) and "/dev/null" not in line
        }
        if touched - {path}:
            raise EditFailed(
                path, what, f"the diff changes other files: {', '.join(touched - {path})}"
            )
        patch = wt.parent / f".{wt.name}.patch"
        patch.write_text(diff if diff.endswith("\n") else diff + "\n")
        try:
            _git.run(wt, "apply", "--recount", "--whitespace=nowarn", str(patch))
        except git.GitCommandError as e:
            raise EditFailed(path, what, f"the diff does not apply: {e.stderr.strip()}") from None
        finally:
            patch.unlink(missing_ok=True)


EDITORS: dict[str, Callable[[Any], Editor]] = {
    "rename": RenameEditor,
    "command": CommandEditor,
    "model": ModelEditor,
}
"""The editor of each kind of edit spec (its ``kind``)."""


def editor_for(spec: EditSpec) -> Editor:
    return EDITORS[spec.kind](spec)


__all__ = [
    "CommandEditor",
    "EDITORS",
    "EditFailed",
    "Editor",
    "FENCE",
    "ModelEditor",
    "PlanRejected",
    "RenameEditor",
    "editor_for",
    "tracked",
]
