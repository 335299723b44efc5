"""Tests for activities.rename_engine: real git repositories built in tmp_path."""

import subprocess
import sys
from pathlib import Path

import pytest

from agentparallels.activities.rename_engine import (
    RenameError,
    check_identifier,
    rename,
    rename_report,
    source_folders,
)
from tests.support.repos import git, make_repo


def status(root: Path) -> str:
    return git(root, "status", "--porcelain")


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


SRC_LAYOUT = {
    "src/pkg/__init__.py": "",
    "src/pkg/mod.py": """
        LIMIT = 3


        def func(value, scale=2):
            return value * scale


        def helper():
            return func(1)
        """,
    "src/pkg/use.py": """
        from pkg.mod import func
        from pkg import mod


        def go():
            return func(1, scale=3) + mod.func(value=2) + mod.LIMIT
        """,
    "tests/test_mod.py": """
        import pkg.mod
        from pkg.mod import LIMIT, func


        def test_func():
            assert func(value=1, scale=2) + pkg.mod.func(1) == LIMIT
        """,
}

SHAPES = {
    "pkg/__init__.py": "",
    "pkg/shapes.py": """
        class Base:
            def run(self, x):
                return x


        class Child(Base):
            def run(self, x):
                return super().run(x) + 1


        class Other:
            def run(self, x):
                return -x

            def area(self, size, unit="m", *, digits=2):
                return f"{size:.{digits}f}{unit}"
        """,
    "pkg/app.py": """
        from pkg.shapes import Child, Other


        def main():
            return Child().run(1), Other().run(2), Other().area(3, unit="cm")
        """,
}


def test_source_folders_for_each_layout(tmp_path):
    """src layout gives ['src', 'tests']; flat gives ['', 'tests']; tests package gives ['']."""
    src = make_repo(tmp_path / "a", SRC_LAYOUT)
    flat = make_repo(tmp_path / "b", {"pkg/__init__.py": "", "tests/test_a.py": "X = 1\n"})
    tests_pkg = make_repo(
        tmp_path / "c", {"pkg/__init__.py": "", "tests/__init__.py": "", "tests/test_a.py": ""}
    )
    assert source_folders(src) == ["src", "tests"]
    assert source_folders(flat) == ["", "tests"]
    assert source_folders(tests_pkg) == [""]


def test_function_rename_in_src_layout_updates_tests(tmp_path):
    """Renaming src/pkg/mod.func rewrites its definition, callers and the tests/ importers."""
    root = make_repo(tmp_path, SRC_LAYOUT)
    changed = rename(root, "pkg.mod.func", "compute")
    assert changed == ["src/pkg/mod.py", "src/pkg/use.py", "tests/test_mod.py"]
    assert "def compute(value, scale=2):" in read(root, "src/pkg/mod.py")
    assert "    return compute(1)\n" in read(root, "src/pkg/mod.py")
    assert read(root, "src/pkg/use.py").startswith("from pkg.mod import compute\n")
    assert "return compute(1, scale=3) + mod.compute(value=2) + mod.LIMIT" in read(
        root, "src/pkg/use.py"
    )
    assert read(root, "tests/test_mod.py") == (
        "import pkg.mod\nfrom pkg.mod import LIMIT, compute\n\n\n"
        "def test_func():\n"
        "    assert compute(value=1, scale=2) + pkg.mod.compute(1) == LIMIT\n"
    )
    assert not (root / ".ropeproject").exists()


def test_module_rename_moves_file_and_updates_imports(tmp_path):
    """Renaming pkg.mod moves the file to core.py, fixes every import and returns both paths."""
    root = make_repo(tmp_path, SRC_LAYOUT)
    before = read(root, "src/pkg/mod.py")
    changed = rename(root, "pkg.mod", "core")
    assert changed == ["src/pkg/core.py", "src/pkg/mod.py", "src/pkg/use.py", "tests/test_mod.py"]
    assert not (root / "src/pkg/mod.py").exists()
    assert read(root, "src/pkg/core.py") == before
    assert read(root, "src/pkg/use.py").startswith(
        "from pkg.core import func\nfrom pkg import core\n"
    )
    assert "core.func(value=2) + core.LIMIT" in read(root, "src/pkg/use.py")
    assert read(root, "tests/test_mod.py").startswith("import pkg.core\nfrom pkg.core import LIMIT")
    assert "pkg.core.func(1)" in read(root, "tests/test_mod.py")
    index = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=root, capture_output=True
    )
    assert index.stdout == b""


def test_method_rename_follows_override_but_not_unrelated_class(tmp_path):
    """Base.run -> execute renames Child's override and super() call, not Other.run."""
    root = make_repo(tmp_path, SHAPES)
    changed = rename(root, "pkg.shapes.Base.run", "execute")
    assert changed == ["pkg/app.py", "pkg/shapes.py"]
    shapes = read(root, "pkg/shapes.py")
    assert shapes.count("    def execute(self, x):\n") == 2
    assert "        return super().execute(x) + 1\n" in shapes
    assert "class Other:\n    def run(self, x):\n        return -x\n" in shapes
    app = read(root, "pkg/app.py")
    assert 'return Child().execute(1), Other().run(2), Other().area(3, unit="cm")' in app


def test_parameter_rename_updates_keyword_call_sites(tmp_path):
    """Renaming func's 'scale' rewrites its body and func's scale= call sites, not other()'s."""
    unrelated = "def other(scale=1):\n    return scale\n\n\nX = other(scale=5)\n"
    root = make_repo(tmp_path, {**SRC_LAYOUT, "src/pkg/other.py": unrelated})
    changed = rename(root, "pkg.mod.func.scale", "factor")
    assert changed == ["src/pkg/mod.py", "src/pkg/use.py", "tests/test_mod.py"]
    assert read(root, "src/pkg/other.py") == unrelated
    assert "def func(value, factor=2):\n    return value * factor\n" in read(root, "src/pkg/mod.py")
    assert "return func(1, factor=3) + mod.func(value=2)" in read(root, "src/pkg/use.py")
    assert "assert func(value=1, factor=2) + pkg.mod.func(1)" in read(root, "tests/test_mod.py")


def test_method_parameter_rename_updates_keyword_call_sites(tmp_path):
    """Renaming Other.area's 'unit' parameter updates the method and the unit= call site."""
    root = make_repo(tmp_path, SHAPES)
    changed = rename(root, "pkg.shapes.Other.area.unit", "suffix")
    assert changed == ["pkg/app.py", "pkg/shapes.py"]
    assert (
        'def area(self, size, suffix="m", *, digits=2):\n'
        '        return f"{size:.{digits}f}{suffix}"' in read(root, "pkg/shapes.py")
    )
    assert 'Other().area(3, suffix="cm")' in read(root, "pkg/app.py")


def test_module_constant_rename(tmp_path):
    """Renaming module-level LIMIT updates attribute uses and imports, not a same-named local."""
    files = dict(SRC_LAYOUT)
    files["src/pkg/other.py"] = "def f():\n    LIMIT = 9\n    return LIMIT\n"
    root = make_repo(tmp_path, files)
    changed = rename(root, "pkg.mod.LIMIT", "MAX_ITEMS")
    assert changed == ["src/pkg/mod.py", "src/pkg/use.py", "tests/test_mod.py"]
    assert read(root, "src/pkg/mod.py").startswith("MAX_ITEMS = 3\n")
    assert "+ mod.MAX_ITEMS\n" in read(root, "src/pkg/use.py")
    assert "from pkg.mod import MAX_ITEMS, func" in read(root, "tests/test_mod.py")
    assert read(root, "src/pkg/other.py") == "def f():\n    LIMIT = 9\n    return LIMIT\n"


def test_package_rename_moves_directory(tmp_path):
    """Renaming pkg.sub moves the folder to pkg/tools, lists every moved file and fixes imports."""
    root = make_repo(
        tmp_path,
        {
            "src/pkg/__init__.py": "",
            "src/pkg/sub/__init__.py": "",
            "src/pkg/sub/helpers.py": "def h():\n    return 1\n",
            "src/pkg/main.py": "from pkg.sub.helpers import h\nfrom pkg import sub\n",
            "tests/test_h.py": "import pkg.sub.helpers\n\nX = pkg.sub.helpers.h()\n",
        },
    )
    changed = rename(root, "pkg.sub", "tools")
    assert changed == [
        "src/pkg/main.py",
        "src/pkg/sub/__init__.py",
        "src/pkg/sub/helpers.py",
        "src/pkg/tools/__init__.py",
        "src/pkg/tools/helpers.py",
        "tests/test_h.py",
    ]
    assert not (root / "src/pkg/sub").exists()
    assert read(root, "src/pkg/tools/helpers.py") == "def h():\n    return 1\n"
    assert (
        read(root, "src/pkg/main.py") == "from pkg.tools.helpers import h\nfrom pkg import tools\n"
    )
    assert (
        read(root, "tests/test_h.py") == "import pkg.tools.helpers\n\nX = pkg.tools.helpers.h()\n"
    )


def test_check_identifier_accepts_names_and_rejects_others():
    """check_identifier passes 'new_name' and rejects dotted, hyphenated and keyword names."""
    check_identifier("new_name")
    for bad in ("pkg.name", "new-name", "1st", ""):
        with pytest.raises(RenameError, match="use a bare Python identifier"):
            check_identifier(bad)
    with pytest.raises(RenameError, match="it is a Python keyword"):
        check_identifier("class")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "pkg.mod.func",
            "new-name",
            "invalid new name 'new-name': use a bare Python identifier such as 'new_name' "
            "(letters, digits, underscores; no dots or spaces; not starting with a digit)",
        ),
        (
            "pkg.mod.func",
            "lambda",
            "invalid new name 'lambda': it is a Python keyword; pick another name",
        ),
        (
            "nope.mod.func",
            "g",
            "unknown symbol 'nope.mod.func': no module or package 'nope' "
            "under src/, tests/ (check the dotted path)",
        ),
        (
            "pkg.mod.nope",
            "g",
            "unknown symbol 'pkg.mod.nope': src/pkg/mod.py defines no 'nope' "
            "(check the dotted path)",
        ),
        (
            "pkg.mod.func.nope",
            "g",
            "unknown symbol 'pkg.mod.func.nope': function func in src/pkg/mod.py "
            "defines no 'nope' (check the dotted path)",
        ),
        (
            "pkg.mod.LIMIT.real",
            "g",
            "unknown symbol 'pkg.mod.LIMIT.real': name LIMIT in src/pkg/mod.py is not a class "
            "or function, so it has no 'real' (check the dotted path)",
        ),
        (
            "pkg.mod.func",
            "helper",
            "'helper' is already defined in src/pkg/mod.py; pick another name",
        ),
        (
            "pkg.mod.func.scale",
            "value",
            "'value' is already defined in function func in src/pkg/mod.py; pick another name",
        ),
        ("pkg.mod", "use", "'use' is already defined in src/pkg/; pick another name"),
        ("pkg.mod.func", "func", "'pkg.mod.func' is already named 'func'; nothing to rename"),
    ],
)
def test_errors_leave_tree_unchanged(tmp_path, old, new, message):
    """Each bad request raises RenameError with a one-line message and changes no file."""
    root = make_repo(tmp_path, SRC_LAYOUT)
    with pytest.raises(RenameError) as caught:
        rename(root, old, new)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert status(root) == ""


def test_method_name_clash_in_class_body(tmp_path):
    """Renaming Other.run to the existing Other.area is refused and nothing changes."""
    root = make_repo(tmp_path, SHAPES)
    with pytest.raises(RenameError) as caught:
        rename(root, "pkg.shapes.Other.run", "area")
    assert str(caught.value) == (
        "'area' is already defined in class Other in pkg/shapes.py; pick another name"
    )
    assert status(root) == ""


def test_keyword_only_parameter_is_refused(tmp_path):
    """rope cannot rename a keyword-only parameter, so the request fails cleanly before any edit."""
    root = make_repo(tmp_path, SHAPES)
    with pytest.raises(RenameError) as caught:
        rename(root, "pkg.shapes.Other.area.digits", "places")
    assert str(caught.value) == (
        "cannot rename 'pkg.shapes.Other.area.digits': rope does not handle keyword-only or "
        "positional-only parameters; rename it by hand"
    )
    assert status(root) == ""


def test_class_rename_updates_subclass_bases_imports_and_calls(tmp_path):
    """Renaming class Child to Kid rewrites its definition, the importer and the call site."""
    root = make_repo(tmp_path, SHAPES)
    changed = rename(root, "pkg.shapes.Child", "Kid")
    assert changed == ["pkg/app.py", "pkg/shapes.py"]
    assert "class Kid(Base):\n" in read(root, "pkg/shapes.py")
    app = read(root, "pkg/app.py")
    assert app.startswith("from pkg.shapes import Kid, Other\n")
    assert "return Kid().run(1), Other().run(2)" in app


def test_ignored_and_broken_files_are_left_alone(tmp_path):
    """Gitignored, .venv and build/ files keep the old name; a broken unrelated file is harmless."""
    files = dict(SRC_LAYOUT)
    files[".gitignore"] = "scratch.py\n"
    files["scratch.py"] = "from pkg.mod import func\n"
    files[".venv/lib/site.py"] = "from pkg.mod import func\n"
    files["build/lib/pkg/mod.py"] = "def func():\n    pass\n"
    files["src/pkg/broken.py"] = "def oops(:\n"
    root = make_repo(tmp_path, files)
    changed = rename(root, "pkg.mod.func", "compute")
    assert changed == ["src/pkg/mod.py", "src/pkg/use.py", "tests/test_mod.py"]
    assert read(root, "scratch.py") == "from pkg.mod import func\n"
    assert read(root, ".venv/lib/site.py") == "from pkg.mod import func\n"
    assert read(root, "build/lib/pkg/mod.py") == "def func():\n    pass\n"
    assert read(root, "src/pkg/broken.py") == "def oops(:\n"


def test_offsets_count_characters_not_bytes(tmp_path):
    """A name after non-ASCII text on the same line is found at the right place and renamed."""
    root = make_repo(
        tmp_path, {"pkg/__init__.py": "", "pkg/text.py": 'LABEL = "héllo"; OTHER = 1\n'}
    )
    assert rename(root, "pkg.text.OTHER", "SECOND") == ["pkg/text.py"]
    assert read(root, "pkg/text.py") == 'LABEL = "héllo"; SECOND = 1\n'


# --- identifiers spelled otherwise (NFKC), files that do not parse ----------------------------

LIGATURE = "\ufb01"  # 'ﬁ': Python reads it as 'fi'
WIDE_F = "\uff46"  # fullwidth 'ｆ': Python reads it as 'f'


def test_respelled_names_are_renamed_where_rope_resolves_them(tmp_path):
    """A module spelling `find` with a ligature (and one with a fullwidth letter) is renamed:
    references and an attribute access on the module; not the string, the comment or an
    unrelated local of the same name, which keep their spelling; the report lists the files."""
    fi = LIGATURE
    repo = make_repo(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": f"def find(x):\n    return x\n\n\nCOUNT = {fi}nd(1)\n",
            "pkg/user.py": (
                f"from pkg import core\nfrom pkg.core import {fi}nd\n\n\n"
                f"def use():\n    return {fi}nd(2) + core.{fi}nd(3)  # {fi}nd\n\n\n"
                f"def other():\n    {fi}nd = '{fi}nd'\n    return {fi}nd\n"
            ),
            "pkg/wide.py": f"from pkg.core import {WIDE_F}ind\n\nVALUE = {WIDE_F}ind(4)\n",
            "pkg/plain.py": "from pkg.core import find\n\nVALUE = find(5)\n",
        },
    )
    report = rename_report(repo, "pkg.core.find", "locate")
    assert report.paths == ["pkg/core.py", "pkg/plain.py", "pkg/user.py", "pkg/wide.py"]
    assert report.respelled == ["pkg/core.py", "pkg/user.py", "pkg/wide.py"]
    assert report.unparsed == []
    assert read(repo, "pkg/core.py") == "def locate(x):\n    return x\n\n\nCOUNT = locate(1)\n"
    assert read(repo, "pkg/user.py") == (
        "from pkg import core\nfrom pkg.core import locate\n\n\n"
        f"def use():\n    return locate(2) + core.locate(3)  # {fi}nd\n\n\n"
        f"def other():\n    {fi}nd = '{fi}nd'\n    return {fi}nd\n"
    )
    assert read(repo, "pkg/wide.py") == "from pkg.core import locate\n\nVALUE = locate(4)\n"
    assert read(repo, "pkg/plain.py") == "from pkg.core import locate\n\nVALUE = locate(5)\n"
    code = "import pkg.user, pkg.wide; print(pkg.user.use(), pkg.user.other())"
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert done.stdout.split() == ["5", fi + "nd"], done.stderr


def test_files_that_mention_the_name_but_do_not_parse_are_reported(tmp_path):
    """A file that uses the name but has a syntax error is named in the report and left as
    it is; one that does not mention the name is not named; the rest is renamed."""
    broken = "from pkg.core import find\n\ndef broken(:\n    return find(1)\n"
    repo = make_repo(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "def find(x):\n    return x\n",
            "pkg/broken.py": broken,
            "pkg/unrelated.py": "x = (\n",
            "pkg/user.py": "from pkg.core import find\n",
        },
    )
    report = rename_report(repo, "pkg.core.find", "locate")
    assert report.paths == ["pkg/core.py", "pkg/user.py"]
    assert report.unparsed == ["pkg/broken.py"]
    assert read(repo, "pkg/broken.py") == broken


def test_a_failed_rename_leaves_respelled_files_as_they_were(tmp_path):
    """Respelling happens before rope runs; a rename refused afterwards restores the files."""
    text = f"from pkg.core import {LIGATURE}nd\n"
    repo = make_repo(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "def find(x):\n    return x\n\n\ndef locate():\n    pass\n",
            "pkg/user.py": text,
        },
    )
    with pytest.raises(RenameError, match="already defined"):
        rename_report(repo, "pkg.core.find", "locate")
    assert read(repo, "pkg/user.py") == text
    assert status(repo) == ""
