"""The refactor job with a model as its editor, against a loopback model server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels import worker
from agentparallels.core.errors import BREAKER_OPEN
from agentparallels.core.llm import BudgetLimits, Price
from agentparallels.core.models import Limits, ModelEdit, PhaseBudget, Progress, RefactorInput
from agentparallels.plugin import plugin_of
from agentparallels.replay import replayer_for
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.history_text import history_text
from tests.support.repos import git, make_repo, snapshot, start_job

FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": "ORIGINAL_A = 1\n\n\ndef old_name() -> int:\n    return ORIGINAL_A\n",
    "pkg/b.py": "from pkg.a import old_name\n\n\ndef use() -> int:\n    return old_name()\n",
}
GOOD_A = "```python\nORIGINAL_A = 1\n\n\ndef new_name() -> int:\n    return ORIGINAL_A\n```"
BAD = "```python\ndef broken(:\n```"
DIFF_B = """```diff
--- a/pkg/b.py
+++ b/pkg/b.py
@@ -1,5 +1,5 @@
-from pkg.a import old_name
+from pkg.a import new_name


 def use() -> int:
-    return old_name()
+    return new_name()
```"""


def job(repo: Path, fake: FakeLLM) -> RefactorInput:
    return RefactorInput(
        repository=str(repo),
        edit=ModelEdit(
            instruct="rename old_name to new_name",
            files=("pkg/a.py", "pkg/b.py"),
            model="openai:fake-coder",
            base_url=fake.openai_base_url,
        ),
        limits=Limits(parallel=1),
        prices={"openai:fake-coder": Price(input=1.0, output=2.0)},
    )


@pytest.mark.fake_llm([{"content": BAD}, {"content": GOOD_A}, {"content": DIFF_B}])
async def test_model_edits_each_file_and_a_lint_failure_goes_back_as_feedback(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """A syntax error in the model's first answer is sent back with ruff's output; the second
    answer (whole file) and a diff for the other file are committed, one commit per file; the
    files' original text never enters the history, and the job replays."""
    repo = make_repo(tmp_path / "repo", FILES)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job(repo, fake))
        result = await asyncio.wait_for(handle.result(), 60)
    requests = [r.body for r in fake.requests]
    assert result.files_changed == ("pkg/a.py", "pkg/b.py")
    assert result.usage.total > 0
    usage = result.usage
    assert result.cost_usd == (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6
    head = result.head_commit
    assert "def new_name() -> int:" in git(repo, "show", f"{head}:pkg/a.py")
    assert git(repo, "show", f"{head}:pkg/b.py").startswith("from pkg.a import new_name")
    assert len(requests) == 3
    assert "ORIGINAL_A = 1" in requests[0]["messages"][-1]["content"]  # read by the step
    feedback = requests[1]["messages"][-1]["content"]
    assert feedback.startswith("That edit failed: `ruff check --isolated")
    assert "pkg/a.py:1:" in feedback
    assert requests[1]["messages"][-2] == {"role": "assistant", "content": BAD}

    child = client.get_workflow_handle(f"{handle.id}/00-pkg")
    history = await child.fetch_history()
    assert "def old_name" not in history_text(history)  # the original files stay in git
    replayer = replayer_for(plugin_of(client))
    await replayer.replay_workflow(history)
    await replayer.replay_workflow(await handle.fetch_history())


@pytest.mark.fake_llm([{"content": BAD}] * 3, default={"content": GOOD_A})
async def test_three_bad_answers_open_the_breaker_and_roll_back(
    client: Client, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """Three answers in a row that fail verification: no fourth call; the job fails naming the
    file and ruff's complaint, and the repository is as it was."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job(repo, fake))
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    calls = len(fake.requests)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == BREAKER_OPEN
    assert "3 consecutive failed attempts at pkg/a.py" in cause.message
    assert calls == 3
    assert snapshot(repo) == before


async def test_phase_budgets_show_in_the_progress_query_and_the_ui(
    client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First attempts are paid from execute, the retry after a failed check from verify; the
    progress query and the UI's current details show each phase's spending against its
    allowance (defaults: plan 10%, execute 70% plus plan's unspent, verify the rest)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-model-refactor")
    repo = make_repo(tmp_path / "repo", FILES)
    answers = [{"content": BAD, "usage": {"input": 100, "output": 10}}]
    answers += [{"content": GOOD_A, "usage": {"input": 200, "output": 20}}]
    answers += [{"content": DIFF_B, "usage": {"input": 300, "output": 30}}]
    with FakeLLM(answers) as fake:
        inp = job(repo, fake).model_copy(update={"budget": BudgetLimits(total=100_000)})
        async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
            handle = await start_job(client, task_queue, inp)
            await asyncio.wait_for(handle.result(), 60)
            progress = await handle.query("progress", result_type=Progress)
            # What the UI shows as the job's current details, through the same query it uses.
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
    assert progress.budget == (  # remaining: what the job's ledger would grant a call now
        PhaseBudget(phase="plan", spent=0, allowance=10_000, remaining=10_000),
        PhaseBudget(phase="execute", spent=440, allowance=80_000, remaining=79_560),
        PhaseBudget(phase="verify", spent=220, allowance=99_560, remaining=99_340),
    )
    assert (progress.tokens, progress.reserved, progress.remaining) == (660, 0, 99_340)
    shown = metadata.current_details
    assert "tokens: 660 spent, 99340 left (plan 0/10000, execute 440/80000, verify 220/99560)" in (
        shown
    )
