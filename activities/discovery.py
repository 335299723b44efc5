"""Which programs a command line runs, and what of the host each needs to run.

Used by :mod:`activities.exposure` to mount a command's own tools into its sandbox. The first
word of each simple command (after ``env``, its options and ``VAR=value``) is looked up on
PATH as the shell would, its symlinks are followed hop by hop, and a script's ``#!`` line gives
its interpreter. Each program is exposed with its environment: the virtual environment it lives
in and that one's base interpreter, or its Python installation's prefix, or its folder; never
``/``, a top-level folder, ``$HOME`` or a folder holding it, nor anything in the worker's own
folders. A program found inside the working directory exposes nothing: what a repository or a
model's answer holds never widens the sandbox.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def depth(path: str) -> int:
    return len(Path(path).parts)


def private() -> tuple[Path, ...]:
    """The worker's own folders (its cache with every job's worktrees, the server's state
    with its database): never exposed because a command happens to name something in them."""
    from agentparallels.activities._git import cache_root
    from agentparallels.core.places import state_dir

    return _real(str(cache_root()), str(state_dir()))


@functools.lru_cache(maxsize=16)
def _real(*paths: str) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(p)) for p in paths)


def _exposable(path: str, home: str, *, unit: bool = False) -> bool:
    """Whether a folder found by discovery may be mounted whole: not ``/``, not a top-level
    folder (unless it is a ``unit``, a virtual environment or a Python installation, such as
    ``/venv``), not ``$HOME`` or a folder holding it or the worker's own folders, nor inside
    them."""
    if depth(path) < (2 if unit else 3):
        return False
    for guarded in (home, *map(str, private())):
        if under(guarded, path) or under(path, guarded) and guarded != home:
            return False
    return True


def venv_root(folder: str) -> str | None:
    for candidate in (folder, os.path.dirname(folder)):
        if os.path.isfile(os.path.join(candidate, "pyvenv.cfg")):
            return candidate
    return None


def _base_prefix(venv: str) -> str | None:
    """The prefix of a virtual environment's base interpreter (``home`` in its pyvenv.cfg)."""
    try:
        text = Path(venv, "pyvenv.cfg").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            bindir = value.strip()
            return os.path.dirname(bindir) if os.path.basename(bindir) == "bin" else bindir
    return None


def _python_prefix(folder: str) -> bool:
    return any(Path(folder, "lib").glob("python3*")) or os.path.isdir(f"{folder}/conda-meta")


def _environment(executable: str, home: str) -> list[str]:
    """What must be visible for ``executable`` (one hop of a symlink chain) to run: its virtual
    environment and that one's base interpreter, or its Python prefix, or its folder."""
    folder = os.path.dirname(executable)
    venv = venv_root(folder)
    if venv is not None:
        found = [venv]
        base = _base_prefix(venv)
        if base:
            found.append(base)
        return [p for p in found if _exposable(p, home, unit=True)]
    prefix = os.path.dirname(folder)
    if os.path.basename(folder) == "bin" and _python_prefix(prefix):
        if _exposable(prefix, home, unit=True):
            return [prefix]
    if _exposable(folder, home):
        return [folder]
    if any(under(executable, str(p)) for p in private()):
        return []
    return [executable]


def hops(path: str) -> list[str]:
    """``path`` and every link it goes through, to the file it ends at."""
    hops = [path]
    while os.path.islink(hops[-1]) and len(hops) < 16:
        link = os.readlink(hops[-1])
        hops.append(os.path.normpath(os.path.join(os.path.dirname(hops[-1]), link)))
    real = os.path.realpath(path)
    return hops if real in hops else [*hops, real]


OPERATORS = {";", "&&", "||", "|", "&", "(", ")", "|&", ";;", "\n"}
WRAPPERS = {"env", "exec", "command", "nice", "nohup", "time"}


def first_words(command: str) -> list[str]:
    """The program each simple command of a shell command line runs (best effort: what
    quoting, operators, ``env`` and ``VAR=value`` leave; nothing from ``$(...)``)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    words: list[str] = []
    expect, skip = True, False
    for token in tokens:
        if skip:
            skip = False
        elif token in OPERATORS or set(token) <= set(";&|()"):
            expect = True
        elif set(token) <= set("<>&"):
            skip = True  # a redirection's file
        elif not expect:
            continue
        elif re.match(r"[A-Za-z_][A-Za-z0-9_]*=", token) or token.startswith("-"):
            skip = token in ("-u", "--unset", "-C", "--chdir")
        elif token in WRAPPERS:
            continue
        else:
            words.append(token)
            expect = False
    return words


def resolve(word: str, cwd: str, path_env: str) -> str | None:
    """Where the shell would find ``word``: a path as given, else the first executable of
    that name on ``path_env``."""
    if "/" in word:
        path = os.path.normpath(os.path.join(cwd, os.path.expanduser(word)))
        return path if os.path.exists(path) else None
    for folder in path_env.split(os.pathsep):
        candidate = os.path.join(folder or cwd, word)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.normpath(os.path.abspath(candidate))
    return None


def interpreter(script: str, path_env: str) -> str | None:
    """The interpreter a script's ``#!`` line names (through ``env``), or None."""
    try:
        with open(script, "rb") as fh:
            line = fh.readline(512)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    words = line[2:].decode(errors="replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return resolve(rest[0], "/", path_env) if rest else None
    return words[0]


def tools(command: str, cwd: str, path_env: str, home: str) -> list[str]:
    """Host paths ``command`` needs visible: its programs and their environments."""
    found: list[str] = []
    queue = [p for w in first_words(command) if (p := resolve(w, cwd, path_env))]
    seen: set[str] = set()
    while queue:
        executable = queue.pop()
        if executable in seen or len(seen) > 32:
            continue
        seen.add(executable)
        if under(executable, cwd) or under(os.path.realpath(executable), cwd):
            continue  # the worktree's content decides nothing
        for hop in hops(executable):
            found += _environment(hop, home)
        if script_runner := interpreter(os.path.realpath(executable), path_env):
            queue.append(script_runner)
    return found


__all__ = [
    "OPERATORS",
    "WRAPPERS",
    "depth",
    "first_words",
    "hops",
    "interpreter",
    "private",
    "resolve",
    "tools",
    "under",
    "venv_root",
]
