"""Search attributes: they make jobs findable in the Temporal UI and by ``agentparallels list``.

The keys and how they are shown; registering them on a namespace is
:func:`agentparallels.attributes.register` (it talks to the server)."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)

from agentparallels.core import redact

__all__ = [
    "ALL",
    "FILES_DONE",
    "JOB_KIND",
    "PHASE",
    "REPOSITORY",
    "TOKENS",
    "as_indexed",
    "cli_flags",
    "queued",
    "shown",
]

JOB_KIND = SearchAttributeKey.for_keyword("AgentJobKind")
REPOSITORY = SearchAttributeKey.for_keyword("AgentRepository")
PHASE = SearchAttributeKey.for_keyword("AgentPhase")
FILES_DONE = SearchAttributeKey.for_int("AgentFilesDone")
TOKENS = SearchAttributeKey.for_int("AgentTokens")

ALL: list[SearchAttributeKey[Any]] = [JOB_KIND, REPOSITORY, PHASE, FILES_DONE, TOKENS]


def shown(repository: str) -> str:
    """A repository as search attributes, summaries and details show it: any credential in
    its URL replaced by ``***`` (search attributes are stored unencrypted)."""
    return redact.url(repository)


_CLI_TYPE = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}


def queued(kind: str, repository_shown: str) -> TypedSearchAttributes:
    """A job's search attributes as it starts (or starts again): its kind and repository, in
    phase ``queued`` with nothing done."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(JOB_KIND, kind),
            SearchAttributePair(REPOSITORY, repository_shown),
            SearchAttributePair(PHASE, "queued"),
            SearchAttributePair(FILES_DONE, 0),
        ]
    )


def cli_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    flags = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPE[key.indexed_value_type]}"]
    return flags


def as_indexed() -> dict[str, IndexedValueType.ValueType]:
    """Name -> type, as the operator service's ``add_search_attributes`` takes them."""
    return {key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in ALL}
