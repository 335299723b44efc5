"""Watching a job's rollback step by step, so a test sees what the saga itself undid.

A failed job's last step (``git.cleanup``) deletes every scratch ref of the job and this
worker's worktrees of it; a test that only compares the repository afterwards would pass even
if no compensation ran. :class:`Audit` registers spies under the real activities' names: the
cleanup spy records what the saga left for it (before doing its own work), the ``set_ref`` spy
records every ref move. Both then run the real activity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio import activity

from agentparallels import activities
from agentparallels.activities import _git
from agentparallels.activities._workspace import worktrees_dir
from agentparallels.activities.git_ops import cleanup, set_ref
from agentparallels.core.models import JobRef, RefUpdate

SAGA_REFS = ("shards/", "merged")
"""Scratch refs (below ``refs/agentparallels/<job>/``) that compensations undo; the others
(the progress log, the plan's change) are the cleanup step's."""


class Audit:
    """Spies on one worker's rollbacks; one job per audit."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, str | None]] = []
        """Every ``git.set_ref``: (ref below the job's scratch namespace, target)."""
        self.left: list[str] | None = None
        """Scratch refs (relative) the first ``git.cleanup`` found."""
        self.tree_at_delete: dict[str, bool] = {}
        """For each shard whose branch was deleted: whether its worktree still existed then
        (a failed shard removes its worktree before its branch; a finished one keeps it)."""

    def activities(self, acts: Sequence[Callable[..., Any]] | None = None) -> list:
        """``acts`` (default: every real activity) with the two spies in place."""

        @activity.defn(name="git.set_ref")
        def spied_set_ref(inp: RefUpdate) -> None:
            ref = inp.ref.removeprefix(f"{inp.job.scratch}/")
            self.moves.append((ref, inp.target))
            if inp.target is None and ref.startswith("shards/"):
                name = ref.removeprefix("shards/")
                self.tree_at_delete[name] = (worktrees_dir(inp.job.job_id) / name).exists()
            set_ref(inp)

        @activity.defn(name="git.cleanup")
        def spied_cleanup(inp: JobRef) -> None:
            if self.left is None:
                refs = _git.remote_refs(inp.repository, f"{inp.scratch}/*")
                self.left = [r.removeprefix(f"{inp.scratch}/") for r in sorted(refs)]
            cleanup(inp)

        spies = {"git.set_ref": spied_set_ref, "git.cleanup": spied_cleanup}
        kept = [a for a in acts or activities.ALL if _name(a) not in spies]
        return kept + list(spies.values())

    def left_by_saga(self) -> list[str]:
        """What the saga should have undone but the cleanup step found."""
        assert self.left is not None, "the job never reached its cleanup step"
        return [ref for ref in self.left if ref.startswith(SAGA_REFS)]

    def targets(self, ref: str) -> list[str | None]:
        """Where ``ref`` was moved, in order."""
        return [target for moved, target in self.moves if moved == ref]

    def shards(self) -> set[str]:
        """Names of the shards whose branch was moved or deleted."""
        return {ref.removeprefix("shards/") for ref, _ in self.moves if ref.startswith("shards/")}


def _name(fn: Callable[..., Any]) -> str:
    return fn.__temporal_activity_definition.name  # type: ignore[attr-defined]  # set by @activity.defn; the SDK declares no such attribute
