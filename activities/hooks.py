"""User hook commands: run before or after a step of a job, in one of the job's worktrees.

A hook runs through ``activities._proc.run_command`` like every tool command, in a worktree of
the job at the step's commit, with what it is about in its environment:

- ``AGENTPARALLELS_HOOK``: the hook point (``pre-edit``, ``post-edit``, ``pre-merge``);
- ``AGENTPARALLELS_FILES``: the files of the step, one per line;
- ``AGENTPARALLELS_EVENT``: all of it as one JSON object (job, shard, commit, files, ...).

Its exit code is its vote; anything it changes in the worktree is discarded, so running it again
(a retried step) finds the same worktree.
"""

from __future__ import annotations

import json
from pathlib import Path

from agentparallels.activities import _git, sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._proc import run_command
from agentparallels.activities._workspace import editing, scratch_worktree
from agentparallels.core import steps
from agentparallels.core.events import HookInput, HookRun


def hook_env(inp: HookInput) -> dict[str, str]:
    event = {
        "hook": inp.point,
        "job": inp.job_id,
        "shard": inp.shard,
        "commit": inp.commit,
        "files": list(inp.files),
    }
    return {
        "AGENTPARALLELS_HOOK": inp.point,
        "AGENTPARALLELS_JOB": inp.job_id,
        "AGENTPARALLELS_FILES": "\n".join(inp.files),
        "AGENTPARALLELS_EVENT": json.dumps(event),
    }


def _run_in(wt: Path, inp: HookInput) -> HookRun:
    try:
        policy = sandbox.Policy.of(inp.sandbox)
        done = run_command(inp.command, wt, inp.timeout_s, policy, extra_env=hook_env(inp))
    finally:  # a hook votes; it does not edit
        _git.discard(wt, inp.commit, clean="-fd")
    return HookRun(exit_code=done.exit_code, output=done.output, passed=done.ok)


@implements(steps.RUN_HOOK)
def run_hook(inp: HookInput) -> HookRun:
    """Run the hook command in the job's worktree ``inp.worktree`` at ``inp.commit`` (a scratch
    worktree, removed afterwards, when it is not a shard's)."""
    if inp.shard is not None:  # marked as being edited, so an interrupted run is reset
        with editing(inp.repository, inp.job_id, inp.worktree, inp.commit) as wt:
            return _run_in(wt, inp)
    with scratch_worktree(inp.repository, inp.job_id, inp.worktree, inp.commit) as wt:
        return _run_in(wt, inp)


__all__ = ["hook_env", "run_hook"]
