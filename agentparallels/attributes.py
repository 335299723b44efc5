"""Registering the search attributes (their keys are :mod:`agentparallels.core.attributes`) on
a namespace: this talks to the server, so it is not part of the core."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from agentparallels.core.attributes import _CLI_TYPE, ALL, as_indexed
from agentparallels.core.errors import UsageError

__all__ = ["register"]


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
