"""What a job's write-ahead progress log holds (the git side is ``activities/progress_log.py``).

The log is the file ``progress.json`` on a chain of commits at the scratch ref
``refs/agentparallels/<job>/progress`` of the job's repository: the plan (base commit, shards
and their sizes) and each shard that finished, with its result commit. It is written by the
job's own steps and read by a later run of the same job id, which takes over the finished
shards, and by ``agentparallels status`` when Temporal has no history of the job any more.
"""

from __future__ import annotations

from agentparallels.core._value import Value
from agentparallels.core.models import SCRATCH_NAMESPACE, JobRef, Shard, ShardResult

LOG_FILE = "progress.json"
"""The one file of each commit of the log."""


def log_ref(job_id: str) -> str:
    return f"{SCRATCH_NAMESPACE}/{job_id}/progress"


class ShardEntry(Value):
    name: str
    label: str
    files_total: int
    result: ShardResult | None = None
    """Set once the shard has finished: its branch head and the files it changed."""


class JobLog(Value):
    """The content of ``progress.json``."""

    job_id: str
    repository: str
    base_commit: str
    files_total: int = 0
    shards: tuple[ShardEntry, ...] = ()

    def done(self) -> dict[str, ShardResult]:
        """The finished shards' results, by name."""
        return {s.name: s.result for s in self.shards if s.result is not None}

    def with_result(self, result: ShardResult) -> JobLog:
        """This log with the shard ``result.name`` marked finished (added if unknown)."""
        known = {s.name for s in self.shards}
        shards = tuple(
            s.model_copy(update={"result": result}) if s.name == result.name else s
            for s in self.shards
        )
        if result.name not in known:
            extra = ShardEntry(
                name=result.name,
                label=result.name,
                files_total=len(result.files_changed),
                result=result,
            )
            shards = (*shards, extra)
        return self.model_copy(update={"shards": shards})


class OpenLogInput(Value):
    """Start of a run: the plan to record, and the shards earlier runs finished."""

    job: JobRef
    files_total: int
    shards: tuple[Shard, ...]
    offered: dict[str, ShardResult] = {}
    """Results an earlier run's history holds (``RefactorInput.reuse``); the log of this job id
    adds its own."""


class ShardDoneInput(Value):
    job: JobRef
    result: ShardResult


class LoggedShard(Value):
    """A shard as ``status`` shows it from the log and the shard's branch."""

    entry: ShardEntry
    committed: int
    """Files with a checkpoint commit on the shard's branch (all of them once finished)."""
    branch: str | None = None
    """Where the shard's branch is, when it exists."""


class LoggedJob(Value):
    """What a repository says of a job: its log and the state of its shard branches."""

    log: JobLog
    shards: tuple[LoggedShard, ...]
    published: str | None = None
    """The commit of the job's branch, when it was published."""


__all__ = [
    "JobLog",
    "LOG_FILE",
    "LoggedJob",
    "LoggedShard",
    "OpenLogInput",
    "ShardDoneInput",
    "ShardEntry",
    "log_ref",
]
