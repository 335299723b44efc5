"""A free TCP port on loopback, for servers a test starts on a port it must name up front."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port nothing listens on now: the kernel picks it, so tests running side by side do not
    collide (it is released before use, so a server should still say if it cannot bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
