"""User hooks: commands a job runs before and after its steps, each with a veto.

``--hook pre-edit=CMD`` runs before each edit step in the shard's worktree, ``post-edit`` after
a step that committed files (on the new commit), ``pre-merge`` on the merged result of all
shards before it is tested and published. A hook that exits non-zero (or runs out of time)
vetoes the step: :func:`run_hooks` raises a non-retryable ``HookVetoed`` error naming the hook
and quoting its output, and the job's saga rolls everything back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from agentparallels.workflows._call import call

with workflow.unsafe.imports_passed_through():
    from agentparallels.core import steps
    from agentparallels.core.errors import HOOK_VETOED
    from agentparallels.core.events import Hook, HookInput, HookPoint
    from agentparallels.core.models import JobRef, Sandbox


async def run_hooks(
    hooks: Sequence[Hook],
    point: HookPoint,
    *,
    job: JobRef,
    worktree: str,
    commit: str,
    files: Sequence[str],
    shard: str | None = None,
    timeout_s: float,
    sandbox: Sandbox = Sandbox(),
) -> None:
    """Run the hooks of ``point``, in order; raise at the first veto."""
    for hook in hooks:
        if hook.point != point:
            continue
        run = await call(
            steps.RUN_HOOK,
            HookInput(
                job_id=job.job_id,
                repository=job.repository,
                point=point,
                command=hook.command,
                worktree=worktree,
                commit=commit,
                files=tuple(files),
                shard=shard,
                timeout_s=timeout_s,
                sandbox=sandbox,
            ),
            summary=f"{point} hook: {hook.command}",
            start_to_close_timeout=timedelta(seconds=timeout_s + 120),
        )
        if not run.passed:
            where = f" in shard {shard}" if shard else ""
            what = ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")
            raise ApplicationError(
                f"{point} hook `{hook.command}` vetoed the step{where} on {what or 'no files'} "
                f"(exit {run.exit_code}):\n{run.output.strip()}",
                type=HOOK_VETOED,
                non_retryable=True,
            )


__all__ = ["run_hooks"]
