"""The bulkhead around a shard's edits: a step changes its shard's files and nothing else.

Before editing, each path a step is given must be a plain relative path (no absolute path, no
``..``), one of the shard's files, and must not resolve through a symlink to anywhere else.
After editing, ``git status`` in the worktree may show changes to the shard's files only; any
other change is reverted, then reported. Both are non-retryable ``ScopeViolation`` errors
naming the path: the same edit would cross the same line on every attempt.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git
from agentparallels.core.errors import SCOPE_VIOLATION


def violation(message: str) -> ApplicationError:
    return ApplicationError(f"bulkhead: {message}", type=SCOPE_VIOLATION, non_retryable=True)


def allowed(paths: Sequence[str], scope: Collection[str]) -> set[str]:
    """The paths a step may change: its shard's files, or its own paths when none are given."""
    return set(scope) or set(paths)


def check_paths(wt: Path, paths: Sequence[str], scope: Collection[str]) -> None:
    """Refuse, before anything is edited, a path that is not plainly one of the shard's files."""
    root, inside = wt.resolve(), allowed(paths, scope)
    for path in paths:
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or ".." in pure.parts or pure.as_posix() != path:
            raise violation(f"refusing to edit {path}: not a plain path inside the worktree")
        if path not in inside:
            raise violation(f"refusing to edit {path}: not one of this shard's files")
        target = (wt / path).resolve()
        if not target.is_relative_to(root):
            raise violation(
                f"refusing to edit {path}: it resolves to {target}, outside the worktree"
            )
        real = target.relative_to(root).as_posix()
        if real != path and real not in inside:
            raise violation(
                f"refusing to edit {path}: it is a link to {real}, not one of this shard's files"
            )


def contain(
    wt: Path,
    paths: Sequence[str],
    scope: Collection[str],
    what: str,
    changed: Collection[str] | None = None,
) -> None:
    """After an edit: if it changed anything outside the shard's files, revert every change in
    the worktree and refuse, naming what it changed. ``changed``: what the caller just read
    the worktree's changes to be (``_git.changed_paths``), so git need not look again."""
    inside = allowed(paths, scope)
    found = _git.changed_paths(wt) if changed is None else changed
    outside = sorted(p for p in found if p not in inside)
    if outside:
        _git.discard(wt)
        raise violation(
            f"{what} changed {', '.join(outside)}, outside this shard's files; "
            "its changes were reverted"
        )


__all__ = ["allowed", "check_paths", "contain", "violation"]
