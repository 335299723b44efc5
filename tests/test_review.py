"""`agentparallels review`: a committee of models reviews a branch's diff; the verdict is the
exit code. Real git, the real CLI in a subprocess, the loopback fake model server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.cli import cli_env, run_cli
from tests.support.repos import git, make_repo, write

SECRET_LINE = "RATE = 0.21  # the changed line"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main, and a branch `feature` that changes one file."""
    path = make_repo(tmp_path / "repo", {"tax.py": "RATE = 0.2\n", "cart.py": "ITEMS = []\n"})
    git(path, "switch", "--quiet", "-c", "feature")
    write(path, {"tax.py": SECRET_LINE + "\n"})
    git(path, "commit", "--quiet", "-am", "raise the rate")
    git(path, "switch", "--quiet", "main")
    return path


def vote(approve: bool, reasons: str) -> dict:
    return {"content": json.dumps({"approve": approve, "reasons": reasons})}


def review(
    *args: str, address: str, tmp_path: Path, task_queue: str
) -> subprocess.CompletedProcess[str]:
    """`agentparallels review ARGS` on the test's queue, with a model key of its own."""
    env = cli_env(address, cache=tmp_path / "cli-cache", OPENAI_API_KEY="sk-test-review")
    return run_cli("review", *args, "--task-queue", task_queue, env=env)


def test_review_approves_by_quorum_and_reports_the_dissent(
    address: str, repo: Path, fake: FakeLLM, tmp_path: Path, task_queue: str
) -> None:
    """Two of three reviewers approve (quorum 2): exit 0, APPROVED, every vote and the
    dissenting reviewer listed. Each reviewer saw the diff, read from git by the worker."""
    fake.push(
        vote(True, "looks right"),
        vote(False, "rate change needs a test"),
        vote(True, "looks right"),
    )
    done = review(
        str(repo),
        "--ref",
        "feature",
        "--base",
        "main",
        "--reviewers",
        "3",
        "--quorum",
        "2",
        "--model",
        "openai:fake",
        "--base-url",
        fake.openai_base_url,
        address=address,
        tmp_path=tmp_path,
        task_queue=task_queue,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("review of feature (1 files, ")
    assert first.endswith("APPROVED, 2 of 3 approve (quorum 2)")
    assert done.stdout.count(": approve: looks right") == 2
    assert ": reject: rate change needs a test" in done.stdout
    assert "dissent: reviewer " in done.stdout
    prompts = [r.body["messages"][-1]["content"] for r in fake.requests]
    assert len(prompts) == 3
    assert all(f"+{SECRET_LINE}" in p and "-RATE = 0.2" in p for p in prompts)
    temperatures = sorted(r.body["temperature"] for r in fake.requests)
    assert temperatures == [0.0, 0.4, 0.8]


def test_review_rejects_below_quorum_with_exit_1(
    address: str, repo: Path, fake: FakeLLM, tmp_path: Path, task_queue: str
) -> None:
    """One approval of three with quorum 2: exit 1, REJECTED, the approval is the dissent."""
    fake.push(vote(False, "wrong rate"), vote(True, "fine"), vote(False, "wrong rate"))
    done = review(
        str(repo),
        "--ref",
        "feature",
        "--base",
        "main",
        "--model",
        "openai:fake",
        "--base-url",
        fake.openai_base_url,
        address=address,
        tmp_path=tmp_path,
        task_queue=task_queue,
    )
    assert done.returncode == 1, done.stderr
    assert "REJECTED, 1 of 3 approve (quorum 2)" in done.stdout
    dissent = done.stdout.splitlines()[-1]
    assert dissent.startswith("dissent: reviewer ") and ";" not in dissent


BAD = {
    "quorum over the committee": (
        ["{repo}", "--ref", "feature", "--reviewers", "2", "--quorum", "3"],
        "--quorum 3 is larger than the committee (--reviewers 2)",
    ),
    "missing ref": (["{repo}", "--ref", "nope"], "--ref 'nope' not found in"),
    "missing base": (["{repo}", "--ref", "feature", "--base", "gone"], "--base 'gone' not found"),
    "not a repository": (["{plain}", "--ref", "feature"], "is not a git repository"),
    "nothing to review": (["{repo}", "--ref", "main"], "nothing to review: main brings no change"),
    "bad model": (["{repo}", "--ref", "feature", "--model", "gpt-4"], "must be written provider"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_review_bad_input_exits_2_before_anything_runs(
    case: str, address: str, repo: Path, fake: FakeLLM, tmp_path: Path, task_queue: str
) -> None:
    """Each mistake: exit 2, one line naming it, no traceback, no model called."""
    (tmp_path / "plain").mkdir()
    args, expected = BAD[case]
    args = [a.format(repo=repo, plain=tmp_path / "plain") for a in args]
    if "--model" not in args:
        args += ["--model", "openai:fake", "--base-url", fake.openai_base_url]
    done = review(*args, address=address, tmp_path=tmp_path, task_queue=task_queue)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert fake.requests == []


async def test_review_history_carries_refs_not_the_diff(
    env: WorkflowEnvironment,
    repo: Path,
    fake: FakeLLM,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workflow's input names refs only; the diff enters the history where the model call
    needs it, after the activity read it from git."""
    from agentparallels.core.consensus import ReviewInput, ReviewResult

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-review")
    fake.push(vote(True, "ok"))
    inp = ReviewInput(
        repository=str(repo),
        ref="feature",
        base="main",
        models=("openai:fake",),
        base_url=fake.openai_base_url,
        reviewers=1,
        quorum=1,
    )
    async with worker.build_worker(env.client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await env.client.start_workflow(
            "ReviewWorkflow",
            inp,
            id=f"review-{task_queue}",
            task_queue=task_queue,
            result_type=ReviewResult,
        )
        result = await handle.result()
    assert result.verdict == "approve" and result.files == ("tax.py",)
    assert result.head_commit == git(repo, "rev-parse", "feature")
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert SECRET_LINE not in str(started.input)
    assert "feature" in str(started.input)
