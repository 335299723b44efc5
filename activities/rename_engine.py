"""Rename a Python symbol, module or package across a repository, using rope.

`rename(root, "pkg.mod.func", "new_func")` resolves the dotted path against the
repository's source folders (flat layout, ``src/`` layout, ``tests/``), locates
the exact definition with :mod:`ast`, lets rope compute every dependent edit
(imports, call sites, keyword arguments, method overrides) and applies them in
place.  Problems found before any edit (bad name, unknown symbol, name clash)
raise :class:`RenameError` with a one-line, actionable message.

Two kinds of file rope cannot read are handled here, and reported in :class:`Renamed`:

- *Other spellings.* Python folds identifiers to NFKC, so ``\ufb01nd`` (with the ligature
  ``\ufb01``) or fullwidth ``\uff46ind`` *is* the name ``find``. Rope matches names as text: it
  silently skips such a file, or fails on it with a token-mapping error. For those files only,
  every identifier token is first respelled as Python reads it (``tokenize``: NAME tokens,
  never strings or comments, so the code means exactly what it meant), rope renames as usual,
  so its resolution decides every occurrence (an attribute ``obj.\ufb01nd`` is renamed only if
  rope resolves ``obj`` to the renamed symbol's owner), and every token rope did not rename
  gets its original spelling back. Those files are listed in ``Renamed.respelled``.
- *Files that do not parse.* Rope skips them; a file that mentions the name but has a syntax
  error is listed in ``Renamed.unparsed`` (left untouched, for the user to fix), never
  skipped silently.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import subprocess
import tokenize
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rope.base import exceptions as rope_exceptions
from rope.base.change import ChangeSet, MoveResource
from rope.base.fscommands import FileSystemCommands, file_data_to_unicode
from rope.base.project import Project
from rope.refactor.rename import Rename

_SKIP_DIRS = {"build", "dist", "node_modules", "venv", "site-packages", "__pycache__"}
_IGNORED = ["*.pyc", "*~", ".*", "*.egg-info", *sorted(_SKIP_DIRS)]  # rope resource patterns
_TEST_DIRS = ("tests", "test", "testing")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_Binder = ast.stmt | ast.expr | ast.arg
"""A node that binds a name (a def, a class, an assigned name, a parameter): it has a position."""
_SUPER_CALL = re.compile(r"\bsuper\s*\([^()]*\)\s*\.\s*$")


class RenameError(Exception):
    """A rename that cannot be done as asked.

    str(e) is one line saying what is wrong and how to fix it.
    """


def check_identifier(new: str) -> None:
    """Raise RenameError unless `new` is a valid, non-keyword Python identifier.

    It must be a bare name: no dots.
    """
    if not isinstance(new, str) or not new.isidentifier():
        raise RenameError(
            f"invalid new name {new!r}: use a bare Python identifier such as 'new_name' "
            "(letters, digits, underscores; no dots or spaces; not starting with a digit)"
        )
    if keyword.iskeyword(new):
        raise RenameError(f"invalid new name {new!r}: it is a Python keyword; pick another name")


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _SKIP_DIRS or path.name.endswith(".egg-info")


def _is_top_level(child: Path) -> bool:
    """Whether a root entry is an importable top-level module or package (flat layout)."""
    if _skipped(child):
        return False
    if child.is_file():
        return child.suffix == ".py"
    if not child.is_dir() or not child.name.isidentifier():
        return False
    regular = (child / "__init__.py").exists()
    return regular or (child.name not in ("src", *_TEST_DIRS) and any(child.glob("*.py")))


def source_folders(root: Path) -> list[str]:
    """Folders (relative posix) that hold top-level packages.

    'src' for a src layout, '' for the root, plus tests/ etc. as rope needs them
    (a tests folder without __init__.py, whose modules import each other by bare name).
    """
    root = Path(root)
    src = root / "src"
    folders = ["src"] if not (src / "__init__.py").exists() and any(src.rglob("*.py")) else []
    if not folders or any(_is_top_level(child) for child in root.iterdir()):
        folders.append("")
    for name in _TEST_DIRS:
        if not (root / name / "__init__.py").exists() and any((root / name).rglob("*.py")):
            folders.append(name)
    return folders


@dataclass
class _Target:
    path: str  # file or folder (relative posix) handed to rope
    offset: int | None  # None: rename the module/package itself
    name: str
    taken: set[str]  # names already bound where `name` lives
    where: str  # that place, for messages


def _flat(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements of a scope, looking into if/try/with/for/while blocks (not into defs)."""
    out = []
    for stmt in body:
        out.append(stmt)
        if not isinstance(stmt, _DEFS):
            for attr in ("body", "orelse", "finalbody"):
                out.extend(_flat(getattr(stmt, attr, [])))
            for handler in getattr(stmt, "handlers", []):
                out.extend(_flat(handler.body))
    return out


def _names(node: ast.AST | None) -> list[ast.Name]:
    """Plain names bound by an assignment target (through tuples, lists and stars)."""
    if isinstance(node, ast.Name):
        return [node]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for elt in node.elts for n in _names(elt)]
    return _names(node.value) if isinstance(node, ast.Starred) else []


def _bindings(body: list[ast.stmt]) -> tuple[dict[str, _Binder], set[str]]:
    """Definitions in a module/class body (name -> node), and every bound name incl. imports."""
    defs: dict[str, _Binder] = {}
    bound: set[str] = set()
    for stmt in _flat(body):
        targets: Sequence[ast.AST | None] = []
        if isinstance(stmt, _DEFS):
            defs.setdefault(stmt.name, stmt)
        elif isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
            targets = [stmt.target]
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            targets = [item.optional_vars for item in stmt.items]
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        for name in (n for t in targets for n in _names(t)):
            defs.setdefault(name.id, name)
    return defs, bound | set(defs)


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, ast.arg]:
    a = func.args
    args = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
    return {arg.arg: arg for arg in args}


def _locals(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    stores = {
        n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    return set(_params(func)) | _bindings(func.body)[1] | stores


def _offset(text: str, node: _Binder) -> int:
    """Character offset (as rope counts) of the name a def/class/assignment/parameter binds."""
    line_start = 0
    for _ in range(node.lineno - 1):
        line_start = text.index("\n", line_start) + 1
    line = text[line_start:].partition("\n")[0]
    pos = line_start + len(line.encode()[: node.col_offset].decode())
    if isinstance(node, _DEFS):
        found = re.compile(rf"\b(?:def|class)\s+({node.name})\b").search(text, pos)
        assert found is not None, "a def or class statement spells its own name"
        return found.start(1)
    return pos


def _find_module(root: Path, folders: list[str], parts: list[str]) -> tuple[Path, list[str]]:
    """The longest prefix of `parts` that is a module file or package folder, and the rest."""
    for i in range(len(parts), 0, -1):
        for folder in folders:
            base = (root / folder).joinpath(*parts[:i])
            namespace = i == len(parts) and any(base.glob("*.py"))
            if base.is_dir() and ((base / "__init__.py").is_file() or namespace):
                return base, parts[i:]
            if base.with_name(base.name + ".py").is_file():
                return base.with_name(base.name + ".py"), parts[i:]
    where = ", ".join(f"{f}/" if f else "the repository root" for f in folders)
    raise RenameError(
        f"unknown symbol {'.'.join(parts)!r}: no module or package {parts[0]!r} "
        f"under {where} (check the dotted path)"
    )


def _resolve(root: Path, folders: list[str], old: str) -> _Target:
    """Locate `old`: a module/package path, or a file and the offset of the defining name."""
    parts = old.split(".")
    if not all(p.isidentifier() for p in parts):
        raise RenameError(f"invalid dotted path {old!r}: write it like 'pkg.module.name'")
    found, rest = _find_module(root, folders, parts)
    if not rest:
        siblings = found.parent.iterdir()
        taken = {p.stem for p in siblings if p.suffix == ".py" or (p.is_dir() and not _skipped(p))}
        where = found.parent.relative_to(root).as_posix() + "/"
        where = "the repository root" if where == "./" else where
        return _Target(found.relative_to(root).as_posix(), None, parts[-1], taken, where)
    module = found / "__init__.py" if found.is_dir() else found
    rel = module.relative_to(root).as_posix()
    text = file_data_to_unicode(module.read_bytes())[0]  # decoded exactly as rope reads it
    try:
        node: ast.AST = ast.parse(text, rel)
    except SyntaxError as e:
        raise RenameError(f"cannot parse {rel}: {e.msg} at line {e.lineno}; fix it first") from e
    label = rel
    scope: Mapping[str, _Binder]
    for i, name in enumerate(rest):
        if isinstance(node, _FUNCS):
            scope, taken = _params(node), _locals(node)
        elif isinstance(node, ast.Module | ast.ClassDef):
            scope, taken = _bindings(node.body)
        else:
            raise RenameError(
                f"unknown symbol {old!r}: {label} is not a class or function, "
                f"so it has no {name!r} (check the dotted path)"
            )
        if name not in scope:
            raise RenameError(
                f"unknown symbol {old!r}: {label} defines no {name!r} (check the dotted path)"
            )
        if isinstance(node, _FUNCS) and scope[name] in node.args.posonlyargs + node.args.kwonlyargs:
            raise RenameError(
                f"cannot rename {old!r}: rope does not handle keyword-only or positional-only "
                "parameters; rename it by hand"
            )
        if i == len(rest) - 1:
            return _Target(rel, _offset(text, scope[name]), name, taken, label)
        node = scope[name]
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        label = f"{kind if isinstance(node, _DEFS) else 'name'} {name} in {rel}"
    raise AssertionError("unreachable")


def _roots(pyclass, name: str) -> set:
    """Topmost classes of `pyclass`'s hierarchy that define `name` (rope's in_hierarchy view)."""
    bases = pyclass.get_superclasses()
    return set().union(*(_roots(b, name) for b in bases if name in b)) or {pyclass}


def _super_calls(project: Project, renamer: Rename, name: str):
    """rope calls `super().name` 'unsure'; accept it when it reaches the renamed method family."""
    if not renamer.is_method():
        return None
    wanted = _roots(renamer.old_pyname.get_object().parent, name)

    def accept(occurrence) -> bool:
        start = max(0, occurrence.offset - 200)
        if not _SUPER_CALL.search(occurrence.resource.read()[start : occurrence.offset]):
            return False
        scope = project.get_pymodule(occurrence.resource).get_scope()
        scope = scope.get_inner_scope_for_offset(occurrence.offset)
        while scope is not None and scope.get_kind() != "Class":
            scope = scope.parent
        bases = scope.pyobject.get_superclasses() if scope is not None else []
        return bool(wanted & set().union(*(_roots(b, name) for b in bases if name in b)))

    return accept


def _git_files(root: Path) -> set[str] | None:
    """Python files git knows (tracked, or untracked and not ignored); None outside git."""
    cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.py"]
    try:
        out = subprocess.run(cmd, cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.decode("utf-8", "surrogateescape").split("\0")) - {""}


def _changed_paths(changes: ChangeSet) -> set[str]:
    """Paths touched by rope's changes; a moved folder contributes every file's old and new path."""
    paths: set[str] = set()
    for change in changes.changes:
        if isinstance(change, ChangeSet):
            paths |= _changed_paths(change)
        elif isinstance(change, MoveResource) and change.resource.is_folder():
            old, new, stack = change.resource.path, change.new_resource.path, [change.resource]
            while stack:
                for child in stack.pop().get_children():
                    if child.is_folder():
                        stack.append(child)
                    else:
                        paths.update({child.path, new + child.path[len(old) :]})
        else:
            paths.update(r.path for r in change.get_changed_resources())
    return paths


def _open_project(root: Path, folders: list[str]) -> Project:
    with warnings.catch_warnings():  # rope flags its own source_folders plumbing as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return Project(
            str(root),
            fscommands=FileSystemCommands(),  # plain file operations: no `git mv`, index untouched
            ropefolder=None,  # no .ropeproject folder
            source_folders=folders,
            ignored_resources=_IGNORED,
            ignore_syntax_errors=True,  # a broken unrelated file must not block the rename
            automatic_soa=False,
            perform_doa=False,
            save_history=False,
        )


@dataclass(frozen=True)
class Renamed:
    """What a rename changed, and what it could not read."""

    paths: list[str]
    """Changed paths (relative, posix, sorted); a moved module contributes old and new path."""
    respelled: list[str] = field(default_factory=list)
    """Changed files whose identifiers spell the name otherwise (NFKC): renamed token by
    token on Python's spelling, see the module docstring."""
    unparsed: list[str] = field(default_factory=list)
    """Files that mention the name but do not parse: not renamed."""


def rename(root: Path, old: str, new: str) -> list[str]:
    """Apply the rename in place; the changed paths (see :func:`rename_report`)."""
    return rename_report(root, old, new).paths


def rename_report(root: Path, old: str, new: str) -> Renamed:
    """Apply the rename in place to the files under `root` (a git working tree).

    Returns the changed paths relative to root (posix), including both old and new path
    when a module/package is moved, and the files handled specially (module docstring).
    Raises RenameError (before changing anything) for: invalid identifier; unknown
    symbol; target already defined in that scope.
    """
    root = Path(root).resolve()
    check_identifier(new)
    old = ".".join(_nfkc(part) for part in old.split("."))
    folders = source_folders(root)
    known = _git_files(root)
    parts = old.split(".")
    originals, unparsed = _prepare(root, known, set(parts), parts[-1])
    try:
        paths, moves = _rename(root, folders, known, old, new)
        respelled = _respell_back(root, originals, moves, set(paths))
    except BaseException:
        for rel, text in originals.items():  # as it was: nothing changed
            (root / rel).write_bytes(text.encode("utf-8"))
        raise
    return Renamed(paths, respelled, unparsed)


def _rename(
    root: Path, folders: list[str], known: set[str] | None, old: str, new: str
) -> tuple[list[str], dict[str, str]]:
    target = _resolve(root, folders, old)
    if new == target.name:
        raise RenameError(f"{old!r} is already named {new!r}; nothing to rename")
    if new in target.taken:
        raise RenameError(f"{new!r} is already defined in {target.where}; pick another name")
    project = _open_project(root, folders)
    try:
        renamer = Rename(project, project.get_resource(target.path), target.offset)
        files = [f for f in project.get_python_files() if known is None or f.path in known]
        unsure = _super_calls(project, renamer, target.name)
        changes = renamer.get_changes(new, in_hierarchy=True, unsure=unsure, resources=files)
        if target.offset is None and not any(isinstance(c, MoveResource) for c in changes.changes):
            raise RenameError(
                f"cannot move {target.path}: rope only renames packages that have an "
                "__init__.py; add one first"
            )
        paths, moves = _changed_paths(changes), _moves(changes)
        for observer in list(project.observers):  # cache upkeep costs ~5ms a file; not needed
            project.remove_observer(observer)
        project.do(changes)
    except rope_exceptions.RopeError as e:
        reason = " ".join(str(e).split())
        raise RenameError(f"rope cannot rename {old!r}: {reason}; check the dotted path") from e
    finally:
        project.close()
    return sorted(paths), moves


# --- other spellings, and files that do not parse ----------------------------------------------


def _nfkc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _name_tokens(text: str) -> list[tokenize.TokenInfo]:
    """The NAME tokens of ``text`` (raises tokenize.TokenError or SyntaxError if it cannot)."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [t for t in tokens if t.type == tokenize.NAME]


def _replaced(text: str, edits: list[tuple[tokenize.TokenInfo, str]]) -> str:
    """``text`` with each token's span replaced by the string paired with it."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    for tok, spelling in sorted(edits, key=lambda e: e[0].start, reverse=True):
        a = starts[tok.start[0] - 1] + tok.start[1]
        b = starts[tok.end[0] - 1] + tok.end[1]
        text = text[:a] + spelling + text[b:]
    return text


def _python_files(root: Path, known: set[str] | None) -> list[str]:
    if known is not None:
        return sorted(known)
    found = root.rglob("*.py")
    rels = (p.relative_to(root) for p in found if p.is_file())
    return sorted(r.as_posix() for r in rels if not any(_skipped(Path(x)) for x in r.parts))


def _prepare(
    root: Path, known: set[str] | None, names: set[str], symbol: str
) -> tuple[dict[str, str], list[str]]:
    """Respell, in place, the files whose identifiers spell one of ``names`` otherwise, as
    Python reads them (returns their original text by path); and list the files that mention
    ``symbol`` but do not parse."""
    originals: dict[str, str] = {}
    unparsed: list[str] = []
    for rel in _python_files(root, known):
        path = root / rel
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # rope decodes other encodings itself; these need no respelling
        if symbol not in _nfkc(text):
            continue
        try:
            ast.parse(text, rel)
            tokens = _name_tokens(text) if not text.isascii() else []
        except (SyntaxError, ValueError, tokenize.TokenError):
            unparsed.append(rel)
            continue
        if any(t.string != _nfkc(t.string) and _nfkc(t.string) in names for t in tokens):
            edits = [(t, _nfkc(t.string)) for t in tokens if t.string != _nfkc(t.string)]
            originals[rel] = text
            path.write_bytes(_replaced(text, edits).encode("utf-8"))
    return originals, unparsed


def _moves(changes: ChangeSet) -> dict[str, str]:
    """Old path -> new path of each file rope's changes move (a moved folder: its files)."""
    moved: dict[str, str] = {}
    for change in changes.changes:
        if isinstance(change, ChangeSet):
            moved |= _moves(change)
        elif isinstance(change, MoveResource):
            moved[change.resource.path] = change.new_resource.path
    return moved


def _moved(rel: str, moves: dict[str, str]) -> str:
    for old, new in moves.items():
        if rel == old or rel.startswith(old + "/"):
            return new + rel[len(old) :]
    return rel


def _respell_back(
    root: Path, originals: dict[str, str], moves: dict[str, str], changed: set[str]
) -> list[str]:
    """Give every token of the respelled files that rope did not rename its original
    spelling back; the respelled files rope changed."""
    renamed = []
    for rel, original in sorted(originals.items()):
        now = _moved(rel, moves)
        path = root / now
        text = path.read_bytes().decode("utf-8")
        before, after = _name_tokens(original), _name_tokens(text)
        if len(before) != len(after):
            raise RenameError(
                f"cannot rename in {rel}: after the rename its identifiers no longer line up "
                "with the original's; rename it by hand"
            )
        edits = [
            (a, b.string)
            for b, a in zip(before, after, strict=True)
            if a.string == _nfkc(b.string) and a.string != b.string
        ]
        path.write_bytes(_replaced(text, edits).encode("utf-8"))
        if rel in changed or now in changed:
            renamed.append(now)
    return renamed


__all__ = [
    "RenameError",
    "Renamed",
    "check_identifier",
    "rename",
    "rename_report",
    "source_folders",
]
