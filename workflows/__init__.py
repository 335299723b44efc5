"""Deterministic workflow code: one pattern per module, and the jobs that compose them.

Nothing here performs I/O, reads clocks or draws random numbers except through
``temporalio.workflow``; every side effect is an activity from ``activities``.
"""

from agentparallels.workflows.agent import AgentWorkflow
from agentparallels.workflows.agent_unit import AgentUnitWorkflow
from agentparallels.workflows.consensus import ReviewWorkflow
from agentparallels.workflows.pipeline import PipelineWorkflow
from agentparallels.workflows.refactor import RefactorWorkflow
from agentparallels.workflows.routing import OrchestratorWorkflow
from agentparallels.workflows.shard import ShardWorkflow

ALL = [
    RefactorWorkflow,
    ShardWorkflow,
    ReviewWorkflow,
    OrchestratorWorkflow,
    PipelineWorkflow,
    AgentWorkflow,
    AgentUnitWorkflow,
]

__all__ = [
    "ALL",
    "AgentUnitWorkflow",
    "AgentWorkflow",
    "OrchestratorWorkflow",
    "PipelineWorkflow",
    "RefactorWorkflow",
    "ReviewWorkflow",
    "ShardWorkflow",
]
