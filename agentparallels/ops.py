"""Operating jobs, the library under the `list`, `setup`, `graph` and `status` commands:
finding a job by its id, finding jobs by their search attributes (``list``), registering those
attributes on a cluster (``setup``), drawing the calls a job made (``graph``).

The query ``list`` builds a visibility query, the same one the Temporal UI's search box and
``temporal workflow list --query`` take, so what it prints can be checked with either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from agentparallels import agentgraph, callgraph, validate
from agentparallels.core import attributes, names
from agentparallels.core._value import Value
from agentparallels.core.agentjob import AgentResult
from agentparallels.core.errors import UsageError
from agentparallels.core.models import RefactorResult

__all__ = [
    "RESULT_TYPES",
    "STATUSES",
    "existing",
    "graph_of",
    "jobs",
    "query_of",
    "row",
    "setup",
    "table",
]

STATUSES = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
    "canceled": "Canceled",
    "terminated": "Terminated",
    "timed-out": "TimedOut",
    "continued": "ContinuedAsNew",
}
"""``--status`` words and the visibility store's ``ExecutionStatus`` values."""


RESULT_TYPES: dict[str, type[Value]] = {names.REFACTOR: RefactorResult, names.AGENT: AgentResult}
"""The result each kind of job returns, by workflow type (what ``describe()`` says it is)."""


async def existing(
    client: Client, job_id: str
) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
    """The job's handle and its latest run's description; a usage error for an unknown id.
    The handle decodes the result the job's kind returns (a refactor's, an agent's ...)."""
    try:
        desc = await client.get_workflow_handle(job_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no job {job_id}: see the Temporal UI for job ids") from None
        raise
    kind = RESULT_TYPES.get(desc.workflow_type or "")
    return client.get_workflow_handle(job_id, result_type=kind), desc


# --- list ------------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _repository(text: str) -> str:
    """How jobs name the repository: a URL as given, a local repository by its top folder."""
    if validate.is_url(text):
        return attributes.shown(text)
    try:
        return validate.repository(text)
    except UsageError:  # gone, or not a repository any more: still a fine filter
        return str(Path(text).expanduser().resolve())


def query_of(
    *,
    repo: str | None = None,
    phase: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    raw: str | None = None,
) -> str:
    """The visibility query for these filters (jobs only: workflows with a job kind)."""
    terms = [f"{attributes.JOB_KIND.name} IS NOT NULL"]
    if kind:
        terms.append(f"{attributes.JOB_KIND.name} = {_quoted(kind)}")
    if repo:
        terms.append(f"{attributes.REPOSITORY.name} = {_quoted(_repository(repo))}")
    if phase:
        terms.append(f"{attributes.PHASE.name} = {_quoted(phase)}")
    if status:
        terms.append(f"ExecutionStatus = {_quoted(STATUSES[status])}")
    if raw:
        terms.append(f"({raw})")
    return " AND ".join(terms)


def row(w: WorkflowExecution) -> list[str]:
    found = w.typed_search_attributes
    return [
        w.id,
        w.status.name.lower() if w.status else "?",
        found.get(attributes.PHASE) or "",
        str(found.get(attributes.FILES_DONE) or 0),
        str(found.get(attributes.TOKENS) or 0),
        w.start_time.strftime("%Y-%m-%d %H:%M:%S") if w.start_time else "",
    ]


def table(rows: list[list[str]]) -> str:
    head = ["JOB", "STATUS", "PHASE", "FILES", "TOKENS", "STARTED (UTC)"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {3, 4}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in [head, *rows]
    )


async def jobs(client: Client, query: str, limit: int) -> list[WorkflowExecution]:
    try:
        return [w async for w in client.list_workflows(query, limit=limit)]
    except RPCError as e:
        if e.status == RPCStatusCode.INVALID_ARGUMENT:
            raise UsageError(f"the server refused the query `{query}`: {e.message}") from None
        raise


# --- setup -----------------------------------------------------------------------------------


def _type_name(value: IndexedValueType.ValueType) -> str:
    return IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_").title()


async def setup(client: Client) -> list[str]:
    """Register the project's search attributes on the client's namespace; one line per
    attribute saying what was done. Idempotent: a second run adds nothing."""
    namespace = client.namespace
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        wanted = attributes.as_indexed()
        have = {**existing.system_attributes, **existing.custom_attributes}
        clash = [n for n, t in wanted.items() if n in have and have[n] != t]
        if clash:
            name = clash[0]
            raise UsageError(
                f"search attribute {name} exists on namespace {namespace} as "
                f"{_type_name(have[name])}, but Agent Parallels needs "
                f"{_type_name(wanted[name])}: remove it or use another namespace"
            )
        missing = {n: t for n, t in wanted.items() if n not in have}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
    except RPCError as e:
        raise _setup_error(e, namespace) from None
    return [
        f"{name} ({_type_name(kind)}): {'added' if name in missing else 'already registered'}"
        for name, kind in wanted.items()
    ]


def _setup_error(e: RPCError, namespace: str) -> UsageError:
    if e.status == RPCStatusCode.NOT_FOUND:
        return UsageError(
            f"namespace {namespace} does not exist on this cluster: create it "
            f"(`temporal operator namespace create --namespace {namespace}`) or set "
            "TEMPORAL_NAMESPACE to an existing one"
        )
    if e.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
        return UsageError(
            f"not allowed to register search attributes on namespace {namespace} "
            f"({e.message}): run `agentparallels setup` with an admin's credentials, or ask "
            "an operator to"
        )
    return UsageError(f"cannot register search attributes on namespace {namespace}: {e.message}")


# --- graph -----------------------------------------------------------------------------------


async def graph_of(client: Client, job_id: str) -> callgraph.Flow:
    """The job's call graph; an agent job's drawn by unit and tool (``agentgraph``)."""
    try:
        flow = await callgraph.load(client, job_id, group=agentgraph.group)
        await agentgraph.annotate(client, flow)
        return flow
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no job {job_id}: `agentparallels list` shows job ids") from None
        raise
