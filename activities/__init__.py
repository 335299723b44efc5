"""Every side effect of Agent Parallels: git, files, subprocesses.

Activities are blocking functions (they run git and tools), registered under stable names with
their timeouts and retry policies beside them (see ``activities._defn``). ``ALL`` is what a
worker registers.
"""

from activities.agent import run_tool
from activities.checklist import vote
from activities.checks import run_check
from activities.git_ops import (
    cleanup,
    merge,
    publish,
    remove_worktree,
    set_ref,
)
from activities.hooks import run_hook
from activities.invariant import check_result
from activities.llm import call_model
from activities.progress_log import open_log, record_shard
from activities.refactor import edit_files, plan
from activities.review import read_diff
from activities.routing import pollers

ALL = [
    plan,
    edit_files,
    remove_worktree,
    set_ref,
    merge,
    run_check,
    call_model,
    check_result,
    publish,
    cleanup,
    open_log,
    record_shard,
    vote,
    read_diff,
    pollers,
    run_tool,
    run_hook,
]

__all__ = ["ALL"]
