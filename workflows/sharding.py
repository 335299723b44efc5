"""Data sharding for the orchestrator: whole modules packed into shards of bounded size.

A shard is the work of one sub-agent (a child workflow with its own worktree). Files are grouped
by module (their package or directory); modules are packed, in order, into shards of at most
``max_files`` files and, when a token limit is given, at most ``max_tokens`` tokens (each
file's size counted by the plan), so that every sub-agent's files fit its context window. A
module that fits in a shard is never split, and a module larger than that is cut into pieces
at file boundaries. Packing small modules together keeps the per-child cost (a workflow, a
worktree, a push) from dominating jobs over many small packages.

A single file larger than ``max_tokens`` cannot fit any sub-agent's window; cutting it would
hand a model part of a file to rewrite whole. It is refused (:class:`FileTooLarge`) before any
shard starts, naming the file and both sizes.
"""

from __future__ import annotations

import re
from itertools import groupby
from posixpath import dirname

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.core.models import Shard


def module_of(path: str) -> str:
    """The module a file belongs to: its package or directory (``.`` at the top)."""
    return dirname(path) or "."


def _slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", module).strip("-") or "root"


class FileTooLarge(Exception):
    """A file alone exceeds the per-shard token limit."""

    def __init__(self, path: str, tokens: int, limit: int) -> None:
        super().__init__(
            f"{path} is {tokens} tokens, more than the shard limit of {limit} tokens: raise "
            f"--shard-tokens to at least {tokens}, or leave the file out with --files"
        )
        self.path, self.tokens, self.limit = path, tokens, limit


MIN_SHARD_FILES = 20
"""The fewest files a shard is sized for when the job does not say (a job of up to this many
files is one shard)."""


MIN_PRECOMPUTED_SHARD_FILES = 250
"""The same for an edit the plan computed (a rename): its shards only copy files from the
change set, so a shard costs far more than its files (a child workflow, a worktree, a step)
and a job of up to this many files is one shard."""


def files_per_shard(files: int, parallel: int, minimum: int = MIN_SHARD_FILES) -> int:
    """The shard size of a job of ``files`` files with ``parallel`` shards at once, when the
    job does not set one: every slot busy with one shard, none smaller than
    ``minimum`` (:data:`MIN_SHARD_FILES`). A shard's fixed cost (its worktree, a fill of the whole
    repository, and its workflow) is paid per shard, so a number of shards that grew with the
    files made that cost grow with the repository's size squared (docs/benchmarks.md,
    "Scale")."""
    return max(minimum, -(-files // max(parallel, 1)))


def shard_files(
    files: list[str] | tuple[str, ...],
    max_files: int,
    tokens: dict[str, int] | None = None,
    max_tokens: int | None = None,
) -> list[Shard]:
    """Pack ``files`` into shards of at most ``max_files`` files and ``max_tokens`` tokens
    (``tokens`` maps a path to its size; a missing path counts 0), by whole modules where they
    fit. Shards are named ``NN-<first module>`` (a valid ref component) in a stable order."""
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    sizes = tokens or {}
    limit = max_tokens if max_tokens is not None else float("inf")
    for path in files:
        if sizes.get(path, 0) > limit:
            raise FileTooLarge(path, sizes[path], int(limit))
    shards: list[Shard] = []
    members: list[str] = []
    modules: list[str] = []

    def size(paths: list[str]) -> int:
        return sum(sizes.get(p, 0) for p in paths)

    def close() -> None:
        if members:
            name = f"{len(shards):02d}-{_slug(modules[0])}"
            shards.append(
                Shard(name=name, modules=tuple(modules), files=tuple(members), tokens=size(members))
            )
            members.clear()
            modules.clear()

    def pieces(paths: list[str]) -> list[list[str]]:
        """A module cut, in order, into pieces that each fit a shard on their own."""
        cut: list[list[str]] = [[]]
        for path in paths:
            if len(cut[-1]) == max_files or size([*cut[-1], path]) > limit:
                cut.append([])
            cut[-1].append(path)
        return cut

    by_module = groupby(sorted(files, key=lambda p: (module_of(p), p)), key=module_of)
    for module, group in by_module:
        for piece in pieces(list(group)):
            if len(members) + len(piece) > max_files or size(members + piece) > limit:
                close()
            members.extend(piece)
            modules.append(module)
    close()
    return shards


__all__ = [
    "MIN_PRECOMPUTED_SHARD_FILES",
    "MIN_SHARD_FILES",
    "FileTooLarge",
    "files_per_shard",
    "module_of",
    "shard_files",
]
