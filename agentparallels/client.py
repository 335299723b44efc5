"""Connecting to Temporal through its own environment configuration.

``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, the TLS variables and the
profiles of ``temporal.toml`` (``TEMPORAL_PROFILE``, ``TEMPORAL_CONFIG_FILE``) are read by
``temporalio.envconfig``. When none of them names an address and nothing answers on
localhost:7233, the embedded dev server is started in the background.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError

from agentparallels import devserver
from agentparallels.core.errors import UsageError
from agentparallels.plugin import AgentParallelsPlugin

CONNECT_TIMEOUT_S = 10.0


def connect_config() -> dict[str, Any]:
    """The ``Client.connect`` arguments from the environment and the active profile."""
    try:
        return dict(ClientConfig.load_client_connect_config())
    except Exception as e:  # a malformed profile file or variable
        raise UsageError(f"bad Temporal client configuration: {e}") from None


def _reason(e: BaseException) -> str:
    """The gist of a connection error (the SDK's message nests the transport's)."""
    text = str(e)
    found = re.search(r'message: "([^"]+)"', text)
    if found:
        return found.group(1).lower()
    return text.splitlines()[0] if text else "timed out"


async def _connect(target: str, config: dict[str, Any]) -> Client:
    return await asyncio.wait_for(Client.connect(target, **config), CONNECT_TIMEOUT_S)


async def connect(
    *,
    autostart: bool = True,
    announce: Callable[[str], None] = print,
    local: devserver.ServerOptions | None = None,
    plugin: AgentParallelsPlugin | None = None,
) -> Client:
    """A client for the configured cluster, or for the local dev server ``local`` (default:
    localhost:7233 with the database under the state directory), started if needed. It carries
    ``plugin`` (default: one configured from the environment), and so do the workers built
    from it."""
    # Both configurations are checked before anything happens (a server is started, say).
    config = {**connect_config(), "plugins": [plugin or AgentParallelsPlugin()]}
    explicit = config.pop("target_host", None)
    if explicit:
        try:
            return await _connect(explicit, config)
        except (RuntimeError, RPCError, TimeoutError, OSError) as e:
            raise UsageError(
                f"cannot reach Temporal at {explicit} (set by TEMPORAL_ADDRESS or your profile): "
                f"{_reason(e)}; check the address, or unset TEMPORAL_ADDRESS to use the "
                "embedded dev server"
            ) from None
    opts = local or devserver.ServerOptions()
    if not devserver.port_in_use(opts.ip, opts.port):
        if not autostart:
            raise UsageError(
                f"no Temporal server on {opts.address}: start one with "
                "`agentparallels server`, or set TEMPORAL_ADDRESS"
            )
        announce(f"Starting the Temporal dev server (database {opts.db}, log {opts.log}) ...")
        await devserver.wait_healthy(opts, devserver.spawn(opts))
        announce(f"Temporal UI: {opts.ui_url}")
    try:
        client = await _connect(opts.address, config)
    except (RuntimeError, RPCError, TimeoutError) as e:
        raise UsageError(
            f"something on {opts.address} does not answer as a Temporal server ({e}); "
            "stop it, or set TEMPORAL_ADDRESS to your server"
        ) from None
    return client


__all__ = ["CONNECT_TIMEOUT_S", "connect", "connect_config"]
