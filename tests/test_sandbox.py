"""Tool commands run in the bubblewrap sandbox: real bwrap, real commands, real limits."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels import validate, worker
from agentparallels.activities import sandbox
from agentparallels.activities._proc import run_command
from agentparallels.core.errors import SANDBOX_DENIED, SANDBOX_UNAVAILABLE, UsageError
from agentparallels.core.models import CommandEdit, RefactorInput
from tests.support.cli import cli_env, run_cli
from tests.support.repos import git, make_repo, snapshot, start_job

BWRAP = sandbox.Policy()
NONE = sandbox.Policy(mode="none")  # sandbox off: the baseline tests compare with


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    path = tmp_path / "wt"
    path.mkdir()
    return path


def test_this_machine_can_build_the_sandbox() -> None:
    """The suite runs with bwrap installed and usable (make installs it)."""
    assert sandbox.problem("bwrap") is None


def test_the_worktree_is_writable_and_output_returned(wt: Path) -> None:
    """A command writes in its worktree and its output comes back."""
    done = run_command("echo made > new.txt && cat new.txt && pwd", wt, 30, BWRAP)
    assert done.ok, done.output
    assert done.output.split() == ["made", str(wt)]
    assert (wt / "new.txt").read_text() == "made\n"


def test_writes_outside_the_worktree_reach_nothing(wt: Path) -> None:
    """A write to $HOME lands in the command's own empty $HOME and is gone with it; a write
    to the project's folder fails, that folder not being there, with SandboxDenied naming it;
    unconfined, the same write to $HOME succeeds."""
    victim = Path.home() / f"escape-{uuid.uuid4().hex}"
    assert run_command(f"echo pwned > {victim} && cat {victim}", wt, 30, BWRAP).ok
    assert not victim.exists()
    project = Path(__file__).parent
    with pytest.raises(ApplicationError) as denied:
        run_command(f"echo pwned > {project}/escape.txt", wt, 30, BWRAP)
    assert denied.value.type == SANDBOX_DENIED and f"hides {project} " in denied.value.message
    assert not (project / "escape.txt").exists()
    try:
        # Unconfined baseline: the same command does write there without the sandbox.
        assert run_command(f"echo pwned > {victim}", wt, 30, NONE).ok  # sandbox off: the baseline
        assert victim.exists()
    finally:
        victim.unlink(missing_ok=True)


def test_tmp_is_private(wt: Path, tmp_path: Path) -> None:
    """The command's /tmp is its own: the worker's temporary files are not there."""
    (tmp_path / "worker-secret.txt").write_text("s3cret")
    with pytest.raises(ApplicationError) as denied:
        run_command(f"cat {tmp_path / 'worker-secret.txt'}", wt, 30, BWRAP)
    assert "s3cret" not in denied.value.message


def test_tools_installed_under_tmp_stay_visible_and_read_only(
    wt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool the command names, found on PATH in a folder under /tmp (a project checked out
    there): the private /tmp does not hide it, and its folder stays read-only."""
    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    (tools / "mytool").write_text("#!/bin/sh\necho tool ran\n")
    (tools / "mytool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    done = run_command("mytool && touch $(command -v mytool).new", wt, 30, BWRAP)
    assert "tool ran" in done.output
    assert not done.ok and "Read-only file system" in done.output
    assert not (tools / "mytool.new").exists()


def test_no_network_not_even_loopback(wt: Path) -> None:
    """A connection to a listener the test opens on 127.0.0.1 fails inside the sandbox, and the
    listener never sees it; unconfined, the same command connects."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        connect = f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('connected')\""  # noqa: E501
        done = run_command(connect, wt, 30, BWRAP)
        assert not done.ok
        assert "ConnectionRefusedError" in done.output or "Network is unreachable" in done.output
        with pytest.raises(BlockingIOError):
            server.accept()
        # Unconfined baseline: the server is reachable, so the sandbox is what refused above.
        unconfined = run_command(connect, wt, 30, NONE)  # sandbox off: the baseline to contrast
        assert unconfined.output.strip() == "connected"
        server.accept()[0].close()


def test_secrets_are_kept_from_the_command(wt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """API keys and tokens in the worker's environment are not visible; PATH, HOME and LANG are
    (tests/test_exposure.py shows the allowlist in full)."""
    secrets = {
        "OPENAI_API_KEY": "sk-openai-test",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "AWS_ACCESS_KEY_ID": "AKIATEST",
        "DEPLOY_TOKEN": "tok-test",
        "DB_PASSWORD": "pw-test",
        "CLIENT_SECRET": "secret-test",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    done = run_command("env", wt, 30, BWRAP)
    assert done.ok
    seen = dict(line.split("=", 1) for line in done.output.splitlines() if "=" in line)
    assert not set(secrets) & set(seen)
    assert not any(value in done.output for value in secrets.values())
    assert (
        seen["LANG"] == "C.UTF-8"
        and seen["HOME"]
        and sys.executable.rsplit("/", 1)[0] in (seen["PATH"])
    )
    # Unconfined baseline: the key is in the worker's environment; the sandbox dropped it.
    assert "sk-openai-test" in run_command("env", wt, 30, NONE).output  # sandbox off: baseline


def test_a_fork_bomb_is_stopped_by_the_process_limit(wt: Path) -> None:
    """A shell fork bomb runs into the process cap, ends on its own long before its time limit,
    and is reported as stopped; nothing of it is left running. (The shell stays a few seconds
    after starting it: its first generation exits at once, and a shell that ended with it
    took the bomb down with the sandbox before the cap was reached, on a fast scheduling.)"""
    policy = sandbox.Policy(processes=32)
    started = time.monotonic()
    done = run_command("bomb() { bomb | bomb & }; bomb; sleep 5; wait", wt, 60, policy)
    assert time.monotonic() - started < 30 and not done.timed_out
    assert not done.ok and done.limited
    assert "[sandbox: the process limit (32) refused" in done.output


FORKER = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print("forks", n, e.errno)
"""


def test_forks_beyond_the_limit_fail_and_nothing_outlives_the_command(wt: Path) -> None:
    """Forking in a loop gets fewer children than the cap; the sleeping children are killed
    with the command (its pid namespace ends with it) instead of holding it open."""
    (wt / "forker.py").write_text(FORKER)
    started = time.monotonic()
    done = run_command(f"{sys.executable} forker.py", wt, 50, sandbox.Policy(processes=32))
    assert time.monotonic() - started < 30
    word, count, errno = done.output.split("\n")[0].split()
    assert word == "forks" and int(count) < 32 and errno == "11"  # EAGAIN
    assert done.limited


def test_memory_is_capped(wt: Path) -> None:
    """A process that allocates more than the memory limit gets a MemoryError."""
    grab = f"{sys.executable} -c 'b = bytearray(512 * 2**20); print(len(b))'"
    done = run_command(grab, wt, 60, sandbox.Policy(memory_mb=256))
    assert not done.ok and "MemoryError" in done.output
    assert run_command(grab, wt, 60, sandbox.Policy(memory_mb=2048)).ok


def test_cpu_time_is_capped(wt: Path) -> None:
    """A busy loop is killed by the CPU limit (SIGXCPU), well within its wall-clock limit."""
    done = run_command("while :; do :; done", wt, 60, sandbox.Policy(cpu_s=1))
    assert not done.ok and not done.timed_out
    assert done.exit_code != 0


def test_missing_bwrap_fails_closed_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without bwrap on PATH, the CLI's check and the activity's both refuse, saying how to
    install it or opt out; --sandbox none is accepted."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no bwrap, no prlimit
    with pytest.raises(UsageError) as refused:
        validate.sandbox("bwrap")
    message = str(refused.value)
    assert "bubblewrap (bwrap), not on PATH" in message
    assert "apt-get install bubblewrap" in message and "--sandbox none" in message
    with pytest.raises(ApplicationError) as failed:
        run_command("true", tmp_path, 30, BWRAP)
    assert failed.value.type == SANDBOX_UNAVAILABLE and failed.value.non_retryable
    validate.sandbox("none")  # the opt-out the message names is still accepted without bwrap


async def test_a_job_whose_codemod_writes_outside_the_worktree_fails_and_changes_nothing(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """An --edit-cmd that also writes to $HOME and to the user's repository: the first write
    lands in the sandbox's own $HOME, the second finds no repository there; the job fails
    with SandboxDenied naming the repository's file, and the repository is exactly as
    before."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    before = snapshot(repo)
    victim = Path.home() / f"escape-{uuid.uuid4().hex}"
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(
            command=f"echo '# edited' >> {{file}} && echo pwned > {victim} && "
            f"echo '# pwned' >> {repo}/a.py"
        ),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == SANDBOX_DENIED
    assert f"the sandbox hides {repo}/a.py from" in cause.message
    assert f"--sandbox-ro {repo}/a.py" in cause.message
    assert not victim.exists()
    assert snapshot(repo) == before


def test_the_cli_refuses_a_sandboxed_job_without_bwrap(tmp_path: Path) -> None:
    """`agentparallels refactor` on a machine without bwrap (a PATH holding only git): exit 2,
    one line with the install hint and the opt-out, and the repository untouched."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    before = snapshot(repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")
    env = cli_env("127.0.0.1:1", PATH=str(bin_dir))
    done = run_cli("refactor", str(repo), "--edit-cmd", "true {file}", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("agentparallels: error:") == 1 and "Traceback" not in done.stderr
    assert "bubblewrap (bwrap), not on PATH" in done.stderr
    assert "apt-get install bubblewrap" in done.stderr and "--sandbox none" in done.stderr
    assert snapshot(repo) == before


FORK_AS_USER = """
import json, sys
from pathlib import Path
from agentparallels.activities import sandbox
from agentparallels.activities._proc import run_command
done = run_command(sys.argv[2] + " forker.py", Path(sys.argv[1]), 50, sandbox.Policy(processes=32))
print(json.dumps({"output": done.output, "problem": sandbox.problem()}))
"""


def test_a_non_root_worker_caps_processes_with_rlimit_nproc() -> None:
    """A worker that is not root has no pids cgroup: RLIMIT_NPROC, counted in the sandbox's own
    user namespace, stops a fork loop there too. (Run as root, the test runs that worker as
    ``nobody`` with setpriv.)"""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-nobody-"))  # pytest's tmp is root-only
    try:
        (folder / "forker.py").write_text(FORKER)
        os.chmod(folder, 0o777)
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        # An interpreter ``nobody`` may run inside the sandbox (this one may live under /root).
        inner = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        run = subprocess.run(
            [
                *(user if os.geteuid() == 0 else []),
                sys.executable,
                "-c",
                FORK_AS_USER,
                str(folder),
                inner,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=folder,
        )
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["problem"] is None
        word, count, errno = report["output"].split("\n")[0].split()
        assert word == "forks" and int(count) <= 32 and errno == "11"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_git_works_but_the_worktree_cannot_be_pointed_elsewhere(tmp_path: Path) -> None:
    """In a linked worktree (as the job uses), git reads its repository inside the sandbox, but
    the ``.git`` file cannot be rewritten or removed: a command cannot point the worker's own
    later git commands at a repository of its making."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    git(repo, "worktree", "add", "--quiet", "--detach", str(tmp_path / "linked"))
    linked = tmp_path / "linked"
    pointer = (linked / ".git").read_text()
    listed = run_command("git ls-files", linked, 30, BWRAP)
    assert listed.ok and listed.output.strip() == "a.py", listed.output
    for attack in ("echo 'gitdir: /tmp/evil' > .git", "rm -f .git", "mv .git moved"):
        done = run_command(attack, linked, 30, BWRAP)
        assert not done.ok, attack
    assert (linked / ".git").read_text() == pointer


async def test_a_worker_without_bwrap_fails_the_job_closed(
    client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that cannot build the sandbox (PATH without bwrap) refuses the edit step before
    running anything, without retrying; the job fails and the repository is as before."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    before = snapshot(repo)
    marker = tmp_path / "ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")
    monkeypatch.setenv("PATH", str(bin_dir))
    job = RefactorInput(
        repository=str(repo), edit=CommandEdit(command=f"touch {marker}; echo >> {{file}}")
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(client, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    cause = failure.value.cause
    while cause.__cause__ is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    assert isinstance(cause, ApplicationError) and cause.type == SANDBOX_UNAVAILABLE
    assert "apt-get install bubblewrap" in cause.message
    assert "--sandbox none" in cause.message
    assert not marker.exists()
    assert snapshot(repo) == before
