"""Agent Parallels core: what is neither workflow nor activity.

Shared models, errors, configuration, the Temporal dev-server launcher and the CLI live here.
Import direction: ``workflows`` -> ``activities`` -> ``agentparallels``; nothing in this package
imports the other two at module level.
"""

__version__ = "0.1.0"
