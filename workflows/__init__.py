"""Deterministic workflow code: one pattern per module, and the jobs that compose them.

Nothing here performs I/O, reads clocks or draws random numbers except through
``temporalio.workflow``; every side effect is an activity from ``activities``.

The package imports none of its modules: the workflow sandbox imports a run's own module
afresh for every run a worker starts or replays, and this package with it, so each shard's run
compiled every other job's modules too (65 of the 100 ms a shard's run took to start, measured
by replaying a recorded shard). The shipped workflows are listed in
:mod:`agentparallels.workflows.shipped`.
"""
