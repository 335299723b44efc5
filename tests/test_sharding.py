"""shard_files: one module per shard, at most ``max_files`` each, stable ref-safe names."""

from __future__ import annotations

import random
import subprocess

import pytest

from agentparallels.models import Shard
from workflows.sharding import module_of, shard_files

ODD_DIRS = [
    "my pkg",
    ".hidden",
    "a..b",
    "x.lock",
    "tilde~",
    "at@{1}",
    "données",
    "-lead",
    "a-b",
    "a/b",
    "caret^colon:q?star*[",
]


def test_groups_files_by_directory_in_sorted_order() -> None:
    """Each directory becomes one shard; shards and their files come sorted."""
    files = ["b/z.py", "a/sub/w.py", "a/y.py", "a/x.py"]
    assert shard_files(files, 10) == [
        Shard(name="00-a", module="a", files=("a/x.py", "a/y.py")),
        Shard(name="01-a-sub", module="a/sub", files=("a/sub/w.py",)),
        Shard(name="02-b", module="b", files=("b/z.py",)),
    ]


def test_caps_shard_size_and_numbers_the_pieces() -> None:
    """A module of 5 files with at most 2 per shard gives shards of 2, 2 and 1."""
    files = [f"pkg/m{i}.py" for i in range(5)]
    assert shard_files(files, 2) == [
        Shard(name="00-pkg", module="pkg", files=("pkg/m0.py", "pkg/m1.py")),
        Shard(name="01-pkg", module="pkg", files=("pkg/m2.py", "pkg/m3.py")),
        Shard(name="02-pkg", module="pkg", files=("pkg/m4.py",)),
    ]


def test_root_files_go_to_module_dot() -> None:
    """Files at the top level belong to module ".", in a shard named after "root"."""
    assert module_of("setup.py") == "."
    assert module_of("pkg/sub/m.py") == "pkg/sub"
    assert shard_files(("setup.py", "pkg/m.py", "conftest.py"), 5) == [
        Shard(name="00-root", module=".", files=("conftest.py", "setup.py")),
        Shard(name="01-pkg", module="pkg", files=("pkg/m.py",)),
    ]


def test_never_mixes_modules_and_loses_no_file() -> None:
    """Every shard holds one module's files only, within the cap; together, every file once."""
    files = [f"{d}/f{i}.py" for d in [*ODD_DIRS, "pkg", "pkg/deep"] for i in range(3)]
    files += ["top.py", "a/b.py"]
    shards = shard_files(files, 2)
    for shard in shards:
        assert {module_of(f) for f in shard.files} == {shard.module}
        assert 1 <= len(shard.files) <= 2
    assert sorted(f for s in shards for f in s.files) == sorted(files)
    assert len({s.module for s in shards}) == len(ODD_DIRS) + 4  # + pkg, pkg/deep, "." and a
    assert len(shards) == 2 * (len(ODD_DIRS) + 2) + 2  # 3 files: 2 shards; "." and a: 1


def test_names_are_stable_whatever_the_input_order() -> None:
    """The same files in any order give the same shards, named NN-<slug> in module order."""
    files = [f"{d}/f{i}.py" for d in ODD_DIRS for i in range(3)] + ["top.py"]
    expected = shard_files(files, 2)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    assert shard_files(tuple(shuffled), 2) == expected
    assert [s.name for s in expected] == [
        *["00-lead", "01-lead", "02-root", "03-hidden", "04-hidden"],
        *["05-a-b", "06-a-b", "07-a-b", "08-a-b", "09-a-b", "10-a-b", "11-at-1", "12-at-1"],
        *["13-caret-colon-q-star", "14-caret-colon-q-star", "15-donn-es", "16-donn-es"],
        *["17-my-pkg", "18-my-pkg", "19-tilde", "20-tilde", "21-x-lock", "22-x-lock"],
    ]


def test_names_are_unique_and_valid_git_ref_components() -> None:
    """Every name, even for odd or colliding directory names, is a distinct valid ref part."""
    files = [f"{d}/f.py" for d in ODD_DIRS] + ["top.py"] + [f"big/f{i}.py" for i in range(120)]
    names = [s.name for s in shard_files(files, 1)]
    assert len(names) == len(set(names)) == len(ODD_DIRS) + 1 + 120
    for name in names:
        check = subprocess.run(["git", "check-ref-format", f"refs/x/{name}"], check=False)
        assert check.returncode == 0, name


def test_max_files_below_one_is_refused() -> None:
    """A shard size under 1 is a ValueError rather than an empty plan."""
    with pytest.raises(ValueError, match="at least 1"):
        shard_files(["a.py"], -1)
