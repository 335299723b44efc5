"""Where a job's worktrees live in this worker's cache, and who may touch one when.

One attempt at a time per worktree: two attempts of one step can run at once (a starved worker
misses its heartbeat, the server starts a retry, and the first attempt keeps going), and with a
shared cache they would share the worktree, one resetting it under the other. So every use of a
worktree, from making or resetting it through editing, committing and pushing to removing it,
holds an exclusive ``flock`` on a lock file beside it (not in it, so removing the worktree
cannot remove the lock), and a shared lock on one beside the job's folder, which removing the
whole folder takes exclusively. The kernel releases both when their holder dies. A second
attempt waits (its heartbeats go on meanwhile), then finds what the first one did.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agentparallels.activities import _git
from agentparallels.core.models import ShardRef


def worktrees_dir(job_id: str) -> Path:
    return _git.cache_root() / "worktrees" / re.sub(r"[^A-Za-z0-9_.-]+", "_", job_id)


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{suffix}")


@contextmanager
def holding(job_id: str, name: str | None) -> Iterator[Path]:
    """Hold the job's worktree ``name`` (every worktree of the job when None) for this attempt
    alone; yields its path (the job's folder when None)."""
    folder = worktrees_dir(job_id)
    with _git.locked(_beside(folder, "lock"), shared=name is not None):
        if name is None:
            yield folder
            return
        path = folder / name
        with _git.locked(_beside(path, "lock")):
            yield path


def _prepared(repository: str, path: Path, sha: str, sparse: Sequence[str] | None = None) -> Path:
    """The worktree at ``path``, clean and at ``sha``; made if missing (with only the files
    ``sparse`` names, when given: see ``_git.worktree``). The caller holds it.

    A worktree is known clean, and reused as it is, when it is at ``sha``, no step was
    interrupted while editing it (see :func:`editing`) and it holds the files asked for (a
    note beside it names its sparse files; none, the whole tree); otherwise it is reset.
    """
    mark, held = _beside(path, "editing"), _beside(path, "sparse")
    wanted = None if sparse is None else "\0".join(sparse)
    now = held.read_text() if held.exists() else None
    if _git.head_of(path) == sha and not mark.exists() and now == wanted:
        return path
    # Marked while it is made or reset: `git worktree add` writes HEAD before it checks the
    # files out, so a worker killed in between leaves a worktree at ``sha`` with no files,
    # which must not pass for clean.
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, sha)
    _git.worktree(cache, path, sha, sparse)
    if wanted is None:
        held.unlink(missing_ok=True)
    else:
        held.write_text(wanted)
    mark.unlink(missing_ok=True)
    return path


def clean_at(path: Path) -> None:
    """Say that the worktree at ``path``, held by the caller, is clean at its HEAD: its files
    are HEAD's and nothing untracked or ignored is left (say, everything was just committed
    with ``git add --all`` and ``git clean -fdx`` ran after). Its next use at that commit then
    skips the reset (see :func:`_prepared`)."""
    _beside(path, "editing").unlink(missing_ok=True)


@contextmanager
def editing(
    repository: str, job_id: str, name: str, sha: str, sparse: Sequence[str] | None = None
) -> Iterator[Path]:
    """The worktree, clean at ``sha`` and held by this attempt alone for the block (which
    pushes what it commits before it ends). It is marked as being edited until the block ends
    without an exception (the block must leave it clean); a worktree left marked is reset
    before its next use."""
    with holding(job_id, name) as path:
        _prepared(repository, path, sha, sparse)
        mark = _beside(path, "editing")
        mark.touch()
        yield path
        mark.unlink()


class BranchMoved(RuntimeError):
    """The shard's branch is neither at the step's checkpoint nor ahead of it by what an earlier
    attempt of the step pushed: something else moved it."""


class ShardWorkspace:
    """A shard's branch in the job's repository and its worktree in this worker's cache, as one
    edit step uses them. Held by the step alone (:meth:`held`, see :func:`editing`) from the
    branch check to the push; the worktree is clean at the step's checkpoint when it starts.
    The step edits files in :attr:`path`, then :meth:`commit` makes one checkpoint commit per
    file and :meth:`finish` leaves the worktree clean and pushes the branch. A step whose files
    a commit already holds (:meth:`held_without_worktree`) commits them from it and pushes."""

    def __init__(self, shard: ShardRef, checkpoint: str, path: Path | None) -> None:
        self.shard = shard
        self.job = shard.job
        self.checkpoint = checkpoint
        self._path = path
        # Until its first commit, a shard's branch does not exist: it is at the base.
        self.expected = None if checkpoint == self.job.base_commit else checkpoint
        """Where the branch must be for the step to start afresh (None: not made yet)."""

    @classmethod
    @contextmanager
    def held(
        cls, shard: ShardRef, checkpoint: str, sparse: Sequence[str] | None = None
    ) -> Iterator[ShardWorkspace]:
        """The shard's workspace at ``checkpoint``, for this attempt alone for the block, which
        must :meth:`finish` it (an exception leaves the worktree marked, to be reset). With
        ``sparse`` (the shard's files), a worktree made here holds only those."""
        job = shard.job
        with editing(job.repository, job.job_id, shard.name, checkpoint, sparse) as path:
            yield cls(shard, checkpoint, path)

    @classmethod
    @contextmanager
    def held_without_worktree(cls, shard: ShardRef, checkpoint: str) -> Iterator[ShardWorkspace]:
        """The shard's branch at ``checkpoint``, for this attempt alone for the block, with no
        worktree: for a step whose files are already blobs (:meth:`commit` with entries),
        which must :meth:`push` what it commits. A worktree of the shard's, if any, is left
        as it is (held all the same, so no other attempt uses it meanwhile)."""
        with holding(shard.job.job_id, shard.name):
            yield cls(shard, checkpoint, None)

    @property
    def path(self) -> Path:
        """The worktree."""
        assert self._path is not None, "held without a worktree"
        return self._path

    def pushed_before(self, paths: Sequence[str]) -> list[tuple[str, str]] | None:
        """None when the branch is at the checkpoint. Otherwise the (path, commit) of each of
        the first ``paths`` that an earlier attempt of this step (or an earlier run of the job)
        committed and pushed, then died before reporting; :class:`BranchMoved` if none did.

        Read while the workspace is held, so no other attempt of the step can push meanwhile."""
        remote = _git.remote_ref(self.job.repository, self.shard.ref)
        if remote == self.expected:
            return None
        found, refused = self._earlier_commits(remote, paths) if remote else ([], "")
        if found:
            return found
        raise BranchMoved(
            f"{self.shard.ref} is at {remote or 'nothing'}, expected {self.checkpoint}{refused}: "
            "something else moved the job's branch; start the job again"
        )

    def _earlier_commits(
        self, remote: str, paths: Sequence[str]
    ) -> tuple[list[tuple[str, str]], str]:
        """The commits on top of the checkpoint, one each for the first of ``paths``, in order,
        each changing exactly the file its ``Agentparallels-Edit`` trailer names (a trailer
        alone proves nothing); and why the first one that is not was refused. Later files and
        commits are left for the next steps."""
        cache = _git.cached_repo(self.job.repository)
        _git.ensure_commit(cache, self.job.repository, remote)
        log = _git.run(
            cache, "log", "--reverse", "--format=%H %P%x00%B%x01", f"{self.checkpoint}..{remote}"
        )
        entries = [
            e.split("\x00", 1) for e in filter(None, (e.strip("\n") for e in log.split("\x01")))
        ]
        changes = _git.changed_by(cache, [head.split()[0] for head, _ in entries])
        found: list[tuple[str, str]] = []
        parent, expected = self.checkpoint, list(paths)
        for head, message in entries:
            sha, *parents = head.split()
            path = _git.trailer(message, _git.EDIT_TRAILER)
            if parents != [parent] or path not in expected:
                break
            if changes[sha] != [path]:
                names = ", ".join(changes[sha]) or "nothing"
                return found, f"; its commit {sha[:12]} names {path} but changes {names}"
            expected = expected[expected.index(path) + 1 :]
            found.append((path, sha))
            parent = sha
        return found, ""

    def changed(self) -> set[str]:
        """The paths changed in the worktree since the checkpoint, untracked ones included."""
        return set(_git.changed_paths(self.path))

    def commit(
        self,
        paths: Sequence[str],
        what: str,
        entries: dict[str, tuple[str, str]] | None = None,
    ) -> list[str]:
        """One commit per file of ``paths``, each on the previous, the first on the checkpoint,
        taking the file as the worktree has it, or as a tree's ``entries`` have it (then in
        the worker's cache, with no worktree); returns their ids. Each is checked to change
        exactly its file (``EmptyEdit`` otherwise, so it is never pushed), and carries the job's
        date and the trailers :meth:`pushed_before` reads, so a retry recognises it."""
        if not paths:
            return []
        job = self.job.job_id
        edits = [
            (p, f"{what}: {p}\n\n{_git.JOB_TRAILER}: {job}\n{_git.EDIT_TRAILER}: {p}")
            for p in paths
        ]
        if entries is None:
            return _git.commit_files(self.path, self.checkpoint, edits, self.job.timestamp)
        return _git.commit_files(
            self._cache(),
            self.checkpoint,
            edits,
            self.job.timestamp,
            entries=entries,
            key=f"{job}/{self.shard.name}",
        )

    def _cache(self) -> Path:
        cache = _git.cached_repo(self.job.repository)
        _git.ensure_commit(cache, self.job.repository, self.checkpoint)
        return cache

    def finish(self, tip: str, *, partial: bool) -> None:
        """Leave the worktree clean at ``tip`` (after a ``partial`` batch, without untracked
        files either) and, if the step committed, push the branch to ``tip``: before the step
        returns, so what it reports is in the job's repository."""
        _git.discard(self.path, tip, clean="-fdx" if partial else "")
        self.push(tip, self.path)

    def push(self, tip: str, cwd: Path | None = None) -> None:
        """Move the shard's branch to ``tip`` if the step committed (from the worker's cache,
        unless ``cwd`` is given): before the step returns, so what it reports is in the job's
        repository."""
        if tip != self.checkpoint:
            where = cwd or self._cache()
            _git.push(where, self.job.repository, [(self.shard.ref, tip, self.expected)])


JOB_TREE = "tree"
"""The worktree of the whole tree that the plan leaves behind for the test command (``keep``
of :func:`scratch_worktree`): on the same worker, the test runs in it as it is when the plan
left it clean at the commit tested (:func:`clean_at`), and otherwise after a reset, which
rewrites only the files that differ, instead of filling a new worktree."""


@contextmanager
def scratch_worktree(
    repository: str,
    job_id: str,
    name: str,
    sha: str,
    sparse: Sequence[str] | None = None,
    *,
    keep: bool = False,
) -> Iterator[Path]:
    """A worktree at ``sha`` for the duration of one step, held by it, removed afterwards
    (with ``keep``, left as the step left it, for the job's next step of that name on this
    worker to reuse, after a reset unless the step said it is clean with :func:`clean_at`;
    still removed if the step fails); with ``sparse``, holding only those files."""
    with holding(job_id, name) as path:
        kept = False
        try:
            _prepared(repository, path, sha, sparse)
            # Marked for the step's duration (and after it, when kept, unless the step
            # unmarks it with clean_at): a worker killed mid-step (mid-rope, mid-test) leaves
            # it dirty at ``sha``, and the next attempt must reset it, not reuse it.
            _beside(path, "editing").touch()
            yield path
            kept = keep
        finally:
            if not kept:
                _remove(repository, path)


def remove_worktree(repository: str, job_id: str, name: str | None = None) -> None:
    """Remove the job's worktree ``name`` (all of the job's worktrees when None), waiting for
    any attempt that uses it to finish."""
    if not worktrees_dir(job_id).exists():
        return  # nothing to remove, and no lock file to leave behind (no one holds one)
    with holding(job_id, name) as path:
        _remove(repository, path)
        if name is None:  # nobody waits on the job's lock file while it is held exclusively
            _beside(path, "lock").unlink(missing_ok=True)


def _remove(repository: str, path: Path) -> None:
    _git.remove_worktrees(_git.cached_repo(repository), path)
    _beside(path, "editing").unlink(missing_ok=True)
    _beside(path, "sparse").unlink(missing_ok=True)


def job_folders() -> list[Path]:
    """This worker's folders of jobs' worktrees, one per job (named by :func:`worktrees_dir`)."""
    root = _git.cache_root() / "worktrees"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def collect_garbage(max_age_s: float = 24 * 3600, ended: Iterable[Path] = ()) -> list[Path]:
    """Remove this worker's worktrees of jobs untouched for ``max_age_s`` (a worker that died
    mid-job leaves its worktrees behind; the job itself finished elsewhere) and of the ``ended``
    job folders, and the commits it kept for resuming jobs older than ``_git.KEEP_FOR_S``.
    Returns the worktrees removed. A job whose worktrees an attempt holds is left alone."""
    root = _git.cache_root() / "worktrees"
    cutoff = time.time() - max_age_s
    jobs = root.iterdir() if root.is_dir() else iter(())
    doomed = [j for j in jobs if j.is_dir() and j.stat().st_mtime < cutoff]
    doomed += [j for j in ended if j not in doomed]
    stale = []
    for job in sorted(doomed):
        try:
            with _git.locked(_beside(job, "lock"), wait=False):
                shutil.rmtree(job, ignore_errors=True)
                _beside(job, "lock").unlink(missing_ok=True)
        except BlockingIOError:
            continue
        stale.append(job)
    repos = _git.cache_root() / "repos"
    for marks in repos.glob(".import-*.marks") if repos.is_dir() else []:
        if marks.stat().st_mtime < cutoff:  # an import's, killed before it removed them
            marks.unlink(missing_ok=True)
    for cache in repos.glob("*.git") if repos.is_dir() else []:
        if not _git.usable(cache):  # made again on its next use
            continue
        if stale:
            with _git.locked(cache.with_suffix(".lock")):
                _git.run(cache, "worktree", "prune")
        _git.drop_kept(cache, older_than=int(time.time() - _git.KEEP_FOR_S))
    return stale
