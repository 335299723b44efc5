"""A repository's tool-call baseline, read from its past agent jobs (``core.baseline``).

No database of its own: every finished agent job's result carries a summary of its tool calls
(``AgentResult.tool_stats``), and visibility finds those jobs by the search attributes every
job carries (``AgentJobKind``, ``AgentRepository``, ``ExecutionStatus``). The client that
starts a job reads the newest ``JOBS`` of them and hands the job the norms they make.

Only completed jobs return a result, so a job that failed or was cancelled adds nothing (its
calls were in the trace, not in a result). A baseline that cannot be read (visibility
without the search attributes, a result that no longer decodes) is not a reason to refuse a
job: it starts without one, and says so.
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from agentparallels import ops
from agentparallels.core.agentjob import AgentResult
from agentparallels.core.baseline import Baseline, ToolStats, baseline_of
from agentparallels.core.errors import UsageError

__all__ = ["JOBS", "of_repository"]

JOBS = 10
"""Past jobs read: recent enough to follow a repository that changes, enough for a p95."""


async def _stats(client: Client, w: WorkflowExecution) -> tuple[ToolStats, ...]:
    handle = client.get_workflow_handle(w.id, run_id=w.run_id, result_type=AgentResult)
    try:
        result = await handle.result(follow_runs=False)
    except Exception:  # ended otherwise meanwhile, or no longer decodes: it adds nothing
        return ()
    return result.tool_stats if isinstance(result, AgentResult) else ()


async def of_repository(
    client: Client, repository: str, *, kind: str, jobs: int = JOBS
) -> tuple[Baseline | None, str]:
    """The baseline of ``repository``'s newest ``jobs`` completed jobs of ``kind``, and a
    line saying where it came from (or why there is none)."""
    query = ops.query_of(repo=repository, kind=kind, status="completed")
    try:
        found = await ops.jobs(client, query, jobs)
    except (RPCError, UsageError) as e:
        return None, f"no baseline: the past jobs could not be listed ({e})"
    stats = await asyncio.gather(*(_stats(client, w) for w in found))
    baseline = baseline_of(stats)
    if baseline is None:
        return None, "no baseline: no finished agent job on this repository yet"
    return baseline, (
        f"baseline: {baseline.jobs} past agent jobs on this repository, "
        f"{len(baseline.tools)} kinds of tool call"
    )
