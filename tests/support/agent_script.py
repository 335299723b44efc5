"""Scripts for the scripted model server that drive the coding agent: a planner's answer,
units' tool calls (tests and the recorded replay histories share them)."""

from __future__ import annotations

import json
import sys
from typing import Any

from agentparallels.core.agentjob import PLANNER_MARKER, unit_marker
from agentparallels.testing.fake_llm import FakeLLM

__all__ = [
    "CHECK",
    "FILES",
    "FINISH",
    "MODEL",
    "TESTS",
    "edit",
    "plan",
    "rename_script",
    "tools",
    "unit",
]

MODEL = "openai:fake-coder"
FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": "def old_name() -> int:\n    return 1\n",
    "pkg/b.py": "from pkg.a import old_name\n\n\ndef use() -> int:\n    return old_name() + 1\n",
    "tests/__init__.py": "",
    "tests/test_a.py": "from pkg.a import old_name\n\n\ndef test_a() -> None:\n"
    "    assert old_name() == 1\n",
}
TESTS = f"{sys.executable} -m pytest -q -p no:cacheprovider tests"


def tools(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """One model answer that calls ``calls`` (name, arguments)."""
    return {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}


def plan(*units: dict[str, Any]) -> dict[str, Any]:
    return {"content": json.dumps({"summary": "the plan", "units": list(units)})}


def unit(name: str, scope: list[str], *deps: str, goal: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "goal": goal or f"do {name}",
        "scope": scope,
        "capability": "python",
        "depends_on": list(deps),
    }


def edit(path: str, old: str, new: str) -> tuple[str, dict[str, Any]]:
    return "edit_file", {"path": path, "old": old, "new": new}


FINISH = ("finish", {"summary": "done"})
CHECK = ("run_check", {})


def rename_script(fake: FakeLLM) -> None:
    """Three units: rename the function, then (depending on it) update its caller and its
    test, and add a test of the caller."""
    fake.push_thread(
        PLANNER_MARKER,
        plan(
            unit("rename", ["pkg/a.py"]),
            unit("callers", ["pkg/b.py", "tests/test_a.py"], "rename"),
            unit("new-test", ["tests/test_b.py"], "callers"),
        ),
    )
    fake.push_thread(
        unit_marker("rename"),
        tools(("read_file", {"path": "pkg/a.py"})),
        tools(edit("pkg/a.py", "def old_name()", "def new_name()")),
        tools(CHECK),
        tools(FINISH),
    )
    fake.push_thread(
        unit_marker("callers"),
        tools(("search", {"pattern": "old_name"})),
        tools(
            edit("pkg/b.py", "from pkg.a import old_name", "from pkg.a import new_name"),
            edit("pkg/b.py", "return old_name() + 1", "return new_name() + 1"),
        ),
        tools(edit("tests/test_a.py", "import old_name", "import new_name")),
        tools(edit("tests/test_a.py", "assert old_name()", "assert new_name()")),
        tools(CHECK, ("run_tests", {})),
        tools(FINISH),
    )
    test_b = "from pkg.b import use\n\n\ndef test_use() -> None:\n    assert use() == 2\n"
    fake.push_thread(
        unit_marker("new-test"),
        tools(("write_file", {"path": "tests/test_b.py", "content": test_b})),
        tools(("run_tests", {})),
        tools(FINISH),
    )
