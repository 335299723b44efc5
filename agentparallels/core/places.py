"""Where Agent Parallels keeps its state on a machine: a path computed from the environment,
shared by the dev server (which writes there) and the steps (which keep commands out of it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["state_dir"]


def state_dir() -> Path:
    """Where the server's database and log live: ``$AGENTPARALLELS_STATE_DIR``, else
    ``$XDG_STATE_HOME/agentparallels``, else ``~/.local/state/agentparallels``."""
    explicit = os.environ.get("AGENTPARALLELS_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "agentparallels"
