"""Lazy loading: a job's history holds references (paths, commit ids), never the contents of
the files it works on. Real jobs, parents and children, with every payload searched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory

from agentparallels import worker
from agentparallels.core.models import Limits, ModelEdit, RefactorInput, RenameEdit
from agentparallels.replay import histories_of
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.history_text import history_text
from tests.support.repos import make_repo, start_job

MARKER = "LAZY-MARKER-5d0c"
"""In every file of the repositories below, and nowhere else."""

PADDING = "".join(f'\nNOTE_{i} = "{MARKER} {i}"\n' for i in range(6))

FILES = {
    "pkg/__init__.py": f"# {MARKER}\n",
    "pkg/money.py": (
        f"def to_cents(amount: float) -> int:\n    return round(amount * 100)\n{PADDING}"
    ),
    "pkg/shop/__init__.py": f"# {MARKER}\n",
    "pkg/shop/cart.py": (
        "from pkg.money import to_cents\n\n\n"
        f"def total(prices: list[float]) -> int:\n    return sum(map(to_cents, prices))\n{PADDING}"
    ),
    "tests/test_money.py": (
        f"from pkg.money import to_cents\n\n\ndef test() -> None:\n    assert to_cents(1) == 100\n"
        f"{PADDING}"
    ),
}


async def job_histories(client: Client, job_id: str, children: int) -> list[WorkflowHistory]:
    """The job's history and its children's, once the children are visible to a search."""
    while True:
        found = await histories_of(client, job_id)
        if len(found) == 1 + children:
            return found
        await asyncio.sleep(0.1)  # visibility catches up with the finished children


def assert_references_only(histories: list[WorkflowHistory], *expected: str) -> None:
    for history in histories:
        text = history_text(history)
        assert MARKER not in text, f"file contents in the history of {history.workflow_id}"
    everything = "".join(history_text(h) for h in histories)
    for reference in expected:  # the search does see inside payloads
        assert reference in everything, reference


async def test_a_rename_job_keeps_file_contents_out_of_every_history(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A rename across 3 shards: the parent's and the children's histories name the files and
    commits, and hold none of the files' text."""
    repo = make_repo(tmp_path / "repo", FILES)
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
        limits=Limits(max_files_per_shard=1),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        result = await asyncio.wait_for(handle.result(), 90)
    assert result.files_changed == ("pkg/money.py", "pkg/shop/cart.py", "tests/test_money.py")
    histories = await asyncio.wait_for(job_histories(client, handle.id, 3), 30)
    assert_references_only(histories, "pkg/shop/cart.py", result.head_commit, result.base_commit)


DIFF = """```diff
--- a/pkg/money.py
+++ b/pkg/money.py
@@ -1,2 +1,2 @@
-def to_cents(amount: float) -> int:
+def as_cents(amount: float) -> int:
     return round(amount * 100)
```"""


@pytest.mark.fake_llm([{"content": DIFF}])
async def test_a_model_job_reads_files_in_its_steps_not_from_its_history(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """A model edit: the model is sent the file and its siblings (read from git by the call
    step), but the histories hold only the instruction, paths, commits and the model's
    answer."""
    repo = make_repo(tmp_path / "repo", FILES)
    job = RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="INSTRUCTION-9e2b: rename to_cents to as_cents",
            files=("pkg/money.py",),
            model="openai:fake",
            base_url=fake.openai_base_url,
        ),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        result = await asyncio.wait_for(handle.result(), 90)
    sent = fake.requests[0].body["messages"][-1]["content"]
    assert result.files_changed == ("pkg/money.py",)
    assert sent.count(MARKER) == 6 + 1  # the file's notes and its sibling __init__.py
    histories = await asyncio.wait_for(job_histories(client, handle.id, 1), 30)
    assert_references_only(histories, "INSTRUCTION-9e2b", "def as_cents", result.head_commit)
