"""Deterministic workflow code: one pattern per module, and the jobs that compose them.

Nothing here performs I/O, reads clocks or draws random numbers except through
``temporalio.workflow``; every side effect is an activity from ``activities``.
"""

from workflows.consensus import ReviewWorkflow
from workflows.refactor import RefactorWorkflow
from workflows.shard import ShardWorkflow

ALL = [RefactorWorkflow, ShardWorkflow, ReviewWorkflow]

__all__ = ["ALL", "RefactorWorkflow", "ReviewWorkflow", "ShardWorkflow"]
