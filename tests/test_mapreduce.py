"""MapReduce: children read large inputs and return summaries; the parent's history stays small."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import History
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import ApplicationError
    from temporalio.worker import Worker

    from agentparallels.core._value import Value
    from agentparallels.core.errors import SUMMARY_TOO_LARGE
    from agentparallels.workflows.mapreduce import MapReduceOptions, map_reduce


class FileSummary(Value):
    path: str
    size: int
    lines: int
    sha256: str


class Job(Value):
    paths: tuple[str, ...]
    whole: bool = False
    """Children return the whole text instead of a summary (breaks the contract)."""
    max_summary_bytes: int = 16 * 1024


class Read(Value):
    path: str
    whole: bool = False


class Report(Value):
    files: int
    bytes: int
    lines: int


@activity.defn(name="test.mr.summarise")
async def summarise(path: str) -> FileSummary:
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return FileSummary(path=path, size=len(data), lines=data.count(b"\n"), sha256=digest)


@activity.defn(name="test.mr.read")
async def read(path: str) -> str:
    return Path(path).read_text()


@workflow.defn(name="test.mr.Reader")
class ReaderWorkflow:
    @workflow.run
    async def run(self, inp: Read) -> FileSummary | str:
        fn = read if inp.whole else summarise
        return await workflow.execute_activity(
            fn, inp.path, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="test.mr.Parent")
class ParentWorkflow:
    @workflow.run
    async def run(self, job: Job) -> Report:
        def reduce(summaries: list[dict]) -> Report:
            return Report(
                files=len(summaries),
                bytes=sum(s["size"] for s in summaries),
                lines=sum(s["lines"] for s in summaries),
            )

        options = MapReduceOptions(parallel=2, max_summary_bytes=job.max_summary_bytes)
        return await map_reduce(
            "test.mr.Reader", [Read(path=p, whole=job.whole) for p in job.paths], reduce, options
        )


SCHEDULING = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}
"""How many workflow tasks the parent takes depends on timing (child results arriving together
share one), not on what the children return: these events are left out of the comparison."""


def inputs(tmp_path: Path, name: str, size: int, n: int = 3) -> tuple[str, ...]:
    """``n`` files of ``size`` bytes each, 64-byte lines."""
    folder = tmp_path / name
    folder.mkdir()
    line = "x" * 63 + "\n"
    paths = []
    for i in range(n):
        path = folder / f"f{i}.txt"
        path.write_text(line * (size // 64))
        paths.append(str(path))
    return tuple(paths)


async def run(client: Client, task_queue: str, wid: str, job: Job) -> tuple[Report, History]:
    """The report, and the parent's history without its workflow-task events."""
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ParentWorkflow, ReaderWorkflow],
        activities=[summarise, read],
    ):
        handle = await client.start_workflow(ParentWorkflow.run, job, id=wid, task_queue=task_queue)
        report = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    return report, History(events=[e for e in history.events if e.event_type not in SCHEDULING])


async def test_parent_history_does_not_grow_with_what_children_read(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Three children read 1 KB files, then three read 1 MB files: the parent's history has the
    same events and (within a few bytes of the sizes' digits) the same size."""
    small, small_history = await run(
        client, task_queue, "mr-small", Job(paths=inputs(tmp_path, "small", 1024))
    )
    large, large_history = await run(
        client, task_queue, "mr-large", Job(paths=inputs(tmp_path, "large", 1024 * 1024))
    )
    assert small == Report(files=3, bytes=3 * 1024, lines=3 * 16)
    assert large == Report(files=3, bytes=3 * 1024 * 1024, lines=3 * 16384)
    assert len(small_history.events) == len(large_history.events)
    small_bytes, large_bytes = small_history.ByteSize(), large_history.ByteSize()
    assert abs(large_bytes - small_bytes) < 100, (small_bytes, large_bytes)
    assert large_bytes < 20_000  # the 3 MB the children read are nowhere near it


async def test_a_child_returning_its_whole_input_fails_the_map_step(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A child that returns what it read (8 KB) instead of a summary breaks the 4 KB limit:
    the job fails naming the child and telling what to do instead."""
    job = Job(paths=inputs(tmp_path, "whole", 8 * 1024, n=1), whole=True, max_summary_bytes=4096)
    with pytest.raises(WorkflowFailureError) as failure:
        await run(client, task_queue, "mr-whole", job)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == SUMMARY_TOO_LARGE
    assert re.match(r"map step mr-whole/0 returned 8\d{3} bytes, over the 4096-", cause.message)
    assert "leave large artefacts in git or the blob store" in cause.message
