"""Every side effect of Agent Parallels: git, files, subprocesses.

Activities are blocking functions (they run git and tools), registered under stable names with
their timeouts and retry policies beside them (see ``activities._defn``). ``ALL`` is what a
worker registers.
"""

from agentparallels.activities.agent_merge import merge_units
from agentparallels.activities.agent_resume import recover_units
from agentparallels.activities.agent_tools import agent_tool
from agentparallels.activities.checklist import vote
from agentparallels.activities.checks import run_check
from agentparallels.activities.git_ops import (
    cleanup,
    merge,
    publish,
    remove_worktree,
    set_ref,
)
from agentparallels.activities.hooks import run_hook
from agentparallels.activities.invariant import check_result
from agentparallels.activities.llm import call_model
from agentparallels.activities.progress_log import open_log, record_shard
from agentparallels.activities.refactor import edit_files, plan
from agentparallels.activities.repo_map import repo_map
from agentparallels.activities.review import read_diff
from agentparallels.activities.routing import pollers

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
    run_hook,
    merge_units,
    agent_tool,
    repo_map,
    recover_units,
]

__all__ = ["ALL"]
