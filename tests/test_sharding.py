"""shard_files: whole modules packed into shards of at most ``max_files``, stable ref-safe names."""

from __future__ import annotations

import random
import subprocess

import pytest

from agentparallels.core.models import Shard
from agentparallels.workflows.sharding import (
    MIN_SHARD_FILES,
    FileTooLarge,
    files_per_shard,
    module_of,
    shard_files,
)

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


def test_packs_whole_modules_in_sorted_order() -> None:
    """Small modules share a shard, in module order, while the next whole module fits."""
    files = ["b/z.py", "a/sub/w.py", "a/y.py", "a/x.py", "c/1.py", "c/2.py", "d/1.py"]
    assert shard_files(files, 3) == [
        Shard(name="00-a", modules=("a", "a/sub"), files=("a/x.py", "a/y.py", "a/sub/w.py")),
        Shard(name="01-b", modules=("b", "c"), files=("b/z.py", "c/1.py", "c/2.py")),
        Shard(name="02-d", modules=("d",), files=("d/1.py",)),
    ]


def test_a_module_larger_than_a_shard_is_split_and_its_rest_packed() -> None:
    """A module of 5 files with at most 2 per shard gives 2, 2 and 1; the next module's file
    joins the last piece."""
    files = [f"pkg/m{i}.py" for i in range(5)] + ["z/last.py"]
    assert shard_files(files, 2) == [
        Shard(name="00-pkg", modules=("pkg",), files=("pkg/m0.py", "pkg/m1.py")),
        Shard(name="01-pkg", modules=("pkg",), files=("pkg/m2.py", "pkg/m3.py")),
        Shard(name="02-pkg", modules=("pkg", "z"), files=("pkg/m4.py", "z/last.py")),
    ]


def test_root_files_go_to_module_dot() -> None:
    """Files at the top level belong to module ".", in a shard named after "root"."""
    assert module_of("setup.py") == "."
    assert module_of("pkg/sub/m.py") == "pkg/sub"
    assert shard_files(("setup.py", "pkg/m.py", "conftest.py"), 2) == [
        Shard(name="00-root", modules=(".",), files=("conftest.py", "setup.py")),
        Shard(name="01-pkg", modules=("pkg",), files=("pkg/m.py",)),
    ]


def test_never_splits_a_module_that_fits_and_loses_no_file() -> None:
    """Each module that fits in a shard is in exactly one; shards respect the cap; together
    they hold every file once."""
    files = [f"{d}/f{i}.py" for d in [*ODD_DIRS, "pkg", "pkg/deep"] for i in range(3)]
    files += ["top.py", "a/b.py"]
    shards = shard_files(files, 4)
    for module in {module_of(f) for f in files}:
        assert sum(module in s.modules for s in shards) == 1, module
    for shard in shards:
        assert 1 <= len(shard.files) <= 4
        assert {module_of(f) for f in shard.files} == set(shard.modules)
    assert sorted(f for s in shards for f in s.files) == sorted(files)


def test_names_are_stable_whatever_the_input_order() -> None:
    """The same files in any order give the same shards, named NN-<slug> in module order."""
    files = [f"{d}/f{i}.py" for d in ODD_DIRS for i in range(3)] + ["top.py"]
    expected = shard_files(files, 2)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    assert shard_files(tuple(shuffled), 2) == expected
    assert [s.name for s in expected][:8] == [
        *["00-lead", "01-lead", "02-hidden", "03-hidden", "04-a-b", "05-a-b", "06-a-b", "07-a-b"],
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


# --- packing by tokens -----------------------------------------------------------------------


def test_token_limit_packs_whole_modules_while_they_fit() -> None:
    """Modules of 40, 30 and 50 tokens under a 100-token limit: a and b share a shard, c (which
    would make 120) opens the next; each shard reports its tokens."""
    sizes = {"a/1.py": 25, "a/2.py": 15, "b/1.py": 30, "c/1.py": 20, "c/2.py": 30}
    assert shard_files(list(sizes), 20, sizes, 100) == [
        Shard(name="00-a", modules=("a", "b"), files=("a/1.py", "a/2.py", "b/1.py"), tokens=70),
        Shard(name="01-c", modules=("c",), files=("c/1.py", "c/2.py"), tokens=50),
    ]


def test_a_module_over_the_token_limit_is_split_at_file_boundaries() -> None:
    """A module of 4 files of 40 tokens under a 100-token limit: pieces of 2, 2; both caps hold
    at once (files and tokens)."""
    sizes = {f"big/m{i}.py": 40 for i in range(4)} | {"small/x.py": 10}
    shards = shard_files(list(sizes), 20, sizes, 100)
    assert [(s.files, s.tokens) for s in shards] == [
        (("big/m0.py", "big/m1.py"), 80),
        (("big/m2.py", "big/m3.py", "small/x.py"), 90),
    ]
    assert [len(s.files) for s in shard_files(list(sizes), 1, sizes, 100)] == [1] * 5


def test_token_packing_loses_no_file_and_respects_the_limit() -> None:
    """Random sizes under a limit: every file once, every shard within the limit, and every
    module whose files fit one shard in exactly one shard."""
    rng = random.Random(3)
    files = [f"{d}/f{i}.py" for d in ["p", "q", "r/s", "t", "u"] for i in range(rng.randint(1, 6))]
    sizes = {f: rng.randint(1, 90) for f in files}
    shards = shard_files(files, 50, sizes, 150)
    assert sorted(f for s in shards for f in s.files) == sorted(files)
    for shard in shards:
        assert shard.tokens == sum(sizes[f] for f in shard.files) <= 150
    for module in {module_of(f) for f in files}:
        if sum(v for f, v in sizes.items() if module_of(f) == module) <= 150:
            assert sum(module in s.modules for s in shards) == 1, module


def test_a_file_over_the_token_limit_is_refused_by_name() -> None:
    """One file of 5,000 tokens under a 4,000 limit: FileTooLarge names it, both sizes and
    the fix; nothing is cut."""
    sizes = {"pkg/huge.py": 5000, "pkg/ok.py": 10}
    with pytest.raises(FileTooLarge) as raised:
        shard_files(list(sizes), 20, sizes, 4000)
    assert (raised.value.path, raised.value.tokens, raised.value.limit) == (
        "pkg/huge.py",
        5000,
        4000,
    )
    assert str(raised.value) == (
        "pkg/huge.py is 5000 tokens, more than the shard limit of 4000 tokens: raise "
        "--shard-tokens to at least 5000, or leave the file out with --files"
    )
    at_limit = shard_files(list(sizes), 20, sizes, 5000)  # a file exactly at the limit fits
    assert [s.files for s in at_limit] == [("pkg/huge.py",), ("pkg/ok.py",)]


def test_without_a_size_the_shards_are_one_per_parallel_slot_and_a_small_job_one() -> None:
    """The shard size a job gets when it sets none: a small job is one shard; a large one has
    ``parallel`` shards, whatever its size (each shard fills a worktree of the whole
    repository, so their number must not grow with it)."""
    assert files_per_shard(12, parallel=4) == MIN_SHARD_FILES
    files = [f"pkg{i // 10}/m{i}.py" for i in range(2000)]
    for parallel in (1, 4, 8):
        assert len(shard_files(files, files_per_shard(len(files), parallel))) == parallel
    assert len(shard_files(files[:15], files_per_shard(15, 4))) == 1
