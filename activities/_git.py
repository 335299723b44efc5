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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import git

from agentparallels.core.models import BRANCH_PREFIX, SCRATCH_NAMESPACE

AUTHOR_NAME = "Agent Parallels"
AUTHOR_EMAIL = "agentparallels@localhost"
JOB_TRAILER = "Agentparallels-Job"
EDIT_TRAILER = "Agentparallels-Edit"
ZERO = "0" * 40
STALE_LOCK_S = 10.0
"""A ref lock this old in a job's repository was left by a push that was killed mid-update (a
worker killed with its process group takes the receiving git with it): git holds one for
milliseconds. Only locks of the project's own refs are ever removed."""
_LOCK_EXISTS = re.compile(r"Unable to create '([^']+\.lock)': File exists")


class NotARepository(RuntimeError):
    """Git was asked to run somewhere it must not: a directory that does not exist (GitPython
    would run it in the worker's own working directory instead), or, for a command that
    discards changes, anything but a worktree of this worker's cache. Retryable: a retry
    makes its worktree again."""


def _where(cwd: Path | str) -> tuple[git.Git, list[str], dict[str, str]]:
    """A GitPython runner for ``cwd`` and the ``git`` command line and environment that keep
    git there: ``-C`` fails if the directory has gone by the time git starts, and the ceiling
    stops git from looking for a repository above it (in a checkout that holds the cache)."""
    path = Path(cwd).absolute()
    if not path.is_dir():
        raise NotARepository(f"refusing to run git in {path}: it does not exist")
    env = {} if path.parent == path else {"GIT_CEILING_DIRECTORIES": str(path.parent)}
    return git.Git(str(path)), ["git", "-C", str(path)], env


def execute(cwd: Path | str, *args: str, env: dict[str, str] | None = None, **options: Any) -> Any:
    """GitPython's ``execute`` of ``git args``, run in ``cwd`` and nowhere else."""
    runner, argv, where = _where(cwd)
    return runner.execute([*argv, *args], env={**where, **(env or {})}, **options)


def run(cwd: Path | str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``git args`` in ``cwd``; returns stripped stdout, raises ``git.GitCommandError``
    (and :class:`NotARepository` when ``cwd`` does not exist)."""
    return execute(cwd, *args, env=env, strip_newline_in_stdout=True)


def run_with_input(cwd: Path | str, data: bytes, *args: str, **options: Any) -> Any:
    """``run``, with ``data`` on git's standard input."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(data)
        stdin.seek(0)
        return execute(cwd, *args, istream=stdin, **{"strip_newline_in_stdout": True, **options})


def is_local(repository: str) -> bool:
    return "://" not in repository and Path(repository).is_dir()


def cache_root() -> Path:
    """This worker's cache (absolute: git runs in many folders, and paths are passed to it)."""
    base = os.environ.get("AGENTPARALLELS_CACHE_DIR")
    if base:
        return Path(base).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(xdg) / "agentparallels").absolute()


@contextmanager
def locked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold a lock on ``path`` (created if needed) across processes and threads of this machine:
    exclusive, or ``shared`` with other shared holders. The kernel releases it when its holder
    dies. Without ``wait``, raises ``BlockingIOError`` if it is held. A holder may delete the
    file: whoever then gets the lock of the deleted file takes the new file's instead."""
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, mode)
            try:
                current = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                return


_CHECKED: set[Path] = set()
"""Caches this process has found usable (or made)."""


def cached_repo(repository: str) -> Path:
    """This worker's bare clone of ``repository``, created empty on first use. A cache is
    made whole or not at all (initialised beside it, then renamed into place), and one found
    unusable (a worker killed while making it, under an older version) is made again: a
    worker's cache is disposable, everything it holds is in the job's repository."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", repository.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha256(repository.encode()).hexdigest()[:12]
    path = cache_root() / "repos" / f"{slug}-{digest}.git"
    if path in _CHECKED and (path / "HEAD").exists():
        return path
    with locked(path.with_suffix(".lock")):
        if not usable(path):
            shutil.rmtree(path, ignore_errors=True)
            fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
            run(fresh, "init", "--quiet", "--bare")
            run(fresh, "config", "gc.auto", "0")
            fresh.rename(path)
    _CHECKED.add(path)
    return path


def usable(cache: Path) -> bool:
    """``cache`` is a whole bare repository (git itself says so)."""
    if not (cache / "HEAD").exists() or not (cache / "objects").is_dir():
        return False
    try:
        return run(cache, "rev-parse", "--is-bare-repository") == "true"
    except git.GitCommandError:
        return False


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


def read_blobs(repo: Path, objects: Sequence[str]) -> list[bytes | None]:
    """The content of each object ``objects`` names (``<commit>:<path>``), None for one that
    does not exist; one git run."""
    if not objects:
        return []
    names = "".join(f"{name}\n" for name in objects).encode()
    out: bytes = run_with_input(
        repo, names, "cat-file", "--batch", stdout_as_string=False, strip_newline_in_stdout=False
    )
    blobs: list[bytes | None] = []
    at = 0
    for _ in objects:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        if header[-1] == b"missing" or len(header) != 3:
            blobs.append(None)
            at = end + 1
            continue
        size = int(header[2])
        blobs.append(out[end + 1 : end + 1 + size] if header[1] == b"blob" else None)
        at = end + 1 + size + 1
    return blobs


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
    expected current sha or None for "must not exist"). Fails if any ref is not as expected.

    A commit ``cwd`` lacks (made by another worker) is fetched from ``repository`` first."""
    args = ["push", "--quiet", "--atomic", "--no-verify"]
    specs = []
    for ref, new, expect in updates:
        if new is not None and not has_commit(cwd, new):
            # Fetched into the clone itself (a worktree shares its objects), under its lock.
            common = run(cwd, "rev-parse", "--path-format=absolute", "--git-common-dir")
            ensure_commit(Path(common), repository, new)
        args.append(f"--force-with-lease={ref}:{expect or ''}")
        specs.append(f"{new}:{ref}" if new else f":{ref}")
    try:
        run(cwd, *args, repository, *specs)
    except git.GitCommandError as e:
        if not _cleared_stale_locks(repository, str(e.stderr)):
            raise
        run(cwd, *args, repository, *specs)


def _cleared_stale_locks(repository: str, stderr: str) -> bool:
    """Remove the locks of the project's own refs in a local ``repository`` that a push was
    refused for and that a killed push left behind (older than :data:`STALE_LOCK_S`); whether
    any was. A fresh lock (a push in flight) or a lock of another ref is left alone: the push
    fails as before and its step is retried."""
    if not is_local(repository):
        return False
    git_dir = Path(run(repository, "rev-parse", "--path-format=absolute", "--git-dir"))
    ours = (f"{SCRATCH_NAMESPACE}/", f"refs/heads/{BRANCH_PREFIX}/")
    cleared = False
    for found in _LOCK_EXISTS.findall(stderr):
        lock = Path(os.path.normpath(found))
        try:
            ref = lock.relative_to(git_dir).as_posix().removesuffix(".lock")
            age = time.time() - lock.stat().st_mtime
        except (ValueError, OSError):
            continue
        if ref.startswith(ours) and age > STALE_LOCK_S:
            lock.unlink(missing_ok=True)
            cleared = True
    return cleared


def worktree(cache: Path, path: Path, sha: str, sparse: Sequence[str] | None = None) -> Path:
    """A clean worktree of the cache at ``path``, detached at ``sha``; reused when it exists.
    With ``sparse``, a new one holds only those files (a sparse checkout of its own, the
    others left out of its folder), not the whole tree. The caller holds the worktree's lock
    (see :mod:`activities._workspace`)."""
    if sparse is not None and any(c in p for p in sparse for c in "\r\n"):
        sparse = None  # a pattern line cannot end in either: check the whole tree out
    if (path / ".git").exists():
        try:
            discard(path, sha)
            _sparse(path, sha, sparse)
            return path
        except (git.GitCommandError, NotARepository):
            pass  # a half-made worktree (a crash during `worktree add`): make it again
    add = ["worktree", "add", "--quiet", *([] if sparse is None else ["--no-checkout"]), "--detach"]
    with locked(cache.with_suffix(".lock")):
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            run(cache, *add, str(path), sha)
        except git.GitCommandError:
            # Still registered (its folder was removed without `git worktree remove`, as by a
            # crash): forget the worktrees that are gone, then add it again.
            shutil.rmtree(path, ignore_errors=True)
            run(cache, "worktree", "prune")
            run(cache, *add, str(path), sha)
    if sparse is not None:
        _sparse(path, sha, sparse)
    return path


def _sparse(path: Path, sha: str, sparse: Sequence[str] | None) -> None:
    """Make the clean worktree at ``sha`` hold exactly ``sparse`` (every file when None),
    whatever it held before: a worktree is reused across steps, runs and kinds of step."""
    if sparse is None:
        if run(path, "config", "--default", "false", "--get", "core.sparseCheckout") == "true":
            run(path, "sparse-checkout", "disable")
        return
    # Patterns of the worktree's own (git keeps them per worktree), one anchored literal path
    # each; then the index and the files, for those paths only.
    patterns = "".join(f"/{_literal(p)}\n" for p in sparse)
    run_with_input(path, patterns.encode(), "sparse-checkout", "set", "--no-cone", "--stdin")
    run(path, "reset", "--hard", "--quiet", sha)


def _literal(path: str) -> str:
    """``path`` as a sparse-checkout (gitignore) pattern body that matches it alone: its
    wildcards and backslashes escaped, and trailing spaces, which a pattern would drop."""
    escaped = re.sub(r"([\\*?\[\]])", r"\\\1", path)
    stripped = escaped.rstrip(" ")
    return stripped + "\\ " * (len(escaped) - len(stripped))


def remove_worktrees(cache: Path, folder: Path) -> None:
    """Remove every worktree at or below ``folder`` and forget it in the cache."""
    with locked(cache.with_suffix(".lock")):
        shutil.rmtree(folder, ignore_errors=True)
        run(cache, "worktree", "prune")


def discard(
    wt: Path,
    sha: str | None = None,
    *,
    clean: Literal["-fdx", "-fd", ""] = "-fdx",
    reset: bool = True,
) -> None:
    """``git reset --hard [sha]`` (unless not ``reset``), then ``git clean`` with the ``clean``
    flags (none: no clean), in the worktree ``wt``, which must be a worktree of this worker's
    cache: its folder under the cache's ``worktrees``, its ``.git`` naming a clone under the
    cache's ``repos``. Git is told both explicitly, so it can act on nothing else."""
    root = cache_root().resolve()
    where = Path(wt).absolute()
    gitdir = _gitdir_of(where)
    if (
        gitdir is None
        or not where.resolve().is_relative_to(root / "worktrees")
        or not gitdir.resolve().is_relative_to(root / "repos")
    ):
        raise NotARepository(
            f"refusing to discard changes in {where}: not a worktree of this worker's cache"
        )
    env = {"GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(where)}
    if reset:
        run(where, "reset", "--quiet", "--hard", *([sha] if sha else []), env=env)
    if clean:
        run(where, "clean", "--quiet", clean, env=env)


def _gitdir_of(wt: Path) -> Path | None:
    """The git folder a linked worktree's ``.git`` file names; None if it names none."""
    try:
        text = (wt / ".git").read_text()
    except OSError:  # missing, or a folder (a repository of its own, not a linked worktree)
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.removeprefix("gitdir:").strip())
    return gitdir if gitdir.is_absolute() else wt / gitdir


def head_of(wt: Path) -> str | None:
    """The commit a (detached) worktree is at, read from its files without running git."""
    gitdir = _gitdir_of(wt)
    try:
        return (gitdir / "HEAD").read_text().strip() if gitdir else None
    except OSError:
        return None


def _quoted(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def commit_files(
    wt: Path,
    parent: str,
    edits: Sequence[tuple[str, str]],
    timestamp: int,
    *,
    entries: dict[str, tuple[str, str]] | None = None,
    key: str | None = None,
) -> list[str]:
    """Commit each (path, message) in order, one commit per file on top of the previous, taking
    the file's state from the worktree ``wt`` (a missing file is a deletion), or, given
    ``entries`` (a tree's, see :func:`tree_entries`), as that tree has it: the commits then
    point at blobs already written, and ``wt`` may be any repository holding them. One ``git
    fast-import`` writes them all; returns the commits' ids. Same input, same ids. ``key``
    (default: ``wt``) names the import's temporary ref: one caller at a time per key."""
    stream = bytearray()
    digest = hashlib.sha256((key or str(wt)).encode()).hexdigest()[:16]
    ref = f"refs/agentparallels-import/{digest}"
    who = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {timestamp} +0000\n".encode()
    for mark, (path, message) in enumerate(edits, start=1):
        text = message.rstrip("\n").encode() + b"\n"
        stream += f"commit {ref}\nmark :{mark}\n".encode()
        stream += b"author " + who + b"committer " + who
        stream += f"data {len(text)}\n".encode() + text
        if mark == 1:
            stream += f"from {parent}\n".encode()
        stream += _file_change(wt, path, entries) + b"\n"
    fd, marks = tempfile.mkstemp(prefix=".import-", suffix=".marks", dir=wt.parent)
    os.close(fd)
    try:
        run_with_input(
            wt, bytes(stream), "fast-import", "--quiet", "--force", f"--export-marks={marks}"
        )
        ids = dict(line.split() for line in Path(marks).read_text().splitlines())
    finally:
        Path(marks).unlink(missing_ok=True)
        try:
            run(wt, "update-ref", "-d", ref)
        except (git.GitCommandError, NotARepository):
            pass
    commits = [ids[f":{mark}"] for mark in range(1, len(edits) + 1)]
    changes = changed_by(wt, commits)
    for sha, (path, _) in zip(commits, edits, strict=True):
        if changes[sha] != [path]:  # the file was not (or no longer) as the edit left it
            why = "the tree given does not change it" if entries else "the worktree changed"
            raise EmptyEdit(
                f"refusing commit {sha[:12]} for {path}: it changes "
                f"{', '.join(changes[sha]) or 'nothing'}; {why}"
            )
    return commits


SYMLINK_MODE = "120000"


def tree_entries(repo: Path, commit: str, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """path -> (mode, object id) in ``commit``'s tree, for those of ``paths`` it holds. Lists
    only the folders that hold ``paths`` (a shard's packages), not the whole tree."""
    wanted, found = set(paths), {}
    folders = sorted({p.rpartition("/")[0] or p for p in wanted})
    for part in range(0, len(folders), 1000):
        out = run(
            repo, "--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", commit, "--",
            *folders[part : part + 1000],
        )  # fmt: skip
        for entry in filter(None, out.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, _kind, sha = meta.split()
            if path in wanted:
                found[path] = (mode, sha)
    return found


def _file_change(wt: Path, path: str, entries: dict[str, tuple[str, str]] | None) -> bytes:
    """The fast-import line setting ``path`` as the worktree has it, or, given ``entries`` (a
    tree's blobs), as the tree has it; a deletion where there is no such file."""
    if entries is not None:
        if path not in entries:
            return f"D {_quoted(path)}\n".encode()
        mode, sha = entries[path]
        return f"M {mode} {sha} {_quoted(path)}\n".encode()
    file = wt / path
    if file.is_symlink():
        data, mode = os.readlink(file).encode(), SYMLINK_MODE
    elif file.exists():
        data, mode = file.read_bytes(), "100755" if os.access(file, os.X_OK) else "100644"
    else:
        return f"D {_quoted(path)}\n".encode()
    return f"M {mode} inline {_quoted(path)}\ndata {len(data)}\n".encode() + data + b"\n"


class EmptyEdit(RuntimeError):
    """An edit commit would not change exactly the file it names (its worktree was reset under
    it). Never pushed; retryable, as the next attempt starts from a clean worktree."""


def changed_by(repo: Path, commits: Sequence[str]) -> dict[str, list[str]]:
    """The paths each of ``commits`` changes against its first parent, sorted; one git run."""
    out = run_with_input(
        repo,
        "".join(f"{c}\n" for c in commits).encode(),
        "diff-tree",
        "--stdin",
        "--no-renames",
        "-r",
        "--name-only",
        "-z",
    )
    changes: dict[str, list[str]] = {c: [] for c in commits}
    current: list[str] = []
    for token in out.split("\0"):  # each commit's id, then its paths; none for an empty one
        if token in changes:
            current = changes[token]
        elif token:
            current.append(token)
    return {c: sorted(paths) for c, paths in changes.items()}


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
    """Commit everything changed in ``wt``; None when nothing changed. Same input, same sha.
    ``git add`` (not a commit written from the files' bytes) so the repository's attributes
    apply: line endings normalised, clean filters, the executable bit as git sees it. Every
    file git need not convert goes straight into one pack (``core.bigFileThreshold``: git's
    bulk check-in, the same objects), not one loose object file each: half the time of
    ``git add`` for a 1000-file change set, and a push that sends the pack as it is."""
    run(wt, "-c", "core.bigFileThreshold=1", "add", "--all")
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
