"""Git plumbing shared by the activities (library code, no Temporal).

A job's repository (the user's path or URL) is treated as a remote: workers fetch from it into a
bare clone in their own cache, work in worktrees of that clone, and publish every step by pushing
to scratch refs under ``refs/agentparallels/<job-id>/`` in it. Nothing else in the user's
repository is touched until the job publishes its branch.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import git

AUTHOR_NAME = "Agent Parallels"
AUTHOR_EMAIL = "agentparallels@localhost"
JOB_TRAILER = "Agentparallels-Job"
EDIT_TRAILER = "Agentparallels-Edit"
ZERO = "0" * 40


def run(cwd: Path | str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``git args`` in ``cwd``; returns stripped stdout, raises ``git.GitCommandError``."""
    return git.Git(str(cwd)).execute(["git", *args], env=env, strip_newline_in_stdout=True)


def run_with_input(cwd: Path | str, data: bytes, *args: str) -> str:
    """``run``, with ``data`` on git's standard input."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(data)
        stdin.seek(0)
        return git.Git(str(cwd)).execute(["git", *args], istream=stdin,
                                         strip_newline_in_stdout=True)  # fmt: skip


def is_local(repository: str) -> bool:
    return "://" not in repository and Path(repository).is_dir()


def cache_root() -> Path:
    base = os.environ.get("AGENTPARALLELS_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "agentparallels"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes of this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_repo(repository: str) -> Path:
    """This worker's bare clone of ``repository``, created empty on first use."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", repository.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha256(repository.encode()).hexdigest()[:12]
    path = cache_root() / "repos" / f"{slug}-{digest}.git"
    if not (path / "HEAD").exists():
        with locked(path.with_suffix(".lock")):
            if not (path / "HEAD").exists():
                path.mkdir(parents=True, exist_ok=True)
                run(path, "init", "--quiet", "--bare")
                run(path, "config", "gc.auto", "0")
    return path


KEEP_NAMESPACE = "refs/agentparallels-keep"
"""Refs of a worker's cache (never of a user's repository) that keep finished shards' commits
reachable for a resumed run, after the job's own refs were deleted by its rollback."""
KEEP_FOR_S = 7 * 24 * 3600
"""How long a kept commit outlives its job, counted from the job's start."""


def keep(cache: Path, name: str, sha: str) -> None:
    """Keep ``sha`` reachable in the cache under ``KEEP_NAMESPACE/name``."""
    run(cache, "update-ref", f"{KEEP_NAMESPACE}/{name}", sha)


def drop_kept(cache: Path, job_id: str | None = None, *, older_than: int | None = None) -> int:
    """Delete the cache's keep refs of ``job_id`` (all jobs when None) whose commit dates from
    before the Unix time ``older_than`` (any date when None); returns how many."""
    prefix = f"{KEEP_NAMESPACE}/{job_id}/" if job_id else f"{KEEP_NAMESPACE}/"
    listed = run(cache, "for-each-ref", "--format=%(refname) %(committerdate:unix)", prefix)
    doomed = [
        name
        for name, date in (line.rsplit(" ", 1) for line in listed.splitlines())
        if older_than is None or int(date) < older_than
    ]
    if doomed:
        commands = "".join(f"delete {name}\n" for name in doomed).encode()
        run_with_input(cache, commands, "update-ref", "--stdin")
    return len(doomed)


def has_commit(repo: Path, sha: str) -> bool:
    try:
        run(repo, "cat-file", "-e", f"{sha}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def ensure_commit(cache: Path, repository: str, sha: str) -> None:
    """Make ``sha`` (and its history) present in the cache, fetching it if needed."""
    if has_commit(cache, sha):
        return
    with locked(cache.with_suffix(".lock")):
        if not has_commit(cache, sha):
            run(cache, "fetch", "--quiet", "--no-tags", repository, sha)


def ls_remote(repository: str, *patterns: str, refs_only: bool = False) -> dict[str, str]:
    """What ``git ls-remote`` lists, as name -> sha: HEAD and peeled tags too, unless
    ``refs_only``. Patterns match the tail of a name, as git does."""
    flags = ["--refs"] if refs_only else []
    out = run("/", "ls-remote", *flags, repository, *patterns)
    return {name: sha for sha, name in (line.split("\t", 1) for line in out.splitlines())}


def remote_refs(repository: str, pattern: str) -> dict[str, str]:
    """Refs of ``repository`` named exactly ``pattern``, or below it for ``prefix/*``."""
    listed = ls_remote(repository, pattern, refs_only=True)
    if pattern.endswith("/*"):
        return {ref: sha for ref, sha in listed.items() if ref.startswith(pattern[:-1])}
    return {ref: sha for ref, sha in listed.items() if ref == pattern}


def remote_ref(repository: str, ref: str) -> str | None:
    return remote_refs(repository, ref).get(ref)


def push(cwd: Path, repository: str, updates: Sequence[tuple[str, str | None, str | None]]) -> None:
    """Atomically move refs of ``repository``: each update is (ref, new sha or None to delete,
    expected current sha or None for "must not exist"). Fails if any ref is not as expected."""
    args = ["push", "--quiet", "--atomic", "--no-verify"]
    specs = []
    for ref, new, expect in updates:
        args.append(f"--force-with-lease={ref}:{expect or ''}")
        specs.append(f"{new}:{ref}" if new else f":{ref}")
    run(cwd, *args, repository, *specs)


def worktree(cache: Path, path: Path, sha: str) -> Path:
    """A clean worktree of the cache at ``path``, detached at ``sha``; reused when it exists."""
    if (path / ".git").exists():
        try:
            run(path, "reset", "--quiet", "--hard", sha)
            run(path, "clean", "--quiet", "-fdx")
            return path
        except git.GitCommandError:
            pass  # a half-made worktree (a crash during `worktree add`): make it again
    with locked(cache.with_suffix(".lock")):
        shutil.rmtree(path, ignore_errors=True)
        run(cache, "worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        run(cache, "worktree", "add", "--quiet", "--detach", str(path), sha)
    return path


def remove_worktrees(cache: Path, folder: Path) -> None:
    """Remove every worktree at or below ``folder`` and forget it in the cache."""
    with locked(cache.with_suffix(".lock")):
        shutil.rmtree(folder, ignore_errors=True)
        run(cache, "worktree", "prune")


def head_of(wt: Path) -> str | None:
    """The commit a (detached) worktree is at, read from its files without running git."""
    try:
        gitdir = (wt / ".git").read_text().removeprefix("gitdir:").strip()
        return (Path(gitdir) / "HEAD").read_text().strip()
    except OSError:
        return None


def _quoted(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def commit_files(
    wt: Path, parent: str, edits: Sequence[tuple[str, str]], timestamp: int
) -> list[str]:
    """Commit each (path, message) in order, one commit per file on top of the previous, taking
    the file's state from the worktree (a missing file is a deletion). One ``git fast-import``
    writes them all; returns the commits' ids. Same input, same ids."""
    stream = bytearray()
    ref = f"refs/agentparallels-import/{hashlib.sha256(str(wt).encode()).hexdigest()[:16]}"
    who = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {timestamp} +0000\n".encode()
    for mark, (path, message) in enumerate(edits, start=1):
        text = message.rstrip("\n").encode() + b"\n"
        stream += f"commit {ref}\nmark :{mark}\n".encode()
        stream += b"author " + who + b"committer " + who
        stream += f"data {len(text)}\n".encode() + text
        if mark == 1:
            stream += f"from {parent}\n".encode()
        file = wt / path
        if file.is_symlink():
            data, mode = os.readlink(file).encode(), "120000"
        elif file.exists():
            data, mode = file.read_bytes(), "100755" if os.access(file, os.X_OK) else "100644"
        else:
            stream += f"D {_quoted(path)}\n\n".encode()
            continue
        stream += f"M {mode} inline {_quoted(path)}\ndata {len(data)}\n".encode() + data + b"\n\n"
    marks = wt.parent / f".{wt.name}.marks"
    try:
        with tempfile.TemporaryFile() as commands:
            commands.write(stream)
            commands.seek(0)
            git.Git(str(wt)).execute(
                ["git", "fast-import", "--quiet", "--force", f"--export-marks={marks}"],
                istream=commands,
            )
        ids = dict(line.split() for line in marks.read_text().splitlines())
    finally:
        marks.unlink(missing_ok=True)
        try:
            run(wt, "update-ref", "-d", ref)
        except git.GitCommandError:
            pass
    return [ids[f":{mark}"] for mark in range(1, len(edits) + 1)]


def commit_env(timestamp: int) -> dict[str, str]:
    date = f"{timestamp} +0000"
    return {
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_DATE": date,
    }


def commit_all(wt: Path, message: str, timestamp: int) -> str | None:
    """Commit everything changed in ``wt``; None when nothing changed. Same input, same sha."""
    run(wt, "add", "--all")
    if not run(wt, "status", "--porcelain"):
        return None
    run(wt, "commit", "--quiet", "--no-verify", "-m", message, env=commit_env(timestamp))
    return run(wt, "rev-parse", "HEAD")


def changed_paths(wt: Path) -> list[str]:
    """Paths changed in the worktree (index or files, untracked included) against HEAD."""
    out = run(wt, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    paths = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        if entry[0] in "RC":  # a rename's second field is its source
            paths.append(entries[i])
            i += 1
        paths.append(entry[3:])
    return sorted(set(paths))


def trailer(message: str, key: str) -> str | None:
    for line in message.splitlines():
        if line.startswith(f"{key}: "):
            return line[len(key) + 2 :]
    return None
