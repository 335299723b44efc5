"""The sidecar sandbox around every tool command (codemods, checks, tests, ruff).

Under the ``bwrap`` policy a command runs in bubblewrap: the whole file system read-only except
the worktree, a private ``/tmp``, its own network namespace (no network, not even the host's
loopback), its own pid namespace (nothing it starts outlives it), no capabilities, and an
environment without secrets. Resource limits come on top: CPU seconds and memory per process
(``prlimit``), and a cap on processes. The process cap is a pids cgroup when the worker runs as
root (the kernel never applies ``RLIMIT_NPROC`` to root), and ``RLIMIT_NPROC`` otherwise.

A machine that cannot build this sandbox is refused up front (fail closed): see :func:`problem`.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from temporalio.exceptions import ApplicationError

from agentparallels._value import SandboxMode
from agentparallels.errors import SANDBOX_UNAVAILABLE

INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap` or "
    "`pacman -S bubblewrap`)"
)
OPT_OUT = "or run the job with --sandbox none to run tool commands unconfined"

SECRET = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION"
    r"|^(AWS|OPENAI|ANTHROPIC|AZURE|GOOGLE|GCP|GH|GITHUB|HF|HUGGING)_",
    re.I,
)
"""Environment variables that look like secrets, kept from sandboxed commands."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How a tool command is confined."""

    mode: SandboxMode = "bwrap"
    """``bwrap``: in the sandbox; ``none``: as a plain child process of the worker."""
    cpu_s: int = 900
    """CPU seconds each process of the command may use (RLIMIT_CPU)."""
    memory_mb: int = 4096
    """Heap (data segment) each process may allocate, in MiB (RLIMIT_DATA)."""
    processes: int = 256
    """Processes and threads the command may have at once."""


DEFAULT = Policy()


def scrubbed(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the variables that look like credentials."""
    return {k: v for k, v in env.items() if not SECRET.search(k)}


_cgroup_lock = threading.Lock()


def _pids_cgroup_base() -> Path | None:
    """A folder of the pids cgroup hierarchy this process may create child cgroups in."""
    with _cgroup_lock:
        return _find_pids_cgroup_base()


@functools.cache
def _find_pids_cgroup_base() -> Path | None:
    candidates = [Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")]
    for root in candidates:
        try:
            if root.name != "pids":  # cgroup v2: the controller must be delegated downwards
                if "pids" not in (root / "cgroup.controllers").read_text().split():
                    continue
                (root / "cgroup.subtree_control").write_text("+pids")
            base = root / "agentparallels"
            base.mkdir(exist_ok=True)
            if root.name != "pids":
                (base / "cgroup.subtree_control").write_text("+pids")
            for stale in base.glob("cmd-*"):  # left by a worker that died mid-command
                if not Path(f"/proc/{stale.name.split('-')[1]}").exists():
                    with suppress(OSError):
                        stale.rmdir()
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            ok = (probe / "pids.max").exists()
            probe.rmdir()
            if ok:
                return base
        except OSError:
            continue
    return None


_counter = itertools.count()


@dataclass
class Jail:
    """One confined run: the command line to start, its environment, and its cleanup."""

    argv: list[str]
    env: dict[str, str]
    policy: Policy
    cgroup: Path | None = None

    def refused_forks(self) -> int:
        """Forks the process limit refused (counted by the pids cgroup only)."""
        if self.cgroup is None:
            return 0
        try:
            events = (self.cgroup / "pids.events").read_text().split()
            return int(events[events.index("max") + 1])
        except (OSError, ValueError, IndexError):
            return 0

    def notes(self, refused: int) -> str:
        """What the sandbox stopped, for the command's report ('' when nothing)."""
        if not refused:
            return ""
        return f"[sandbox: the process limit ({self.policy.processes}) refused {refused} forks]"

    def reap(self) -> None:
        """Kill whatever is left of the command and remove its cgroup."""
        if self.cgroup is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pids = (self.cgroup / "cgroup.procs").read_text().split()
            except OSError:
                return
            if not pids:
                break
            for pid in pids:
                with suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.01)
        with suppress(OSError):
            self.cgroup.rmdir()


def _bwrap_argv(bwrap: str, policy: Policy, cwd: Path, command: str) -> list[str]:
    wt = cwd.resolve()
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for tools in _tool_dirs():  # read-only again where the private /tmp would hide them
        argv += ["--ro-bind-try", str(tools), str(tools)]
    git = _git_dir(wt)
    if git is not None:  # a linked worktree's repository, maybe hidden by the private /tmp
        argv += ["--ro-bind-try", str(git), str(git)]
    argv += ["--bind", str(wt), str(wt)]
    # Read-only, so that no command can point the worktree at another repository (whose
    # config or hooks the worker's own git commands would then run, outside the sandbox).
    argv += ["--ro-bind-try", str(wt / ".git"), str(wt / ".git")]
    return [*argv, "--chdir", str(wt), "--", "/bin/sh", "-c", command]


def _tool_dirs() -> list[Path]:
    """This Python's environments and the PATH's folders that live under /tmp (a project, and
    so its virtual environment with ruff, checked out there), which commands must still see."""
    found: list[Path] = []
    for entry in (sys.prefix, sys.base_prefix, *os.environ.get("PATH", "").split(os.pathsep)):
        if not entry:
            continue
        path = Path(entry).resolve()
        if path.is_relative_to("/tmp") and path != Path("/tmp") and path not in found:
            found.append(path)
    return found


def _git_dir(wt: Path) -> Path | None:
    """The common git folder of a linked worktree (``.git`` is a file naming it)."""
    dot = wt / ".git"
    if not dot.is_file():
        return None
    text = dot.read_text(errors="replace").strip()
    if not text.startswith("gitdir:"):
        return None
    own = Path(text.removeprefix("gitdir:").strip())
    common = own / "commondir"
    if common.is_file():
        return (own / common.read_text().strip()).resolve()
    return own


def _tasks_of(uid: int) -> int:
    """Tasks (processes and threads) of ``uid`` on this machine: RLIMIT_NPROC counts them all."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with suppress(OSError, ValueError, IndexError):
            text = status.read_text()
            if int(text.split("\nUid:", 1)[1].split()[0]) == uid:
                count += int(text.split("\nThreads:", 1)[1].split()[0])
    return count


@contextmanager
def jail(policy: Policy, command: str, cwd: Path, env: dict[str, str]) -> Iterator[Jail]:
    """The command line and environment that run ``command`` in ``cwd`` under ``policy``."""
    if policy.mode == "none":
        yield Jail(["/bin/sh", "-c", command], env, policy)
        return
    require(policy.mode)
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    assert bwrap and prlimit  # checked by require()
    inner = {**scrubbed(env), "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache"}
    limits = [prlimit, f"--cpu={policy.cpu_s}", f"--data={policy.memory_mb * 2**20}"]
    cgroup = None
    if os.geteuid() == 0:
        base = _pids_cgroup_base()
        assert base is not None  # checked by require()
        cgroup = base / f"cmd-{os.getpid()}-{next(_counter)}"
        cgroup.mkdir()
        (cgroup / "pids.max").write_text(str(policy.processes))
        # The shell joins the cgroup, then becomes the sandbox: everything after is counted.
        join = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs")]
    else:
        join = []
        limits.append(f"--nproc={_tasks_of(os.geteuid()) + policy.processes}")
    confined = Jail([*join, *limits, "--", *_bwrap_argv(bwrap, policy, cwd, command)], inner,
                    policy, cgroup)  # fmt: skip
    try:
        yield confined
    finally:
        confined.reap()


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str | None, prlimit: str | None, root: bool) -> str | None:
    host = socket.gethostname()
    if bwrap is None:
        return f"the sandbox needs bubblewrap (bwrap), not on PATH on {host}: {INSTALL_HINT}"
    if prlimit is None:
        return f"the sandbox needs prlimit (util-linux), which is not on PATH on {host}"
    if root and _pids_cgroup_base() is None:
        return (
            f"the worker runs as root on {host}, where only a pids cgroup can cap a command's "
            "processes, and no writable pids cgroup was found: run the worker as a non-root "
            "user, or give it a writable /sys/fs/cgroup"
        )
    with tempfile.TemporaryDirectory(prefix="agentparallels-probe-") as tmp:
        try:
            done = subprocess.run(
                _bwrap_argv(bwrap, Policy(), Path(tmp), "touch probe"),
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bubblewrap cannot be run on {host}: {e}"
        if done.returncode != 0 or not (Path(tmp) / "probe").exists():
            said = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return (
                f"bubblewrap cannot build its sandbox on {host} ({said}); it needs user "
                "namespaces (kernel.unprivileged_userns_clone=1, and on Ubuntu an AppArmor "
                "profile for bwrap or kernel.apparmor_restrict_unprivileged_userns=0)"
            )
    return None


def problem(mode: SandboxMode = "bwrap") -> str | None:
    """Why tool commands cannot run under ``mode`` on this machine, or None when they can."""
    if mode == "none":
        return None
    return _probe(shutil.which("bwrap"), shutil.which("prlimit"), os.geteuid() == 0)


def require(mode: SandboxMode) -> None:
    """Fail closed: a non-retryable error, before anything is changed, if ``mode`` cannot be
    honoured on this worker."""
    why = problem(mode)
    if why:
        raise ApplicationError(f"{why}; {OPT_OUT}", type=SANDBOX_UNAVAILABLE, non_retryable=True)
