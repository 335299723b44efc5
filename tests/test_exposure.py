"""Deny by default: what a sandboxed tool command can see and read (real bwrap, real jobs).

Everything the tests plant lives under /var/tmp, outside the private /tmp every sandboxed
command gets anyway: a file there was readable before deny by default, so each test shows the
behaviour and not the /tmp mount.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels import worker
from agentparallels.activities import discovery, exposure, sandbox
from agentparallels.activities._proc import run_command
from agentparallels.core.errors import SANDBOX_DENIED
from agentparallels.core.models import CommandEdit, Limits, RefactorInput, Sandbox
from tests.support.cli import run_cli
from tests.support.repos import git, make_repo, snapshot, start_job

SECRET = "s3cret-7f1c"
TIMEOUT = 120


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (so not behind the sandbox's private /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="exposure-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def planted(outside: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A worker whose $HOME holds an SSH key, whose cache holds another job's worktree and
    whose state folder holds the server's database and the blob store, each with a secret."""
    home, cache, state = outside / "home", outside / "cache", outside / "state"
    files = {
        "ssh key": home / ".ssh" / "id_rsa",
        "other job's worktree": cache / "worktrees" / "other-job" / "s0" / "app.py",
        "server database": state / "temporal.db",
        "blob store": state / "blobs" / "ab" / "ab12",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{SECRET} {name}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(cache))
    monkeypatch.setenv("AGENTPARALLELS_STATE_DIR", str(state))
    return files


def test_home_cache_database_and_blobs_are_not_there(
    planted: dict[str, Path], outside: Path
) -> None:
    """A command that reads the planted files gets nothing (they do not exist for it), and
    reading one by name fails with SandboxDenied naming it and --sandbox-ro; unconfined, the
    same command reads every one."""
    wt = outside / "wt"
    wt.mkdir()
    names = " ".join(str(p) for p in planted.values())
    done = run_command(f"cat {names} > loot.txt 2>/dev/null; ls -A $HOME", wt, 30)
    assert done.ok, done.output
    assert (wt / "loot.txt").read_text() == "" and done.output.strip() == ""
    for path in planted.values():
        with pytest.raises(ApplicationError) as denied:
            run_command(f"cat {path}", wt, 30)
        assert denied.value.type == SANDBOX_DENIED and denied.value.non_retryable
        assert f"hides {path}" in denied.value.message
        assert f"--sandbox-ro {path}" in denied.value.message
        assert SECRET not in denied.value.message
    # For contrast: the files are there and readable to a plain process.
    off = sandbox.Policy(mode="none")  # sandbox off: the contrast
    unconfined = run_command(f"cat {names}", wt, 30, off)
    assert unconfined.output.count(SECRET) == len(planted)


async def test_an_edit_command_copying_secrets_leaves_none_on_the_branch(
    client: Client, task_queue: str, planted: dict[str, Path], outside: Path
) -> None:
    """An --edit-cmd that appends $HOME's SSH key, the server's database, the blob store and
    another job's worktree (by absolute and by relative path) to the file it edits: the job
    succeeds and its branch holds the edit and no secret."""
    repo = make_repo(outside / "repo", {"a.py": "x = 1\n"})
    other = planted["other job's worktree"]
    steal = " ".join(str(p) for p in planted.values())
    command = (
        f"cat {steal} ../../other-job/s0/app.py ~/.ssh/id_rsa >> {{file}} 2>/dev/null; "
        f"echo '# edited' >> {{file}}"
    )
    assert other.exists()
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command=command))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await asyncio.wait_for(
            (await start_job(client, task_queue, job)).result(), TIMEOUT
        )
    assert result.files_changed == ("a.py",)
    published = git(repo, "show", f"{result.branch}:a.py")
    assert published == "x = 1\n# edited"
    assert SECRET not in git(repo, "log", "-p", "--all")


def test_only_allowlisted_variables_reach_the_command(
    outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials a denylist misses (OTLP headers, a proxy with a password, a database URL, a
    Sentry DSN) are not in the command's environment; PATH, LANG, TZ are, and a sandbox HOME
    and TMPDIR; a variable named with --sandbox-env gets through, and a step's own variables
    (a hook's) always do."""
    leaks = {
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otlp-7f1c",
        "HTTPS_PROXY": "http://user:proxy-7f1c@proxy:3128",
        "DATABASE_URL": "postgres://app:db-7f1c@db/app",
        "SENTRY_DSN": "https://sentry-7f1c@sentry.example/1",
        "OPENAI_API_KEY": "sk-7f1c",
    }
    for name, value in leaks.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    wt = outside / "wt"
    wt.mkdir()

    def seen(policy: sandbox.Policy) -> dict[str, str]:
        done = run_command("env", wt, 30, policy, extra_env={"AGENTPARALLELS_HOOK": "pre-edit"})
        assert done.ok, done.output
        return dict(line.split("=", 1) for line in done.output.splitlines() if "=" in line)

    env = seen(sandbox.Policy())
    assert not set(leaks) & set(env) and "7f1c" not in str(env)
    assert env["LANG"] == "C.UTF-8" and env["TZ"] == "UTC" and env["TMPDIR"] == "/tmp"
    assert env["HOME"] == os.environ["HOME"] and sys.executable.rsplit("/", 1)[0] in env["PATH"]
    assert env["AGENTPARALLELS_HOOK"] == "pre-edit"
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {
        *exposure.ENV,
        "HOME",
        "TMPDIR",
        "AGENTPARALLELS_HOOK",
        *(k for k in env if k[:3] == "LC_"),
    }
    passed = seen(sandbox.Policy(env=("DATABASE_URL",)))
    assert passed["DATABASE_URL"] == leaks["DATABASE_URL"] and "SENTRY_DSN" not in passed


def venv_outside(root: Path) -> Path:
    """A virtual environment outside any repository, whose Python finds pytest (through a .pth
    file naming this project's environment, as an installed package would be found)."""
    venv = root / "venvs" / "tools"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    [site] = venv.glob("lib/python3*/site-packages")
    here = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    (site / "project.pth").write_text(here + "\n")
    return venv


async def test_a_test_command_from_a_venv_outside_the_repository_runs_without_flags(
    client: Client, task_queue: str, outside: Path
) -> None:
    """`--test-cmd "/abs/venv/bin/python -m pytest -q"` with the venv elsewhere on disk: the
    sandbox finds the venv (and its base interpreter) from the command itself, the tests run
    and pass, and the job succeeds."""
    venv = venv_outside(outside)
    repo = make_repo(
        outside / "repo",
        {"a.py": "x = 1\n", "test_a.py": "import a\n\ndef test_x():\n    assert a.x\n"},
    )
    test_cmd = f"{venv}/bin/python -m pytest -q -p no:cacheprovider test_a.py"
    edit = CommandEdit(command="echo '# edited' >> {file}", files=("a.py",))
    job = RefactorInput(repository=str(repo), edit=edit, test_cmd=test_cmd)
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await asyncio.wait_for(
            (await start_job(client, task_queue, job)).result(), TIMEOUT
        )
    [tests] = [c for c in result.checks if c.command == test_cmd]
    assert tests.passed, tests.output


async def test_a_command_that_needs_a_hidden_path_gets_the_flag_not_tests_failed(
    client: Client, task_queue: str, outside: Path
) -> None:
    """A test command whose interpreter the sandbox cannot find by itself (named inside a
    quoted script) exits 127: the job fails with SandboxDenied naming the interpreter and the
    --sandbox-ro that exposes its venv, not as failed tests; the repository is as before."""
    venv = venv_outside(outside)
    repo = make_repo(outside / "repo", {"a.py": "x = 1\n"})
    before = snapshot(repo)
    test_cmd = f"sh -c '{venv}/bin/python -V'"
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="echo '# edited' >> {file}"),
        test_cmd=test_cmd,
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), TIMEOUT)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == SANDBOX_DENIED
    assert cause.message.startswith(f"the sandbox hides {venv}/bin/python from `{test_cmd}`")
    assert f"(exit 127): expose it with --sandbox-ro {venv} " in cause.message
    assert "test command" not in cause.message and "tests failed" not in cause.message
    assert snapshot(repo) == before


def test_sandbox_ro_and_rw_expose_what_they_name(outside: Path) -> None:
    """A folder named with --sandbox-ro is readable and stays read-only; one named with
    --sandbox-rw is writable; neither is there without its flag."""
    data, out, wt = outside / "data", outside / "out", outside / "wt"
    for folder in (data, out, wt):
        folder.mkdir()
    (data / "input.txt").write_text("rows\n")
    with pytest.raises(ApplicationError):
        run_command(f"cat {data}/input.txt", wt, 30)
    policy = sandbox.Policy(ro=(str(data),), rw=(str(out),))
    done = run_command(f"cat {data}/input.txt > {out}/copy.txt", wt, 30, policy)
    assert done.ok, done.output
    assert (out / "copy.txt").read_text() == "rows\n"
    refused = run_command(f"touch {data}/new", wt, 30, policy)
    assert not refused.ok and "Read-only file system" in refused.output
    assert not (data / "new").exists()


async def test_sandbox_flags_reach_every_command_of_the_job(
    client: Client, task_queue: str, outside: Path
) -> None:
    """The job's Sandbox (what --sandbox-ro adds) is what its edit step runs under: the edit
    command reads the exposed file into the edited one."""
    data = outside / "data"
    data.mkdir()
    (data / "header.txt").write_text("# header\n")
    repo = make_repo(outside / "repo", {"a.py": "x = 1\n"})
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command=f"cat {data}/header.txt >> {{file}}"),
        limits=Limits(sandbox=Sandbox(ro=(str(data),))),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await asyncio.wait_for(
            (await start_job(client, task_queue, job)).result(), TIMEOUT
        )
    assert git(repo, "show", f"{result.branch}:a.py") == "x = 1\n# header"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sandbox-ro", "/no/such/place"], "--sandbox-ro /no/such/place: no such file"),
        (["--sandbox-rw", "missing-dir"], "--sandbox-rw missing-dir: no such file"),
        (["--sandbox-env", "NOT A NAME"], "--sandbox-env takes a variable name"),
        (["--sandbox-env", "HOME"], "--sandbox-env HOME: the sandbox sets HOME itself"),
        # A usage error, not a run: sandbox flags with the sandbox off are refused.
        (
            ["--sandbox", "none", "--sandbox-ro", "/usr"],  # sandbox off: refused, nothing runs
            "with --sandbox none commands see",
        ),
    ],
)
def test_bad_sandbox_flags_are_a_usage_error(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    """Each bad flag: exit 2, one line saying what is wrong, nothing started."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    done = run_cli(
        "refactor",
        str(repo),
        "--edit-cmd",
        "true {file}",
        *flags,
        address="127.0.0.1:1",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("agentparallels: error:") == 1 and "Traceback" not in done.stderr
    assert message in done.stderr


def test_the_cli_puts_the_flags_in_the_job() -> None:
    """--sandbox-ro/-rw/-env end up in the job's limits, paths absolute."""
    from agentparallels import validate

    spec = validate.sandbox_spec("bwrap", ["/usr/../usr/share"], ["."], ["DATABASE_URL"])
    assert spec == Sandbox(ro=("/usr/share",), rw=(os.getcwd(),), env=("DATABASE_URL",))
    again = validate.sandbox_spec("bwrap", ["/etc"], [], ["X"], base=spec)
    assert again.ro == ("/usr/share", "/etc") and again.env == ("DATABASE_URL", "X")
    # Parsing only: the old bare mode strings still read (recorded histories carry them).
    none = Limits.model_validate({"sandbox": "none"})  # parsing the flag only: nothing runs
    assert none.sandbox == Sandbox(mode="none")  # sandbox off: the same, as its model


def test_a_script_the_model_wrote_never_widens_the_sandbox(outside: Path) -> None:
    """A script in the working directory (an agent unit's worktree, where the model writes)
    whose #! line names a venv holding a secret: what the working directory holds is never
    followed, so the venv stays hidden (the script cannot even start) and no secret comes back;
    a plain read of it comes back as output naming the hidden path, as an agent unit's checks
    and tests run their commands (``denial_is_output``)."""
    venv = venv_outside(outside)
    (venv / "secret.txt").write_text(SECRET)
    workdir = outside / "wd"
    workdir.mkdir()
    script = workdir / "leak.py"
    script.write_text(f"#!{venv}/bin/python\nprint(open('{venv}/secret.txt').read())\n")
    script.chmod(0o755)
    with pytest.raises(ApplicationError) as denied:
        run_command("./leak.py", workdir, 60, denial_is_output=True)
    assert (
        denied.value.type == SANDBOX_DENIED and f"hides {venv}/bin/python" in denied.value.message
    )
    assert SECRET not in denied.value.message
    done = run_command(
        f"python3 -c \"print(open('{venv}/secret.txt').read())\"",
        workdir,
        60,
        denial_is_output=True,
    )
    assert done.exit_code == 1 and SECRET not in done.output
    assert f"[the sandbox hides {venv}/secret.txt from" in done.output


def test_a_workdir_holding_the_workers_own_files_is_refused(
    planted: dict[str, Path], outside: Path
) -> None:
    """A tool's working directory is mounted writable, so one that holds the worker's cache
    (other jobs' worktrees) or $HOME is refused before anything runs."""
    with pytest.raises(ApplicationError) as refused:
        run_command("cat cache/worktrees/*/*/app.py", outside, 60)
    assert refused.value.type == SANDBOX_DENIED
    assert f"the working directory {outside} holds" in refused.value.message
    assert SECRET not in refused.value.message


def test_the_tools_a_command_names_are_found(outside: Path) -> None:
    """First words after env and VAR=value, on PATH, through symlinks, and a script's
    interpreter through `#!/usr/bin/env`: each venv is found with its base interpreter."""
    assert discovery.first_words("A=1 env -u X B=2 pytest -q | tee log && ./x 2>/dev/null") == [
        "pytest",
        "tee",
        "./x",
    ]
    venv = venv_outside(outside)
    bindir = outside / "bin"
    bindir.mkdir()
    (bindir / "py").symlink_to(venv / "bin" / "python")
    (bindir / "tool").write_text("#!/usr/bin/env python\nprint('tool')\n")
    (bindir / "tool").chmod(0o755)
    path_env = f"{bindir}:{venv}/bin:/usr/bin:/bin"
    base = os.path.realpath(sys.base_prefix)
    for command in ("py -V", "FOO=1 env tool --x"):
        found = discovery.tools(command, str(outside / "wt"), path_env, os.environ["HOME"])
        assert str(venv) in found and base in {os.path.realpath(p) for p in found}, found
    assert discovery.tools("./tool", str(bindir), path_env, os.environ["HOME"]) == []
    # A venv at the top (as in many images) is mounted whole; a top-level folder, $HOME or a
    # folder holding it never is.
    home = os.environ["HOME"]
    assert discovery._exposable("/venv", home, unit=True)
    assert not any(discovery._exposable(p, home) for p in ("/work", home, "/", "/venv"))


async def test_git_works_in_a_jobs_worktree_and_sees_only_its_own(
    client: Client, task_queue: str, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a shard's worktree (a linked worktree of the worker's cached clone) an edit command
    runs git: the repository parts git reads are there, read-only; the clone's other
    worktrees and the URLs it fetched from are not."""
    monkeypatch.setenv("AGENTPARALLELS_CACHE_DIR", str(outside / "cache"))
    repo = make_repo(outside / "repo", {"a.py": "x = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    command = (
        'echo "# $(git rev-parse HEAD) $(git log -1 --format=%s)" >> {file}; '
        "d=$(git rev-parse --git-common-dir); ls $d/worktrees | wc -l >> {file}; "
        "test -e $d/FETCH_HEAD && echo '# fetch head' >> {file}; true"
    )
    job = RefactorInput(repository=str(repo), edit=CommandEdit(command=command))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await asyncio.wait_for(
            (await start_job(client, task_queue, job)).result(), TIMEOUT
        )
    assert git(repo, "show", f"{result.branch}:a.py") == f"x = 1\n# {base} initial\n1"


def test_a_worker_without_an_exposed_path_refuses_the_step(outside: Path) -> None:
    """A job's --sandbox-ro path that this worker lacks (a worker on another machine) fails
    the step with SandboxUnavailable naming it, instead of running without it."""
    from agentparallels.core.errors import SANDBOX_UNAVAILABLE

    gone = outside / "gone"
    with pytest.raises(ApplicationError) as refused:
        run_command("true", outside, 30, sandbox.Policy(ro=(str(gone),)))
    assert refused.value.type == SANDBOX_UNAVAILABLE and refused.value.non_retryable
    assert f"--sandbox-ro {gone}: no such path on the worker" in refused.value.message


def test_the_flags_of_refactor_and_resume_reach_the_job(
    client: Client, outside: Path, tmp_path: Path
) -> None:
    """`refactor --sandbox-ro A` whose edit command also reads B fails, exit 1, the reason
    naming B and `--sandbox-ro B`; `resume --sandbox-ro B` keeps A, adds B, and succeeds."""
    a, b = outside / "a", outside / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "line.txt").write_text(f"# from {folder.name}\n")
    repo = make_repo(outside / "repo", {"m.py": "x = 1\n"})
    cli = partial(run_cli, address=client, cache=tmp_path, timeout=300, cwd=tmp_path)

    edit = f"cat {a}/line.txt {b}/line.txt >> {{file}}"
    job_id = f"exposure-{os.getpid()}-{tmp_path.name}"[:60]
    first = cli(
        "refactor",
        str(repo),
        "--edit-cmd",
        edit,
        "--sandbox-ro",
        str(a),
        "--job-id",
        job_id,
        "--task-queue",
        f"q-{job_id}",
    )
    assert first.returncode == 1, first.stderr
    assert f"the sandbox hides {b}/line.txt from" in first.stderr
    assert f"--sandbox-ro {b}/line.txt" in first.stderr
    again = cli("resume", job_id, "--sandbox-ro", str(b))
    assert again.returncode == 0, again.stderr
    assert git(repo, "show", f"agentparallels/{job_id}:m.py") == "x = 1\n# from a\n# from b"


def test_only_the_needed_parts_of_etc_are_there(outside: Path) -> None:
    """Of /etc a command sees only what name resolution, locale, certificates and the loader
    read: not /etc/shadow, nor anything else the host keeps there."""
    done = run_command("ls -A /etc", outside, 30)
    assert done.ok, done.output
    allowed = {p.split("/")[0].rstrip("*") for p in exposure.ETC}
    assert {e for e in done.output.split() if not any(e.startswith(a) for a in allowed)} == set()
    assert "passwd" in done.output.split() and "ssl" in done.output.split()
    with pytest.raises(ApplicationError) as denied:
        run_command("cat /etc/shadow", outside, 30)
    assert denied.value.type == SANDBOX_DENIED


def test_a_git_file_written_by_a_command_exposes_nothing(
    planted: dict[str, Path], outside: Path
) -> None:
    """An agent's working folder is the command's to write: a ``.git`` file there naming the
    worker's $HOME must not get $HOME mounted for the next command (only a worktree of the
    worker's own clones has its git parts exposed)."""
    home = planted["ssh key"].parent.parent
    workdir = outside / "workdir"
    workdir.mkdir()
    (workdir / ".git").write_text(f"gitdir: {home}\n")
    done = run_command(f"cat {planted['ssh key']} > loot.txt 2>/dev/null; true", workdir, 30)
    assert done.ok, done.output
    assert (workdir / "loot.txt").read_text() == ""
    mounts = exposure.view(workdir, "true", os.environ).mounts
    assert not any(m.kind != "tmpfs" and str(home) in m.path for m in mounts)  # an empty HOME


def test_a_failing_command_that_only_prints_a_host_path_is_not_blamed_on_the_sandbox(
    planted: dict[str, Path], outside: Path
) -> None:
    """A test that fails and prints a host path in its message failed on its own; only a line
    saying the path could not be had (no such file, permission denied) names the sandbox."""
    wt = outside / "wt"
    wt.mkdir()
    key = planted["ssh key"]
    done = run_command(f"echo 'assert config == {key}'; exit 1", wt, 30)
    assert not done.ok and f"assert config == {key}" in done.output
