"""``python -m agentparallels.cli ...`` is ``agentparallels ...``."""

from agentparallels.cli import entry

__all__: list[str] = []  # a program to run, not a module to import from

entry()
