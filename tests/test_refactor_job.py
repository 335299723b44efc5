"""The refactor job end to end on a real dev server and real repositories."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from agentparallels import worker
from agentparallels.core.events import Hook
from agentparallels.core.models import (
    WORKFLOW_TASK_TIMEOUT,
    CommandEdit,
    Limits,
    RefactorInput,
    RenameEdit,
)
from agentparallels.plugin import plugin_of
from agentparallels.replay import replayer_for
from tests.support.repos import (
    commits_touching,
    git,
    make_repo,
    snapshot,
    src_layout_repo,
    start_job,
)


def up_repo(path: Path, packages: int, per_package: int) -> Path:
    """A repository whose files all use ``typing.List`` (which the UP codemod rewrites)."""
    files = {}
    for p in range(packages):
        files[f"pkg{p}/__init__.py"] = ""
        for m in range(per_package):
            files[f"pkg{p}/mod{m}.py"] = f"""
                from typing import List


                def f{m}(xs: List[int]) -> List[int]:
                    return xs
            """
    return make_repo(path, files)


async def test_rename_across_modules_updates_src_layout_and_tests(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A rename in a src layout reaches every module and the tests, one commit per file, and
    the user's branch, index and working tree stay as they were."""
    repo = src_layout_repo(tmp_path / "repo")
    before = snapshot(repo)
    job = RefactorInput(
        repository=str(repo),
        edit=RenameEdit(old="pkg.money.to_cents", new="as_cents"),
        test_cmd="python -m pytest -q -p no:cacheprovider",
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        result = await handle.result()

    assert result.outcome == "succeeded"
    assert result.files_changed == (
        "src/pkg/money.py",
        "src/pkg/shop/cart.py",
        "src/pkg/shop/tax.py",
        "tests/test_money.py",
    )
    assert result.checks[0].passed
    branch = f"agentparallels/{handle.id}"
    assert git(repo, "show", f"{branch}:tests/test_money.py").startswith(
        "from pkg.money import as_cents"
    )
    assert "money.as_cents(amount=amount * 0.2)" in git(
        repo, "show", f"{branch}:src/pkg/shop/tax.py"
    )
    for path in result.files_changed:
        assert commits_touching(repo, branch, path) == 1
    after = snapshot(repo)
    assert set(after["refs"].splitlines()) == {
        *before["refs"].splitlines(),
        f"refs/heads/{branch} {result.head_commit}",
    }
    assert {k: v for k, v in after.items() if k != "refs"} == {
        k: v for k, v in before.items() if k != "refs"
    }


async def test_module_rename_moves_the_file_and_fixes_imports(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Renaming a module moves its file and rewrites every import of it."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(repository=str(repo), edit=RenameEdit(old="pkg.money", new="cash"))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()

    assert "src/pkg/money.py" in result.files_changed
    assert "src/pkg/cash.py" in result.files_changed
    tree = git(repo, "ls-tree", "-r", "--name-only", result.head_commit)
    assert "src/pkg/cash.py" in tree.split()
    assert "src/pkg/money.py" not in tree.split()
    assert "from pkg.cash import to_cents" in git(
        repo, "show", f"{result.head_commit}:tests/test_money.py"
    )
    assert "from pkg import cash" in git(repo, "show", f"{result.head_commit}:src/pkg/shop/tax.py")


async def test_edit_cmd_codemod_over_24_files_in_4_modules(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A per-file codemod runs on every file, sharded by module, and --apply fast-forwards the
    user's branch to the result."""
    repo = up_repo(tmp_path / "repo", packages=4, per_package=6)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="ruff check --fix --exit-zero --isolated --select UP006 {file}"),
        apply=True,
        limits=Limits(max_files_per_shard=4),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()

    assert len(result.files_changed) == 24
    assert [m.module for m in result.modules] == ["pkg0", "pkg1", "pkg2", "pkg3"]
    assert all(len(m.shards) == 2 for m in result.modules)  # 6 files, at most 4 per shard
    assert result.applied
    assert git(repo, "rev-parse", "main") == result.head_commit
    assert "def f3(xs: list[int]) -> list[int]:" in (repo / "pkg2/mod3.py").read_text()
    assert git(repo, "status", "--porcelain") == ""


async def test_parallel_bound_holds(client: Client, task_queue: str, tmp_path: Path) -> None:
    """With --parallel 2, the job's history never shows more than two children running."""
    repo = up_repo(tmp_path / "repo", packages=6, per_package=2)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="ruff check --fix --exit-zero --isolated --select UP006 {file}"),
        limits=Limits(parallel=2, max_files_per_shard=3),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        await handle.result()
    running = peak = started = 0
    async for event in handle.fetch_history_events():
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            running += 1
            started += 1
            peak = max(peak, running)
        elif event.HasField("child_workflow_execution_completed_event_attributes"):
            running -= 1
    assert started == 6
    assert peak == 2


async def test_a_job_that_sets_no_shard_size_has_one_shard_per_parallel_slot(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """48 files, --parallel 2 and no --max-files-per-shard: two shards of 24 (20 files a
    shard, the old default, would have made three), so the number of worktrees a job fills
    does not grow with the repository."""
    repo = up_repo(tmp_path / "repo", packages=4, per_package=12)
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="ruff check --fix --exit-zero --isolated --select UP006 {file}"),
        limits=Limits(parallel=2),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()
    assert len(result.files_changed) == 48
    assert sorted({s for m in result.modules for s in m.shards}) == ["00-pkg0", "01-pkg2"]


async def test_unchanged_job_creates_no_branch(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A codemod that changes nothing succeeds as "unchanged" and leaves the repository alone."""
    repo = up_repo(tmp_path / "repo", packages=1, per_package=2)
    before = snapshot(repo)
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command="true {file}"))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()
    assert (result.outcome, result.branch, result.files_changed) == ("unchanged", None, ())
    assert snapshot(repo) == before


async def test_recorded_history_replays_without_nondeterminism(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """The histories of a finished job and of its children replay against the current code."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(
        repository=str(repo), edit=RenameEdit(old="pkg.money.to_cents", new="as_cents")
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        await handle.result()
    replayer = replayer_for(plugin_of(client))
    ids = [handle.id] + [
        wf.id
        async for wf in client.list_workflows(
            f"WorkflowType='ShardWorkflow' AND WorkflowId STARTS_WITH '{handle.id}/'"
        )
    ]
    histories = [await client.get_workflow_handle(i).fetch_history() for i in ids]
    assert len(histories) >= 2
    for history in histories:
        await replayer.replay_workflow(history)


SORTED_IMPORTS = {
    "pkg/__init__.py": "",
    "pkg/money.py": """
        def to_cents(amount: float) -> int:
            return round(amount * 100)


        def b_helper() -> int:
            return 1
    """,
    "pkg/use.py": """
        from pkg.money import b_helper, to_cents


        def run() -> int:
            return to_cents(1.0) + b_helper()
    """,
}


async def test_ruff_repositories_get_imports_resorted_and_formatted(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """In a repository that configures ruff, renamed imports are re-sorted; in one that does
    not, the file is left as rope wrote it."""
    with_ruff = make_repo(tmp_path / "with", {**SORTED_IMPORTS, "ruff.toml": "line-length = 88\n"})
    without = make_repo(tmp_path / "without", SORTED_IMPORTS)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        results = [
            await (
                await start_job(
                    client,
                    task_queue,
                    RefactorInput(
                        repository=str(repo),
                        edit=RenameEdit(old="pkg.money.to_cents", new="a_cents"),
                    ),
                )
            ).result()
            for repo in (with_ruff, without)
        ]
    sorted_use = git(with_ruff, "show", f"{results[0].head_commit}:pkg/use.py")
    unsorted_use = git(without, "show", f"{results[1].head_commit}:pkg/use.py")
    assert sorted_use.startswith("from pkg.money import a_cents, b_helper\n")
    assert unsorted_use.startswith("from pkg.money import b_helper, a_cents\n")


async def test_repository_given_as_git_url(client: Client, task_queue: str, tmp_path: Path) -> None:
    """A repository named by URL is cloned, worked on through refs, and gets the job's branch;
    search attributes show the finished job."""
    repo = src_layout_repo(tmp_path / "repo")
    job = RefactorInput(
        repository=f"file://{repo}", edit=RenameEdit(old="pkg.money.to_cents", new="c")
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        result = await handle.result()
    assert git(repo, "rev-parse", f"refs/heads/agentparallels/{handle.id}") == result.head_commit
    assert git(repo, "for-each-ref", "refs/agentparallels") == ""
    attributes = {p.key.name: p.value for p in (await handle.describe()).typed_search_attributes}
    assert attributes["AgentPhase"] == "done"
    assert attributes["AgentFilesDone"] == 4


async def test_jobs_and_their_shards_get_the_short_workflow_task_timeout(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A worker killed while it holds a workflow task stalls the job for that task's timeout:
    every run the plugin's clients and workers start has the project's 5 s, not the SDK's
    10 s (the job itself, started here with no timeout given, and each shard it starts)."""
    repo = up_repo(tmp_path / "repo", packages=2, per_package=1)
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command="true {file}"))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        await handle.result()
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    children = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert children
    timeouts = [started.workflow_task_timeout.ToTimedelta()]
    timeouts += [c.workflow_task_timeout.ToTimedelta() for c in children]
    assert timeouts == [WORKFLOW_TASK_TIMEOUT] * (1 + len(children))


async def edit_steps(client: Client, job_id: str) -> dict[str, int]:
    """Edit steps each shard of the job ran, from the shards' histories."""
    counts: dict[str, int] = {}
    job = await client.get_workflow_handle(job_id).fetch_history()
    for e in job.events:
        if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
            shard = e.start_child_workflow_execution_initiated_event_attributes.workflow_id
            history = await client.get_workflow_handle(shard).fetch_history()
            counts[shard.split("/")[-1]] = sum(
                e.activity_task_scheduled_event_attributes.activity_type.name
                == "refactor.edit_files"
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
            )
    return counts


async def test_a_rename_edits_a_shard_in_one_step_unless_told_otherwise(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A rename's 31 files in one shard: one edit step (copying files from the change set is
    cheap to redo after a crash, so 20 files a step would only add steps); with
    --batch-files 10, four. A command edit's step is time-boxed: one here, two at the old
    default of 20 files a step."""
    files = {"pkg/__init__.py": "", "pkg/money.py": "def to_cents(x):\n    return x\n"}
    for m in range(30):
        files[f"pkg/use{m}.py"] = f"from pkg.money import to_cents\n\nV{m} = to_cents({m})\n"
    rename = RenameEdit(old="pkg.money.to_cents", new="as_cents")
    seen = []
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        for name, edit, batch in (
            ("default", rename, None),
            ("told", rename, 10),
            ("command", CommandEdit(command="sed -i s/to_cents/as_cents/ {file}"), None),
        ):
            repo = make_repo(tmp_path / name, files)
            job = RefactorInput(
                repository=str(repo), edit=edit, limits=Limits(parallel=1, batch_files=batch)
            )
            handle = await start_job(client, task_queue, job)
            result = await handle.result()
            assert len(result.files_changed) == 31
            seen.append(await edit_steps(client, handle.id))
    assert seen == [{"00-pkg": 1}, {"00-pkg": 4}, {"00-pkg": 1}]


async def test_a_command_edits_steps_are_time_boxed(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A command edit's step runs commands until its time box (3 s) is used up, 25 at a time,
    and the next step takes the rest: 60 files of a fast command are one step (two at the old
    50 files a step), while 30 of a command that takes 0.13 s are two (25 commands take over
    3 s), so a crashed worker redoes a few seconds of commands, not 50 files' worth. A shard
    with a pre-edit hook, which is told each step's files before it runs, keeps steps of 50."""
    from agentparallels.core.models import TIME_BOX_CHUNK
    from agentparallels.workflows.shard import STEP_SECONDS

    assert TIME_BOX_CHUNK * 0.13 > STEP_SECONDS  # the slow chunk always outlasts the box
    seen = []
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        for name, count, command, hooks in (
            ("fast", 60, "sed -i s/to_cents/as_cents/ {file}", ()),
            ("slow", 30, "sleep 0.13; sed -i s/to_cents/as_cents/ {file}", ()),
            (
                "hooked",
                60,
                "sed -i s/to_cents/as_cents/ {file}",
                (Hook(point="pre-edit", command="true"),),
            ),
        ):
            files = {"pkg/__init__.py": ""}
            for m in range(count):
                files[f"pkg/use{m}.py"] = f"V{m} = 'to_cents'\n"
            repo = make_repo(tmp_path / name, files)
            edit = CommandEdit(command=command, files=("pkg/use*.py",))
            limits = Limits(parallel=1)
            job = RefactorInput(repository=str(repo), edit=edit, limits=limits, hooks=hooks)
            handle = await start_job(client, task_queue, job)
            result = await handle.result()
            assert len(result.files_changed) == count
            seen.append(await edit_steps(client, handle.id))
    assert seen == [{"00-pkg": 1}, {"00-pkg": 2}, {"00-pkg": 2}]


async def test_a_small_rename_is_one_shard(client: Client, task_queue: str, tmp_path: Path) -> None:
    """31 files renamed with --parallel 4: one shard (a rename's shard only copies files from
    the change set, so a shard costs more than its files: a child workflow, a worktree and a
    step); the same files edited by a command make two shards of at least 20."""
    files = {"pkg/__init__.py": "", "pkg/money.py": "def to_cents(x):\n    return x\n"}
    for m in range(30):
        files[f"pkg/use{m}.py"] = f"from pkg.money import to_cents\n\nV{m} = to_cents({m})\n"
    shards = []
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        for name, edit in (
            ("rename", RenameEdit(old="pkg.money.to_cents", new="as_cents")),
            ("command", CommandEdit(command="sed -i s/to_cents/as_cents/ {file}")),
        ):
            repo = make_repo(tmp_path / name, files)
            job = RefactorInput(repository=str(repo), edit=edit, limits=Limits(parallel=4))
            result = await (await start_job(client, task_queue, job)).result()
            assert len(result.files_changed) == 31
            shards.append(sorted({s for m in result.modules for s in m.shards}))
    assert shards == [["00-pkg"], ["00-pkg", "01-pkg"]]
