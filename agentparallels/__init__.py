"""Agent Parallels: durable agent workflows on Temporal.

The one installed namespace. ``agentparallels.workflows``, ``agentparallels.activities`` and
``agentparallels.worker`` are the repository's top-level ``workflows/``, ``activities/`` and
``worker.py`` (linked here, so that they install and import under this name only).
"""

__version__ = "0.1.0"
