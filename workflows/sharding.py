"""Data sharding for the orchestrator: whole modules packed into shards of bounded size.

A shard is the work of one sub-agent (a child workflow with its own worktree). Files are grouped
by module (their package or directory); modules are packed, in order, into shards of at most
``max_files`` files. A module that fits in a shard is never split, and a module larger than
that is cut into pieces. Packing small modules together keeps the per-child cost (a workflow,
a worktree, a push) from dominating jobs over many small packages.
"""

from __future__ import annotations

import re
from itertools import groupby
from posixpath import dirname

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentparallels.models import Shard


def module_of(path: str) -> str:
    """The module a file belongs to: its package or directory (``.`` at the top)."""
    return dirname(path) or "."


def _slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", module).strip("-") or "root"


def shard_files(files: list[str] | tuple[str, ...], max_files: int) -> list[Shard]:
    """Pack ``files`` into shards of at most ``max_files``, by whole modules where they fit.
    Shards are named ``NN-<first module>`` (a valid ref component) in a stable order."""
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    shards: list[Shard] = []
    members: list[str] = []
    modules: list[str] = []

    def close() -> None:
        if members:
            name = f"{len(shards):02d}-{_slug(modules[0])}"
            shards.append(Shard(name=name, modules=tuple(modules), files=tuple(members)))
            members.clear()
            modules.clear()

    by_module = groupby(sorted(files, key=lambda p: (module_of(p), p)), key=module_of)
    for module, group in by_module:
        paths = list(group)
        for start in range(0, len(paths), max_files):
            piece = paths[start : start + max_files]
            if len(members) + len(piece) > max_files:
                close()
            members.extend(piece)
            modules.append(module)
    close()
    return shards
