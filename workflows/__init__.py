"""Deterministic workflow code: one pattern per module, and the jobs that compose them.

Nothing here performs I/O, reads clocks or draws random numbers except through
``temporalio.workflow``; every side effect is an activity from ``activities``.
"""

from workflows.agent_loop import AgentLoopWorkflow
from workflows.consensus import ReviewWorkflow
from workflows.pipeline import PipelineWorkflow
from workflows.refactor import RefactorWorkflow
from workflows.routing import OrchestratorWorkflow
from workflows.shard import ShardWorkflow

ALL = [
    RefactorWorkflow,
    ShardWorkflow,
    ReviewWorkflow,
    OrchestratorWorkflow,
    PipelineWorkflow,
    AgentLoopWorkflow,
]

__all__ = [
    "ALL",
    "AgentLoopWorkflow",
    "OrchestratorWorkflow",
    "PipelineWorkflow",
    "RefactorWorkflow",
    "ReviewWorkflow",
    "ShardWorkflow",
]
