"""Search attributes: they make jobs findable in the Temporal UI and by ``agentparallels list``."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.service import RPCError

from agentparallels.core import redact
from agentparallels.core.errors import UsageError

JOB_KIND = SearchAttributeKey.for_keyword("AgentJobKind")
REPOSITORY = SearchAttributeKey.for_keyword("AgentRepository")
PHASE = SearchAttributeKey.for_keyword("AgentPhase")
FILES_DONE = SearchAttributeKey.for_int("AgentFilesDone")
TOKENS = SearchAttributeKey.for_int("AgentTokens")

ALL = [JOB_KIND, REPOSITORY, PHASE, FILES_DONE, TOKENS]


def shown(repository: str) -> str:
    """A repository as search attributes, summaries and details show it: any credential in
    its URL replaced by ``***`` (search attributes are stored unencrypted)."""
    return redact.url(repository)


_CLI_TYPE = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}


def cli_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    flags = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPE[key.indexed_value_type]}"]
    return flags


def as_indexed() -> dict[str, IndexedValueType.ValueType]:
    """Name -> type, as the operator service's ``add_search_attributes`` takes them."""
    return {key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in ALL}


async def register(client: Client) -> None:
    """Add the search attributes to the client's namespace if they are missing (idempotent;
    note that ``temporal server start-dev`` ignores its flags when the database exists)."""
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=as_indexed())
        )
    except RPCError as e:
        if "already" in str(e).lower():
            return
        flags = " ".join(f"--name {k.name} --type {_CLI_TYPE[k.indexed_value_type]}" for k in ALL)
        raise UsageError(
            f"the search attributes {', '.join(k.name for k in ALL)} are not registered on "
            f"namespace {client.namespace} and could not be added ({e}); ask an operator to run "
            f"`temporal operator search-attribute create {flags}`"
        ) from None
