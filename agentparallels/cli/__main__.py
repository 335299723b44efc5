"""``python -m agentparallels.cli ...`` is ``agentparallels ...``."""

from agentparallels.cli import entry

entry()
