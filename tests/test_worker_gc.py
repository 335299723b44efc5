"""A worker removes its own worktrees of jobs that have ended: no worker shares its disk, so a
shard's worktree stays on the worker that made it when another finishes or cleans up the job."""

from __future__ import annotations

import shutil
from pathlib import Path

from temporalio.client import Client

from agentparallels import worker
from agentparallels.activities._workspace import worktrees_dir
from agentparallels.core.models import CommandEdit, RefactorInput
from tests.support.repos import make_repo, start_job


async def test_worktrees_of_ended_jobs_go_those_of_running_and_unknown_jobs_stay(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Three jobs' worktree folders in this worker's cache: the ended job's is removed, the
    running job's and the one the server does not know stay."""
    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command="true {file}"))
    queue = f"{task_queue}-nobody-polls"  # the jobs never run: only their state matters
    ended = await start_job(client, queue, job)
    await ended.terminate("ended for the test")
    running = await start_job(client, queue, job)
    folders = {}
    for name in (ended.id, running.id, "not-a-job-here"):
        folders[name] = worktrees_dir(name)
        (folders[name] / "00-shard").mkdir(parents=True)
        (folders[name] / "00-shard" / "a.py").write_text("A = 1\n")
    try:
        await worker.collect_garbage_of_ended_jobs(client)
    finally:
        await running.terminate("test over")
    assert not folders[ended.id].exists()
    assert (folders[running.id] / "00-shard" / "a.py").exists()
    assert (folders["not-a-job-here"] / "00-shard" / "a.py").exists()


def test_a_cache_left_half_made_by_a_killed_worker_is_made_again(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A worker killed during ``git init`` of its cache leaves HEAD and a config lock but no
    repository. The next worker on that disk must start (its garbage collection skips the
    broken cache) and the cache is made again on first use."""
    from agentparallels.activities import _git
    from agentparallels.activities._workspace import collect_garbage

    repo = make_repo(tmp_path / "repo", {"a.py": "A = 1\n"})
    cache = _git.cached_repo(str(repo))
    for part in ("objects", "refs"):
        shutil.rmtree(cache / part)
    (cache / "config.lock").touch()
    _git._CHECKED.clear()  # a new worker process
    assert collect_garbage() == []
    again = _git.cached_repo(str(repo))
    assert again == cache and _git.usable(cache)
    head = _git.run(repo, "rev-parse", "HEAD")
    _git.ensure_commit(cache, str(repo), head)
    assert _git.has_commit(cache, head)
