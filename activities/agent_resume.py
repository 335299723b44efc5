"""A resumed agent job takes over what its earlier run made (see ``core/agentresume.py``).

The earlier run's rollback deleted its refs, so its units' commits are unreferenced: they stay
in the object store of the clone cache of the worker that made them, and of the job's
repository (a push copied them there), until git's garbage collection prunes them. This step
looks for each in this worker's cache, then fetches it from the job's repository; the units it
can take over it pins as their branches under the new job's scratch namespace, where every
worker finds them and the new job's cleanup removes them.
"""

from __future__ import annotations

from pathlib import Path

import git

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.core import steps
from agentparallels.core.agentresume import Recovered, RecoverInput, recoverable, unit_branch

__all__ = ["recover_units"]


@implements(steps.RECOVER_UNITS)
def recover_units(inp: RecoverInput) -> Recovered:
    """Which of the earlier run's units the new run takes over; their commits pinned at
    their branches in the job's repository before the step returns (a retry finds them)."""
    job, resumed = inp.job, inp.resumed
    cache = _git.cached_repo(job.repository)
    commits = {u.name: u.head for u in resumed.kept}
    commits |= {c.name: c.head for c in resumed.checkpoints}
    found = {name for name, sha in commits.items() if _in_reach(cache, job.repository, sha)}
    recovered = recoverable(resumed, found)
    pins = []
    for name in (*recovered.kept, *recovered.checkpoints):
        ref = unit_branch(job, name)
        current = _git.remote_ref(job.repository, ref)
        if current != commits[name]:
            pins.append((ref, commits[name], current))
    if pins:
        _git.push(cache, job.repository, pins)
    return recovered


def _in_reach(cache: Path, repository: str, sha: str) -> bool:
    """``sha`` is in the cache, or can be fetched from the job's repository."""
    try:
        _git.ensure_commit(cache, repository, sha)
    except git.GitCommandError:
        return False
    return _git.has_commit(cache, sha)
