"""The command line: bad input is refused with one clear line and exit code 2, before anything
is changed; a good request runs the job to the end."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agentparallels import worker
from tests.support.cli import cli_process, run_cli
from tests.support.ports import free_port
from tests.support.repos import snapshot, src_layout_repo, write

BAD_INPUT = {
    "not a repository": (["{plain}", "--rename", "a.b=c"], "is not a git repository"),
    "unknown symbol": (
        ["{repo}", "--rename", "pkg.money.nope=x"],
        "unknown symbol 'pkg.money.nope'",
    ),
    "invalid identifier": (
        ["{repo}", "--rename", "pkg.money.to_cents=1cents"],
        "not a valid Python identifier",
    ),
    "keyword": (
        ["{repo}", "--rename", "pkg.money.to_cents=class"],
        "not a valid Python identifier",
    ),
    "already defined": (
        ["{repo}", "--rename", "pkg.shop.cart.total=to_cents"],
        "'to_cents' is already defined",
    ),
    "missing base ref": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--base", "nope"],
        "base ref 'nope' not found",
    ),
    "apply on a dirty tree": (
        ["{dirty}", "--rename", "pkg.money.to_cents=c", "--apply"],
        "uncommitted changes",
    ),
    "edit-cmd without {file}": (
        ["{repo}", "--edit-cmd", "ruff check --fix"],
        "must contain {file}",
    ),
    "conflicting editors": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--edit-cmd", "x {file}"],
        "conflicting editors",
    ),
    "no editor": (["{repo}"], "nothing to do"),
    "instruct without a model": (["{repo}", "--instruct", "tidy up"], "--instruct needs --model"),
    "bad price": (
        ["{repo}", "--instruct", "x", "--model", "openai:m", "--price", "openai:m=cheap"],
        "--price takes MODEL=IN,OUT",
    ),
    "unknown model provider": (
        ["{repo}", "--instruct", "tidy up", "--model", "gpt-4"],
        "model 'gpt-4' must be written provider:model",
    ),
    "bad option value": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--parallel", "0"],
        "at least 1",
    ),
    "shard tokens of 0": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--shard-tokens", "0"],
        "argument --shard-tokens: expected a number of at least 1, got 0",
    ),
    "a file over the shard tokens": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--shard-tokens", "5"],
        "src/pkg/money.py is 19 tokens, more than the shard limit of 5 tokens: raise "
        "--shard-tokens to at least 19",
    ),
    "phase shares without a budget": (
        ["{repo}", "--instruct", "x", "--model", "openai:m", "--phase-shares", "plan=0.5"],
        "--phase-shares divides --budget-tokens",
    ),
    "phase shares over 1": (
        [
            "{repo}",
            "--instruct",
            "x",
            "--model",
            "openai:m",
            "--budget-tokens",
            "100",
            "--phase-shares",
            "plan=0.5,execute=0.7",
        ],
        "--phase-shares plan=0.5,execute=0.7: the shares add up to 1.2, more than 1",
    ),
    "a budget on a rename": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--budget-tokens", "1000"],
        "--budget-tokens applies to model calls, and a --rename job makes none",
    ),
    "a price on an edit command": (
        ["{repo}", "--edit-cmd", "true {file}", "--price", "openai:m=2,8"],
        "--price applies to model calls, and a --edit-cmd job makes none",
    ),
    "phase shares on a rename": (
        ["{repo}", "--rename", "pkg.money.to_cents=c", "--phase-shares", "plan=0.5"],
        "--phase-shares applies to model calls, and a --rename job makes none",
    ),
    "phase shares misspelt": (
        [
            "{repo}",
            "--instruct",
            "x",
            "--model",
            "openai:m",
            "--budget-tokens",
            "100",
            "--phase-shares",
            "plan:0.5",
        ],
        "--phase-shares takes PHASE=SHARE,...",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    case: str, address: str, tmp_path: Path, task_queue: str
) -> None:
    """Each kind of bad input: exit code 2, one line naming the problem, no traceback, and the
    repository byte-identical to before."""
    repo = src_layout_repo(tmp_path / "repo")
    dirty = src_layout_repo(tmp_path / "dirty")
    write(dirty, {"src/pkg/report.py": "# edited\n"})
    (tmp_path / "plain").mkdir()
    args, expected = BAD_INPUT[case]
    paths = {"repo": repo, "dirty": dirty, "plain": tmp_path / "plain"}
    args = [a.format(**paths) if a.startswith("{") and a != "{file}" else a for a in args]
    before = {name: snapshot(p) for name, p in paths.items() if name != "plain"}

    done = run_cli(
        "refactor", *args, "--task-queue", task_queue, address=address, cache=tmp_path / "c"
    )

    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    errors = [
        line for line in done.stderr.splitlines() if line.startswith("agentparallels: error:")
    ]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert {name: snapshot(p) for name, p in paths.items() if name != "plain"} == before


def test_unreachable_explicit_address_is_a_usage_error(tmp_path: Path) -> None:
    """An explicit TEMPORAL_ADDRESS that nothing answers on: exit 2, saying what to do."""
    repo = src_layout_repo(tmp_path / "repo")
    done = run_cli(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        address=f"127.0.0.1:{free_port()}",
        cache=tmp_path / "c",
    )
    assert done.returncode == 2
    assert "cannot reach Temporal at 127.0.0.1:" in done.stderr
    assert "unset TEMPORAL_ADDRESS" in done.stderr
    assert "Traceback" not in done.stderr


def test_refactor_status_and_cancel_from_the_command_line(
    address: str, tmp_path: Path, task_queue: str, server_metrics: Callable[..., float]
) -> None:
    """`refactor` runs the job with its own worker and prints the summary; `status` reports
    the finished job; `cancel` of a finished job is refused with exit 2. The job's first
    workflow task came back with its start, and its steps with the workflow tasks that
    scheduled them, to the command's own worker (``devserver.EAGER_DISPATCH``): the server
    says so in its metrics."""
    repo = src_layout_repo(tmp_path / "repo")
    job_id = f"cli-{task_queue[-8:]}"
    done = run_cli(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=as_cents",
        "--test-cmd",
        "python -m pytest -q -p no:cacheprovider",
        "--job-id",
        job_id,
        "--task-queue",
        task_queue,
        address=address,
        cache=tmp_path / "c",
    )
    assert done.returncode == 0, done.stderr
    assert f"job {job_id} succeeded: 4 files changed in 3 modules" in done.stdout
    assert "check `python -m pytest -q -p no:cacheprovider`: passed" in done.stdout
    eager = {"workflow_eager_execution": 1, "activity_eager_execution": 3}  # plan, test, publish
    for name, least in eager.items():
        assert server_metrics(name, least, taskqueue=task_queue) >= least, name

    status = run_cli("status", job_id, address=address, cache=tmp_path / "c")
    assert status.returncode == 0, status.stderr
    assert f"on branch agentparallels/{job_id}" in status.stdout

    cancel = run_cli("cancel", job_id, address=address, cache=tmp_path / "c")
    assert cancel.returncode == 2
    assert f"job {job_id} is not running (it is completed)" in cancel.stderr

    missing = run_cli("status", "no-such-job", address=address, cache=tmp_path / "c")
    assert missing.returncode == 2
    assert "no job no-such-job" in missing.stderr


async def test_job_whose_starter_left_is_finished_by_a_later_worker(
    env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    """`refactor --detach` starts the job and exits with no worker running; a worker started
    later finishes it, and `status --follow` reports the outcome. The job is findable in the
    UI by its summary and search attributes."""
    address = env.client.service_client.config.target_host
    repo = src_layout_repo(tmp_path / "repo")
    started = run_cli(
        "refactor",
        str(repo),
        "--rename",
        "pkg.money.to_cents=c",
        "--detach",
        "--task-queue",
        task_queue,
        address=address,
        cache=tmp_path / "c",
    )
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    handle = env.client.get_workflow_handle(job_id)
    description = await handle.describe()
    assert await description.static_summary() == "Refactor repo: rename pkg.money.to_cents -> c"
    found = {p.key.name: p.value for p in description.typed_search_attributes}
    assert found["AgentJobKind"] == "refactor" and found["AgentRepository"] == str(repo)

    async with worker.build_worker(env.client, worker.WorkerOptions(task_queue=task_queue)):
        followed = await asyncio.to_thread(
            run_cli, "status", job_id, "--follow", address=address, cache=tmp_path / "c"
        )
    assert followed.returncode == 0, followed.stderr
    assert f"job {job_id} succeeded: 4 files changed" in followed.stdout

    # What the UI shows, read through a client that is not ours: the Temporal CLI.
    shown = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).parent / "temporal"),
            "workflow",
            "describe",
            "-w",
            job_id,
            "--address",
            address,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    described = json.loads(shown.stdout)
    assert described["executionConfig"]["userMetadata"]["summary"] == (
        "Refactor repo: rename pkg.money.to_cents -> c"
    )
    fields = described["workflowExecutionInfo"]["searchAttributes"]["indexedFields"]
    values = {k: json.loads(base64.b64decode(v["data"])) for k, v in fields.items()}
    assert values["AgentPhase"] == "done" and values["AgentFilesDone"] == 4
    assert values["AgentJobKind"] == "refactor" and values["AgentRepository"] == str(repo)


def test_fake_llm_command_serves_a_script(tmp_path: Path) -> None:
    """`agentparallels fake-llm` serves its script to the real OpenAI SDK until interrupted."""
    import openai

    script = tmp_path / "script.json"
    script.write_text('[{"content": "scripted hello"}]')
    with cli_process("fake-llm", "--script", str(script), stderr=None) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split("OpenAI: ")[1].split(",")[0].rstrip(")")
        client = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0, timeout=10)
        answer = client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    assert answer.choices[0].message.content == "scripted hello"
