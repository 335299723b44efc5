"""The sidecar sandbox around every tool command (codemods, checks, tests, ruff).

Under the ``bwrap`` policy a command runs in bubblewrap, deny by default: it sees only the
system, its worktree (writable), a private ``/tmp``, an empty ``$HOME``, and the tools it names
(:mod:`activities.exposure` lists exactly what), in its own network namespace (no network, not
even the host's loopback) and pid namespace (nothing it starts outlives it), without
capabilities, and with an allowlisted environment (no keys, tokens, proxies or DSNs). A command
that fails on a path the sandbox hides raises ``SandboxDenied`` naming the path and the flag
that exposes it (:meth:`Jail.denied`). Resource limits come on top: CPU seconds and memory per
process (``prlimit``), and a cap on processes. The process cap is a pids cgroup when the worker
runs as root (the kernel never applies ``RLIMIT_NPROC`` to root), and ``RLIMIT_NPROC``
otherwise.

A machine that cannot build this sandbox is refused up front (fail closed): see :func:`problem`.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from temporalio.exceptions import ApplicationError

from agentparallels.activities import discovery, exposure
from agentparallels.core._value import Sandbox, SandboxMode
from agentparallels.core.errors import SANDBOX_DENIED, SANDBOX_UNAVAILABLE

INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap` or "
    "`pacman -S bubblewrap`)"
)
OPT_OUT = "or run the job with --sandbox none to run tool commands unconfined"


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
    ro: tuple[str, ...] = ()
    """More host paths the command may read (``--sandbox-ro``)."""
    rw: tuple[str, ...] = ()
    """More host paths the command may read and write (``--sandbox-rw``)."""
    env: tuple[str, ...] = ()
    """More variables of the worker's environment the command gets (``--sandbox-env``)."""

    @classmethod
    def of(cls, spec: Sandbox) -> Policy:
        """The policy of a job's ``Sandbox`` (its mode and what its flags add)."""
        return cls(mode=spec.mode, ro=spec.ro, rw=spec.rw, env=spec.env)


DEFAULT = Policy()


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
    view: exposure.View | None = None
    """What the command sees (None: unconfined, it sees everything)."""

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

    def denied(
        self, command: str, cwd: Path, exit_code: int, output: str
    ) -> ApplicationError | None:
        """For a failed command: a ``SandboxDenied`` error naming the paths the sandbox hid from
        it (named in its output, or its own programs when it exited 126 or 127) and the flag
        that exposes them; None when the sandbox is not what it ran into."""
        if self.view is None or exit_code == 0:
            return None
        path_env = self.env.get("PATH", "")
        hidden = exposure.denied(self.view, command, cwd, path_env, output, exit_code)
        if not hidden:
            return None
        flags = " ".join(dict.fromkeys(f"--sandbox-ro {exposure.exposing(p)}" for p in hidden))
        tail = "\n".join(output.strip().splitlines()[-5:])
        return ApplicationError(
            f"the sandbox hides {', '.join(hidden)} from `{command}` (exit {exit_code}): "
            f"expose it with {flags} (--sandbox-rw to let it write there), or run the job "
            f"with --sandbox none\n{tail}",
            type=SANDBOX_DENIED,
            non_retryable=True,
        )

    def reap(self) -> None:
        """Kill whatever is left of the command and remove its cgroup."""
        if self.cgroup is None:
            return
        deadline, pause = time.monotonic() + 5, 0.001
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
            # Most often what is left is the sandbox's own processes, gone within a
            # millisecond: every tool command waits for this, so look again soon at first.
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        with suppress(OSError):
            self.cgroup.rmdir()


def _bwrap_argv(bwrap: str, view: exposure.View, cwd: Path, command: str) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL"]
    argv += view.args()
    return [*argv, "--chdir", str(cwd.resolve()), "--", "/bin/sh", "-c", command]


def _refuse(message: str, kind: str = SANDBOX_DENIED) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def _check(policy: Policy, cwd: Path, home: str) -> None:
    """Refuse what would widen the sandbox by accident: a working directory that holds
    ``$HOME`` or the worker's own folders (it is mounted writable), or an added path this
    worker does not have."""
    wt = cwd.resolve()
    for guarded in (Path(home), *discovery.private()):
        if guarded.is_relative_to(wt) and guarded.exists():
            raise _refuse(
                f"the working directory {wt} holds {guarded}, which tool commands must not "
                "see: run them in a folder of their own (a project, a scratch folder)"
            )
    host = socket.gethostname()
    for flag, paths in (("--sandbox-ro", policy.ro), ("--sandbox-rw", policy.rw)):
        for path in paths:
            if not os.path.exists(path):
                raise _refuse(
                    f"{flag} {path}: no such path on the worker {host}", SANDBOX_UNAVAILABLE
                )


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
def jail(
    policy: Policy,
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
    *,
    needs: str | None = None,
) -> Iterator[Jail]:
    """The command line and environment that run ``command`` in ``cwd`` under ``policy``:
    of the worker's ``env`` only what the policy lets through, and ``extra_env`` (the
    step's own variables, e.g. a hook's) as given. The file system is the one ``needs`` sees
    (default: ``command``), for a script that runs the user's command several times."""
    if policy.mode == "none":
        yield Jail(["/bin/sh", "-c", command], {**env, **(extra_env or {})}, policy)
        return
    require(policy.mode)
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    assert bwrap and prlimit  # checked by require()
    home = exposure.home_of(env)
    _check(policy, cwd, home)
    view = exposure.view(cwd, needs or command, env, policy.ro, policy.rw)
    inner = {**exposure.environment(env, policy.env, view.home), **(extra_env or {})}
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
    argv = [*join, *limits, "--", *_bwrap_argv(bwrap, view, cwd, command)]
    confined = Jail(argv, inner, policy, cgroup, view)
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
                _bwrap_argv(bwrap, exposure.view(Path(tmp), "touch", {}), Path(tmp), "touch probe"),
                capture_output=True,
                text=True,
                timeout=30,
            )
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


__all__ = ["DEFAULT", "INSTALL_HINT", "Jail", "OPT_OUT", "Policy", "jail", "problem", "require"]
