"""`agentparallels agent`: every mistake in the flags is one line naming the flag, exit code 2,
no traceback and the repository untouched, before any server is asked; a good request starts
an `AgentWorkflow` that `status`, `list` and the UI can find."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from agentparallels.core import names
from agentparallels.core.agentjob import PLANNER_MARKER, AgentInput
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.agent_script import FILES, MODEL, TESTS, plan, rename_script, unit
from tests.support.cli import cli_env, run_cli, run_cli_async
from tests.support.ports import free_port
from tests.support.repos import git, make_repo, snapshot, src_layout_repo
from tests.support.waits import until

GOOD = ["--task", "rename to_cents to as_cents", "--model", "openai:gpt-4.1"]

BAD_INPUT = {
    "no task": (["{repo}", "--model", "openai:gpt-4.1"], "--task is missing"),
    "blank task": (["{repo}", "--task", "  ", "--model", "openai:m"], "--task is empty"),
    "no model": (["{repo}", "--task", "x"], "--model is missing"),
    "model without a provider": (
        ["{repo}", "--task", "x", "--model", "gpt-4"],
        "--model: model 'gpt-4' must be written provider:model",
    ),
    "unknown provider": (
        ["{repo}", "--task", "x", "--model", "mistral:large"],
        "--model: model 'mistral:large' must be written provider:model",
    ),
    "not a repository": (["{plain}", *GOOD], "is not a git repository"),
    "missing path": (["{plain}/nope", *GOOD], "does not exist"),
    "a repository without a commit": (["{empty}", *GOOD], "base ref 'HEAD' not found"),
    "a URL": (["https://example.com/r.git", *GOOD], "the agent works on a local repository"),
    "no units": (["{repo}", *GOOD, "--max-units", "0"], "argument --max-units: expected a number"),
    "too many units": (["{repo}", *GOOD, "--max-units", "33"], "--max-units 33: it must be"),
    "no parallelism": (["{repo}", *GOOD, "--parallel", "0"], "argument --parallel"),
    "no turns": (["{repo}", *GOOD, "--turns", "-1"], "argument --turns"),
    "no budget": (["{repo}", *GOOD, "--budget-tokens", "0"], "argument --budget-tokens"),
    "blank glob": (["{repo}", *GOOD, "--files", ""], "--files is empty"),
    "glob outside": (["{repo}", *GOOD, "--files", "../x/*.py"], "--files ../x/*.py: globs are"),
    "glob matching nothing": (
        ["{repo}", *GOOD, "--files", "docs/**/*.md"],
        "--files docs/**/*.md matches no tracked file",
    ),
    "blank test command": (["{repo}", *GOOD, "--test-cmd", " "], "--test-cmd is empty"),
    "bad tool format": (["{repo}", *GOOD, "--tool-format", "xml"], "argument --tool-format"),
    "bad price": (["{repo}", *GOOD, "--price", "openai:m=cheap"], "--price takes MODEL=IN,OUT"),
    "credential in the endpoint": (
        ["{repo}", *GOOD, "--base-url", "https://u:secret@proxy/v1"],
        "--base-url https://u:***@proxy/v1 carries a password",
    ),
    "sandbox paths with no sandbox": (
        # The mistake under test is widening a sandbox that is turned off (a usage error).
        ["{repo}", *GOOD, "--sandbox", "none", "--sandbox-ro", "/usr"],  # sandbox off: on purpose
        "--sandbox-ro, --sandbox-rw and --sandbox-env widen the bwrap sandbox",
    ),
    "no key for this command's worker": (
        ["{repo}", *GOOD],
        "OPENAI_API_KEY is not set",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_naming_the_flag_and_changes_nothing(case: str, tmp_path: Path) -> None:
    repo = src_layout_repo(tmp_path / "repo")
    (tmp_path / "plain").mkdir()
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "--quiet")
    paths = {"repo": repo, "plain": tmp_path / "plain", "empty": tmp_path / "empty"}
    args, expected = BAD_INPUT[case]
    args = [a.format(**paths) if a.startswith("{") else a for a in args]
    before = snapshot(repo)
    # No server listens there: a request that got past the checks would say so instead.
    env = cli_env(f"127.0.0.1:{free_port()}", cache=tmp_path / "c", drop=["OPENAI_API_KEY"])

    done = run_cli("agent", *args, env=env)

    assert done.returncode == 2, done.stderr
    assert expected in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("agentparallels:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(repo) == before


def test_an_own_endpoint_needs_no_provider_key(tmp_path: Path) -> None:
    """With --base-url the checks pass without OPENAI_API_KEY (a local server needs none): the
    command goes on to the server, which is not there."""
    repo = src_layout_repo(tmp_path / "repo")
    env = cli_env(f"127.0.0.1:{free_port()}", cache=tmp_path / "c", drop=["OPENAI_API_KEY"])
    done = run_cli(
        "agent", str(repo), *GOOD, "--base-url", "http://127.0.0.1:9/v1", env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot reach Temporal" in done.stderr and "OPENAI_API_KEY" not in done.stderr


def test_help_lists_every_flag() -> None:
    done = run_cli("agent", "--help")
    assert done.returncode == 0
    for flag in (
        "--task", "--model", "--base-url", "--tool-format", "--files", "--test-cmd",
        "--check-cmd", "--budget-tokens", "--max-units", "--parallel", "--turns", "--job-id",
        "--detach", "--no-worker", "--sandbox", "--sandbox-ro", "--price", "--task-queue",
    ):  # fmt: skip
        assert flag in done.stdout, flag
    assert "agent" in run_cli("--help").stdout


async def test_detach_starts_an_agent_job_that_status_and_list_find(
    env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    """`agent --detach --no-worker` starts the job with its input as asked, a summary and
    search attributes, and exits; with no worker serving it, `status` says so and `list
    --kind agent` finds it."""
    address = env.client.service_client.config.target_host
    repo = src_layout_repo(tmp_path / "repo")
    job_id = f"agent-cli-{task_queue[-8:]}"
    started = run_cli(
        "agent", str(repo), *GOOD, "--files", "src/**/*.py", "--test-cmd", "pytest -q",
        "--budget-tokens", "50000", "--max-units", "3", "--turns", "12", "--job-id", job_id,
        "--detach", "--no-worker", "--task-queue", task_queue,
        address=address, cache=tmp_path / "c",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == job_id
    handle = env.client.get_workflow_handle(job_id)
    try:
        desc = await handle.describe()
        assert desc.workflow_type == names.AGENT and desc.task_queue == task_queue
        assert await desc.static_summary() == "Agent on repo: rename to_cents to as_cents"
        found = {p.key.name: p.value for p in desc.typed_search_attributes}
        assert found["AgentJobKind"] == "agent" and found["AgentRepository"] == str(repo)
        history = await handle.fetch_history()
        start = history.events[0].workflow_execution_started_event_attributes
        converter = env.client.data_converter
        (job,) = await converter.decode(start.input.payloads, [AgentInput])
        assert job.task == GOOD[1] and job.model == "openai:gpt-4.1"
        assert job.files == ("src/**/*.py",) and job.test_cmd == "pytest -q"
        assert job.budget.total == 50000 and job.tool_format == "auto"
        assert (job.limits.max_units, job.limits.turns) == (3, 12)

        status = run_cli("status", job_id, address=address, cache=tmp_path / "c")
        assert status.returncode == 0, status.stderr
        assert "no worker is serving it" in status.stdout

        def listed() -> bool:  # the visibility store catches up with the start on its own time
            shown = run_cli("list", "--kind", "agent", address=address, cache=tmp_path / "c")
            return job_id in shown.stdout

        await until(listed, f"`list --kind agent` shows {job_id}", 30)
    finally:
        await handle.terminate("test over")
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED


def test_a_finished_agent_job_is_summed_up_unit_by_unit() -> None:
    """What `agent`, `status` and `cancel` print for a finished agent job: branch, files,
    each unit's files and one-line summary, the checks and the tokens."""
    from agentparallels.cli.common import outcome_summary
    from agentparallels.core.agentjob import AgentPlan, AgentResult, UnitPlan, UnitResult
    from agentparallels.core.llm import Usage
    from agentparallels.core.models import CheckRun

    unit = UnitPlan(name="rename", goal="g", scope=("src/a.py",))
    result = AgentResult(
        job_id="j",
        outcome="succeeded",
        branch="agentparallels/j",
        base_commit="b" * 40,
        head="c" * 40,
        files_changed=("src/a.py", "src/b.py"),
        plan=AgentPlan(units=(unit,)),
        units=(
            UnitResult(
                name="rename",
                head="c" * 40,
                start="b" * 40,
                files_changed=("src/a.py",),
                summary="Renamed f to g.\nMore detail.",
                turns=4,
                tool_calls=5,
            ),
        ),  # fmt: skip
        checks=(CheckRun(command="pytest -q", exit_code=0, passed=True),),
        usage=Usage(input_tokens=1200, output_tokens=300),
    )
    text = outcome_summary(result)
    assert "job j succeeded: 2 files changed by 1 unit, on branch agentparallels/j" in text
    assert "unit rename: src/a.py\n    Renamed f to g." in text and "More detail" not in text
    assert "check `pytest -q`: passed" in text
    assert "model calls: 1200 input + 300 output tokens" in text
    unchanged = result.model_copy(update={"outcome": "no_changes", "branch": None})
    assert "the units changed nothing; the repository is untouched" in outcome_summary(unchanged)


async def test_agent_runs_a_scripted_task_to_a_branch_and_events_and_graph_show_it(
    env: WorkflowEnvironment,
    tmp_path: Path,
    fake: FakeLLM,
    task_queue: str,
    server_metrics: Callable[..., float],
) -> None:
    """The whole command with its own worker: exit 0, the branch and each unit printed; then
    `events` and `graph` read the finished agent job. Its first workflow task came back with
    its start, to the command's own worker (``devserver.EAGER_DISPATCH``)."""
    address = env.client.service_client.config.target_host
    repo = make_repo(tmp_path / "repo", FILES)
    rename_script(fake)
    job_id = f"agent-e2e-{uuid.uuid4().hex[:6]}"
    where = {"address": address, "cache": tmp_path / "c"}
    done = await run_cli_async(
        "agent", str(repo), "--task", "rename old_name to new_name and test use()",
        "--model", MODEL, "--base-url", fake.openai_base_url, "--files", "pkg/*.py",
        "--files", "tests/*.py", "--test-cmd", TESTS, "--job-id", job_id,
        "--task-queue", task_queue, **where,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert server_metrics("workflow_eager_execution", 1, taskqueue=task_queue) == 1
    assert f"agentparallels/{job_id}" in done.stdout
    for name in ("rename", "callers", "new-test"):
        assert f"unit {name}:" in done.stdout
    assert "def new_name()" in git(repo, "show", f"agentparallels/{job_id}:pkg/a.py")
    events = run_cli("events", job_id, **where)
    assert events.returncode == 0, events.stderr
    assert "planned" in events.stdout and "unit_done" in events.stdout
    graph = run_cli("graph", job_id, **where)
    assert graph.returncode == 0, graph.stderr
    assert "agent.tool" in graph.stdout or "edit" in graph.stdout


async def test_a_failed_agent_job_exits_non_zero_with_the_repository_as_it_was(
    env: WorkflowEnvironment, tmp_path: Path, fake: FakeLLM
) -> None:
    address = env.client.service_client.config.target_host
    repo = make_repo(tmp_path / "repo", FILES)
    before = snapshot(repo)
    outside = plan(unit("a", ["setup.py"]))
    fake.push_thread(PLANNER_MARKER, outside, outside, outside)
    done = await run_cli_async(
        "agent", str(repo), "--task", "rename", "--model", MODEL,
        "--base-url", fake.openai_base_url, "--files", "pkg/*.py",
        address=address, cache=tmp_path / "c",
    )  # fmt: skip
    assert done.returncode not in (0, 2), done.stdout
    assert "setup.py is outside the files the job may change" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(repo) == before
