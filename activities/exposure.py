"""What a sandboxed tool command can see: nothing but what it needs (deny by default).

The sandbox's root is empty; :func:`view` lists what is mounted into it, in order:

- the system, read-only: ``/usr``, ``/bin``, ``/sbin``, ``/lib*`` (as symlinks where the host
  has symlinks) and only the parts of ``/etc`` that name resolution, locale, certificates and
  the dynamic loader read;
- ``/proc`` (of its own pid namespace), a minimal ``/dev``, a private ``/tmp`` and an empty
  ``$HOME`` (both tmpfs, gone with the command);
- the worker's own Python (``sys.prefix``, ``sys.base_prefix``, their real paths);
- the tools the command line names, found on the worker with their virtual environments
  (:mod:`activities.discovery`); nothing found inside the working directory widens it;
- the job's ``--sandbox-ro`` and ``--sandbox-rw`` paths;
- the working directory, writable; its ``.git`` read-only and, for a linked worktree, the parts
  of its repository that git reads (objects, refs, config, its own worktree folder).

Everything else (the rest of ``$HOME``, the worker's cache with other jobs' worktrees, the
server's database, ``/var``, ``/opt``, ``/srv``, ...) does not exist for the command.
:func:`denied` names the paths a failed command was denied, for an error that says how to
expose them.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentparallels.activities import discovery
from agentparallels.activities.discovery import depth, under

SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "passwd", "group", "hosts", "host.conf", "nsswitch.conf", "resolv.conf", "gai.conf",
    "services", "protocols", "ssl", "ca-certificates", "ca-certificates.conf", "pki",
    "crypto-policies", "localtime", "timezone", "locale.alias", "locale.conf",
    "default/locale", "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "mime.types", "python3*",
)  # fmt: skip
"""The parts of /etc a command sees (globs allowed)."""
ENV = ("PATH", "LANG", "LANGUAGE", "TERM", "TZ", "PYTHONDONTWRITEBYTECODE")
"""Variables of the worker's environment every command gets (and every ``LC_*``)."""
GIT_PARTS = ("objects", "refs", "packed-refs", "config", "HEAD", "info", "shallow")
"""What git reads of a linked worktree's common repository (not other worktrees, not the
URLs it fetched from)."""
FALLBACK_HOME = "/home/sandbox"

Kind = Literal["symlink", "tmpfs", "ro", "rw"]
_ORDER = {"symlink": 0, "tmpfs": 0, "ro": 1, "rw": 2}


@dataclass(frozen=True, slots=True)
class Mount:
    kind: Kind
    path: str
    """Where it appears in the sandbox (for a bind, also its source on the host)."""
    target: str = ""
    """For a symlink: what it points to."""


@dataclass(frozen=True, slots=True)
class View:
    """The sandbox's file system, in mount order (a parent before what is mounted below it)."""

    mounts: tuple[Mount, ...]
    home: str

    def args(self) -> list[str]:
        """bwrap's arguments that build it."""
        out = ["--proc", "/proc", "--dev", "/dev"]
        for m in self.mounts:
            if m.kind == "symlink":
                out += ["--symlink", m.target, m.path]
            elif m.kind == "tmpfs":
                out += ["--tmpfs", m.path]
            else:
                out += ["--bind-try" if m.kind == "rw" else "--ro-bind-try", m.path, m.path]
        return out

    def visible(self, path: str, _hops: int = 0) -> bool:
        """Whether ``path`` (absolute, as a command names it) shows the host's file there."""
        path = os.path.normpath(path)
        if path == "/" or under(path, "/proc") or under(path, "/dev"):
            return True
        best = None
        for m in self.mounts:
            if under(path, m.path) and (best is None or len(m.path) >= len(best.path)):
                best = m
        if best is None:
            return False
        if best.kind == "tmpfs":
            return path == best.path
        if best.kind == "symlink":
            if _hops > 8:
                return False
            target = os.path.join(os.path.dirname(best.path), best.target)
            return self.visible(target + path[len(best.path) :], _hops + 1)
        return True


@functools.cache
def _system() -> tuple[Mount, ...]:
    found: list[Mount] = []
    for top in SYSTEM:
        if os.path.islink(top):
            found.append(Mount("symlink", top, os.readlink(top)))
        elif os.path.isdir(top):
            found.append(Mount("ro", top))
    for pattern in ETC:
        for entry in sorted(Path("/etc").glob(pattern)):
            path = str(entry)
            target = os.path.realpath(path)
            if os.path.islink(path) and any(under(target, t) for t in SYSTEM):
                found.append(Mount("symlink", path, os.readlink(path)))
            elif os.path.exists(path):
                found.append(Mount("ro", path))  # a bind follows the link to what it names
    return tuple(found)


@functools.cache
def _worker_python() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix)}
    paths.add(os.path.realpath(sys.base_prefix))
    return tuple(sorted(paths))


def home_of(env: Mapping[str, str]) -> str:
    """Where the command's empty ``$HOME`` is: the worker's own path, unless that is unusable."""
    home = os.path.normpath(env.get("HOME") or FALLBACK_HOME)
    if not os.path.isabs(home) or home == "/" or any(under(home, t) for t in SYSTEM):
        return FALLBACK_HOME
    return home


def _git_parts(cwd: str) -> list[str]:
    """Of a linked worktree (``.git`` is a file naming its folder): what git reads."""
    dot = Path(cwd, ".git")
    if not dot.is_file():
        return []
    text = dot.read_text(errors="replace").strip()
    if not text.startswith("gitdir:"):
        return []
    own = Path(cwd, text.removeprefix("gitdir:").strip()).resolve()
    common = own
    if (own / "commondir").is_file():
        common = (own / (own / "commondir").read_text().strip()).resolve()
    # Only a genuine linked worktree, whose git folder names this ``.git`` back: the file is
    # the command's to write where ``.git`` did not exist (an agent's working folder), and one
    # naming ``$HOME`` or another repository must expose nothing.
    try:
        back = Path(own, (own / "gitdir").read_text().strip())
    except OSError:
        return []
    if os.path.realpath(back) != os.path.realpath(dot) or own.parent.parent != common:
        return []
    return [str(own), *(str(common / part) for part in GIT_PARTS if (common / part).exists())]


def view(
    cwd: Path, command: str, env: Mapping[str, str], ro: Iterable[str] = (), rw: Iterable[str] = ()
) -> View:
    """The file system ``command`` sees when run in ``cwd`` with the environment ``env``."""
    wt = str(cwd.resolve())
    home = home_of(env)
    mounts: dict[str, Mount] = {}

    def add(kind: Kind, path: str, target: str = "") -> None:
        path = os.path.normpath(path)
        old = mounts.get(path)
        if old is None or _ORDER[kind] >= _ORDER[old.kind]:
            mounts[path] = Mount(kind, path, target)

    for m in _system():
        add(m.kind, m.path, m.target)
    add("tmpfs", "/tmp")
    add("tmpfs", home)
    writable = [wt, *(os.path.normpath(p) for p in rw)]
    auto = [*_worker_python(), *discovery.tools(command, wt, env.get("PATH", ""), home)]
    system = View(_system(), home)
    for path in auto:
        if any(under(path, w) for w in writable):  # a writable folder stays writable
            continue
        if not (system.visible(path) and system.visible(os.path.realpath(path))):
            add("ro", path)
            add("ro", os.path.realpath(path))
    for path in ro:
        add("ro", path)
        add("ro", os.path.realpath(path))
    for path in writable:
        add("rw", path)
        add("rw", os.path.realpath(path))
    for part in _git_parts(wt):
        add("ro", part)
    # Read-only, so that no command can point the worktree at another repository (whose
    # config or hooks the worker's own git commands would then run, outside the sandbox).
    mounts[f"{wt}/.git"] = Mount("ro", f"{wt}/.git")
    ordered = sorted(mounts.values(), key=lambda m: (depth(m.path), _ORDER[m.kind], m.path))
    return View(tuple(ordered), home)


def environment(env: Mapping[str, str], names: Iterable[str], home: str) -> dict[str, str]:
    """The command's variables: the allowlist, the job's ``--sandbox-env`` names, a sandbox
    ``HOME`` and ``TMPDIR``; nothing else of the worker's (no keys, tokens, proxies, DSNs)."""
    keep = set(ENV) | set(names)
    inner = {k: v for k, v in env.items() if k in keep or k.startswith("LC_")}
    return {**inner, "HOME": home, "TMPDIR": "/tmp"}


PATH_IN_OUTPUT = re.compile(r"(?<![\w./~$-])(/[\w.@+~%=,-]+(?:/[\w.@+~%=,-]+)*)")
NOT_THERE = re.compile(
    r"no such file|not found|cannot access|can't open|permission denied|not permitted"
    r"|nonexistent|read-only file system|not a directory|cannot create|can't create"
    r"|ENOENT|EACCES|EPERM|FileNotFoundError|PermissionError|cannot find|does not exist",
    re.I,
)
"""A line that says a path could not be had: only a path on such a line blames the sandbox
(a failing test that merely prints a host path is a failing test)."""


def denied(
    view: View, command: str, cwd: Path, path_env: str, output: str, exit_code: int
) -> list[str]:
    """Host paths a failed command was denied: named in its output (or, when it exited 126 or
    127, its programs and their interpreters), existing on the host (or under a folder that
    does), and not visible in the sandbox."""
    named = [
        m.rstrip(".,")
        for line in output.splitlines()
        if NOT_THERE.search(line)
        for m in PATH_IN_OUTPUT.findall(line)
    ]
    if exit_code in (126, 127):
        for word in discovery.first_words(command):
            if found := discovery.resolve(word, str(cwd), path_env):
                named += discovery.hops(found)
                if interpreter := discovery.interpreter(os.path.realpath(found), path_env):
                    named.append(interpreter)
    hidden: list[str] = []
    for path in dict.fromkeys(named):
        found = _hidden(view, os.path.normpath(path))
        if found and found not in hidden:
            hidden.append(found)
    return hidden[:3]


def _hidden(view: View, path: str) -> str | None:
    """``path`` if the host has it and the sandbox hides it; for a path the host lacks (a
    file the command meant to create), its folder if the host has that and the sandbox hides
    it; else None."""
    if os.path.lexists(path):
        shown = view.visible(path) and view.visible(os.path.realpath(path))
        return None if shown else path
    folder = os.path.dirname(path)
    if folder != "/" and os.path.isdir(folder) and not view.visible(folder):
        return folder
    return None


def exposing(path: str) -> str:
    """What to pass to ``--sandbox-ro`` to expose ``path``: the virtual environment it is in,
    itself, or (when it does not exist) the nearest folder that does."""
    while not os.path.lexists(path) and path != "/":
        path = os.path.dirname(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for _ in range(4):
        if depth(folder) < 3:
            break
        if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            return folder
        folder = os.path.dirname(folder)
    return path


__all__ = [
    "ENV",
    "ETC",
    "FALLBACK_HOME",
    "GIT_PARTS",
    "Kind",
    "Mount",
    "NOT_THERE",
    "PATH_IN_OUTPUT",
    "SYSTEM",
    "View",
    "denied",
    "environment",
    "exposing",
    "home_of",
    "view",
]
