"""Every workflow the project ships: what the plugin registers on a worker."""

from __future__ import annotations

from agentparallels.workflows.agent import AgentWorkflow
from agentparallels.workflows.agent_unit import AgentUnitWorkflow
from agentparallels.workflows.consensus import ReviewWorkflow
from agentparallels.workflows.pipeline import PipelineWorkflow
from agentparallels.workflows.refactor import RefactorWorkflow
from agentparallels.workflows.routing import OrchestratorWorkflow
from agentparallels.workflows.shard import ShardWorkflow

ALL: list[type] = [
    RefactorWorkflow,
    ShardWorkflow,
    ReviewWorkflow,
    OrchestratorWorkflow,
    PipelineWorkflow,
    AgentWorkflow,
    AgentUnitWorkflow,
]

__all__ = ["ALL"]
