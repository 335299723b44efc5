"""Data sharding for the orchestrator: group files by module, cap each shard's size."""

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


def shard_files(files: list[str] | tuple[str, ...], max_files: int) -> list[Shard]:
    """Split ``files`` into shards of at most ``max_files``, never mixing two modules in one shard.
    Shards are named ``NN-<module>`` (a valid ref component) in a stable order."""
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    shards: list[Shard] = []
    for module, group in groupby(sorted(files, key=lambda p: (module_of(p), p)), key=module_of):
        members = list(group)
        for start in range(0, len(members), max_files):
            slug = re.sub(r"[^A-Za-z0-9_-]+", "-", module).strip("-") or "root"
            name = f"{len(shards):02d}-{slug}"
            shards.append(
                Shard(name=name, module=module, files=tuple(members[start : start + max_files]))
            )
    return shards
