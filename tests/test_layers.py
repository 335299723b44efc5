"""The floors hold: every step spec has one implementation, and wire names are spelled once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from temporalio.activity import _Definition

from agentparallels import activities
from agentparallels.core import names, steps

ROOT = Path(__file__).resolve().parent.parent


def test_every_step_has_one_registered_implementation() -> None:
    """The worker registers activities.ALL; workflows call steps.ALL by name: the two agree."""
    registered = sorted(_Definition.must_from_callable(fn).name for fn in activities.ALL)
    assert registered == sorted(s.name for s in steps.ALL)


def test_workflow_names_are_spelled_once_in_the_package() -> None:
    """A workflow's name lives in core/names.py; definitions and callers use the constant
    (tests and recorded histories keep the literal: they check the wire)."""
    sources = [
        p
        for folder in ("agentparallels", "workflows", "activities", "bench")
        for p in (ROOT / folder).rglob("*.py")
        if not p.is_symlink() and ".venv" not in p.parts
    ] + [ROOT / "worker.py"]
    for name in ("RefactorWorkflow", "ShardWorkflow", "ReviewWorkflow", "AgentWorkflow"):
        spelled = [p for p in sources if re.search(rf'"{name}"', _code(p))]
        assert spelled == [ROOT / "agentparallels/core/names.py"], (name, spelled)
    assert names.REFACTOR == "RefactorWorkflow"


def _code(path: Path) -> str:
    """A module without its ``__all__`` (whose strings name Python objects, not the wire)."""
    return re.sub(r"__all__[^=]*=\s*\[[^\]]*\]", "", path.read_text())


# --- Small functions, stated surfaces --------------------------------------------------------

MAX_FUNCTION_LINES = 60


def _package() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, read where it lives in the
    repository (the links under agentparallels/ are skipped: their targets are read once)."""
    paths = [
        p
        for folder in ("agentparallels", "workflows", "activities")
        for p in (ROOT / folder).rglob("*.py")
        if p.resolve() == p  # not through a link
    ] + [ROOT / "worker.py"]
    return {_dotted(p): p for p in paths}


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "agentparallels":
        parts.insert(0, "agentparallels")  # workflows/, activities/, worker.py
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_function_is_longer_than_60_lines() -> None:
    """A function that fits on a screen is read top to bottom: longer ones are split into
    named steps (counted from the ``def`` line to the end of the body, nested ones too)."""
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"
        for path in _package().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert long == []


def _bound(tree: ast.Module) -> dict[str, ast.stmt]:
    """The names a module binds at its top level (definitions, assignments, imports)."""
    bound: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update((t.id, node) for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update(((a.asname or a.name).split(".")[0], node) for a in node.names)
    return bound


def _stated(tree: ast.Module) -> list[str] | None:
    """The module's ``__all__`` (a literal list of strings), or None without one."""
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "__all__":
            return list(ast.literal_eval(value))
    return None


def test_every_public_module_states_its_public_names() -> None:
    """A public module lists its surface in ``__all__``: every public function and class it
    defines, and only names it binds. A package's ``__init__`` or ``__main__`` that binds no
    public name has nothing to state; one that does (a re-export) states it too."""
    problems = []
    for dotted, path in _package().items():
        tree = ast.parse(path.read_text())
        public = {n: node for n, node in _bound(tree).items() if not n.startswith("_")}
        if path.name.startswith("_") and (path.stem not in ("__init__", "__main__") or not public):
            continue
        stated = _stated(tree)
        if stated is None:
            problems.append(f"{dotted}: no __all__")
            continue
        defined = {
            n
            for n, node in public.items()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        problems += [
            f"{dotted}: {n} is in __all__ but not bound" for n in stated if n not in public
        ]
        problems += [f"{dotted}: {n} is public but not in __all__" for n in defined - set(stated)]
        problems += [
            f"{dotted}: {n} is twice in __all__" for n in set(stated) if stated.count(n) > 1
        ]
    assert problems == []


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The project modules ``tree`` imports, however spelled (``import a.b``, ``from a import
    b`` where b is a module, ``from a.b import name``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found & modules


def _defines_steps(tree: ast.Module) -> bool:
    """Whether the module is the home of a workflow or an activity (their names are on the
    wire; the module is where a reader of the worker's lists looks for them)."""
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and any(
            ast.unparse(d).startswith(("workflow.defn", "implements(", "activity.defn"))
            for d in node.decorator_list
        )
        for node in ast.walk(tree)
    )


def test_modules_only_their_package_uses_are_private() -> None:
    """A module that only its siblings import is a helper of its package: it is named ``_x``,
    unless something says it is meant to be seen (tests, benches or examples import it, the
    documentation names it, it defines a workflow or an activity, or it is one of the
    command line's command modules)."""
    package = _package()
    outside = [
        p
        for folder in ("tests", "bench", "examples")
        for p in (ROOT / folder).rglob("*.py")
        if "shopkart" not in p.parts
    ]
    importers: dict[str, set[str]] = {m: set() for m in package}
    for source in [*package.values(), *outside]:
        who = _dotted(source) if source in package.values() else str(source)
        for module in _imports(ast.parse(source.read_text()), set(package)):
            importers[module].add(who)
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
    unexplained = []
    for dotted, path in package.items():
        parent = dotted.rsplit(".", 1)[0]
        if path.name.startswith("_") or parent == "agentparallels.cli":
            continue
        used_outside = any(
            not (who == parent or who.rsplit(".", 1)[0] == parent) for who in importers[dotted]
        )
        named = dotted.removeprefix("agentparallels.") in docs or (
            path.relative_to(ROOT).as_posix() in docs
        )
        if not (used_outside or named or _defines_steps(ast.parse(path.read_text()))):
            unexplained.append(f"{dotted}: only {sorted(importers[dotted])} import it")
    assert unexplained == []


def _floors() -> list[set[str]]:
    """The module names of each floor of the layers contract in pyproject.toml, top first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [set(re.findall(r"\w+", floor)) for floor in layers["layers"]]


def _drawing() -> list[set[str]]:
    """The module names of each floor of the README's architecture drawing, top first: floors
    are separated by a line that holds only the arrow ``|``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("```", 2)[1]
    floors = [""]
    for line in section.splitlines()[1:]:
        if line.strip() == "|":
            floors.append("") if floors[-1] else None
        else:
            floors[-1] += " " + line
    words = [re.findall(r"agentparallels\.(\w+)|\b(\w+)\b", floor) for floor in floors]
    return [{a or b for a, b in floor} for floor in words if floor]


def test_the_readme_draws_the_floors_the_contracts_enforce() -> None:
    """Each floor of the contract is drawn, in the same order, naming each of its modules."""
    drawn = _drawing()
    floors = _floors()
    assert len(drawn) == len(floors), (drawn, floors)
    for modules, picture in zip(floors, drawn, strict=True):
        assert modules <= picture, f"the README's floor lacks {sorted(modules - picture)}"


def test_a_shards_run_imports_no_other_job() -> None:
    """The workflow sandbox imports a run's module, its package and what they import afresh
    for every run a worker starts or replays: a shard (the run a job starts most of) must not
    pay for compiling the coding agent, the review committee or the job around it."""
    code = (
        "import sys, agentparallels.workflows.shard; "
        "print(' '.join(m for m in sys.modules if m.startswith('agentparallels.workflows')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.rpartition(".")[2] for m in done.stdout.split()}
    others = {"agent", "agent_unit", "agent_review", "consensus", "routing", "refactor", "shipped"}
    assert "shard" in loaded
    assert loaded & others == set()
