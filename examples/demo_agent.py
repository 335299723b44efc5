"""The demo behind `make demo-agent`: the coding agent plans a two-unit change of the example
package, edits it with tools and publishes a tested branch.

The task: rename ``Cart.total()`` to ``Cart.subtotal_cents()`` (``Receipt.total()`` keeps its
name), update its caller in another module, update the tests and add one. A scripted model
server on 127.0.0.1 answers as a good model would: the planner with a plan of two units
(``rename`` in the package, then ``tests``, which depends on it), each unit with tool calls
(read, search, edit, check, test, finish). No key is needed; the job, its workflows, tool steps,
checkpoints, merge, verification and publish are the real ones.

With ``DEMO_MODEL`` set (e.g. ``openai:gpt-4.1`` with ``OPENAI_API_KEY``), that model does the
planning and the edits instead.

The script is built here from the example's own files: every ``edit_file`` snippet is checked
to occur exactly once, in order, before anything starts (``tests/test_demo_agent_script.py``
also applies the edits and runs the example's tests), so the demo cannot rot silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentparallels.core.agentjob import (
    PLANNER_MARKER,
    AgentPlan,
    UnitPlan,
    in_files,
    topological,
    unit_marker,
)
from examples.example_repo import CLI, TESTS, fresh_copy, show_branch

__all__ = [
    "FILES",
    "PLAN",
    "TASK",
    "Edit",
    "ScriptError",
    "apply_edits",
    "edits_of",
    "main",
    "threads",
]

TASK = (
    "Rename the method Cart.total() in src/shopkart/orders/cart.py to Cart.subtotal_cents() "
    "(Receipt.total() keeps its name), update every caller, and add a test that an empty "
    "cart's subtotal is 0."
)
FILES = ("src/**/*.py", "tests/**/*.py")
CART = "src/shopkart/orders/cart.py"
CHECKOUT = "src/shopkart/orders/checkout.py"
TESTS_FILE = "tests/test_orders.py"

PLAN = AgentPlan(
    summary="Rename the method where it is defined and at its one caller in the package, "
    "then update the tests that call it and add one for an empty cart.",
    units=(
        UnitPlan(
            name="rename",
            goal="Rename Cart.total() to Cart.subtotal_cents() and update its caller in "
            "checkout.py; leave Receipt.total() alone.",
            scope=(CART, CHECKOUT),
            capability="python",
        ),
        UnitPlan(
            name="tests",
            goal="Call Cart.subtotal_cents() in the tests and add a test that an empty "
            "cart's subtotal is 0.",
            scope=(TESTS_FILE,),
            capability="tests",
            depends_on=("rename",),
        ),
    ),
)

NEW_TEST = """def test_empty_cart_subtotal_is_zero() -> None:
    cart = Cart()
    assert cart.is_empty()
    assert cart.subtotal_cents() == 0


"""


@dataclass(frozen=True)
class Edit:
    """One ``edit_file`` call: replace the one occurrence of ``old`` in ``path``."""

    path: str
    old: str
    new: str


UNIT_EDITS: dict[str, tuple[Edit, ...]] = {
    "rename": (
        Edit(
            CART,
            "    def total(self) -> int:\n"
            '        """Subtotal of all lines in cents, before discounts, tax and shipping."""',
            "    def subtotal_cents(self) -> int:\n"
            '        """Subtotal of all lines in cents, before discounts, tax and shipping."""',
        ),
        Edit(CHECKOUT, "    subtotal = cart.total()\n", "    subtotal = cart.subtotal_cents()\n"),
    ),
    "tests": (
        Edit(
            TESTS_FILE,
            "    assert cart.total() == 3 * to_cents(amount=MUG.price) + 2400\n",
            "    assert cart.subtotal_cents() == 3 * to_cents(amount=MUG.price) + 2400\n",
        ),
        Edit(
            TESTS_FILE,
            "    assert cart.total() == 3750\n",
            "    assert cart.subtotal_cents() == 3750\n",
        ),
        Edit(
            TESTS_FILE,
            "def test_checkout_builds_receipt_and_reserves_stock(",
            NEW_TEST + "def test_checkout_builds_receipt_and_reserves_stock(",
        ),
    ),
}
"""The edits each unit makes, in order."""


class ScriptError(Exception):
    """The scripted answers no longer fit the example (a snippet missing or not unique)."""


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    """One scripted answer: a single tool call."""
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _edit(e: Edit) -> dict[str, Any]:
    return _call("edit_file", path=e.path, old=e.old, new=e.new)


def _rename_thread() -> list[dict[str, Any]]:
    cart, checkout = UNIT_EDITS["rename"]
    return [
        _call("read_file", path=CART),
        _edit(cart),
        _call("search", pattern=r"\.total\(\)", path="src"),
        _edit(checkout),
        _call("run_check"),
        _call(
            "finish",
            summary="Renamed Cart.total() to Cart.subtotal_cents() and updated its caller in "
            "checkout(); Receipt.total() is unchanged.",
        ),
    ]


def _tests_thread() -> list[dict[str, Any]]:
    return [
        _call("read_file", path=TESTS_FILE),
        *(_edit(e) for e in UNIT_EDITS["tests"]),
        _call("run_tests"),
        _call(
            "finish",
            summary="The cart tests call Cart.subtotal_cents(); a new test checks that an "
            "empty cart's subtotal is 0.",
        ),
    ]


def edits_of(thread: list[dict[str, Any]]) -> list[Edit]:
    """The ``edit_file`` calls of a unit's scripted answers, in order."""
    return [
        Edit(**call["arguments"])
        for entry in thread
        for call in entry.get("tool_calls", ())
        if call["name"] == "edit_file"
    ]


def apply_edits(repo: Path, script: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The files the scripted units' edits produce from ``repo``, applied in the plan's order
    as the job applies them (each ``old`` must occur exactly once at that point, and each edit
    must be in its unit's scope); ScriptError naming the edit that does not fit."""
    files: dict[str, str] = {}
    for unit in topological(PLAN):
        for e in edits_of(script[unit_marker(unit.name)]):
            if e.path not in unit.scope or not in_files(e.path, FILES):
                raise ScriptError(f"unit {unit.name} edits {e.path}, outside its scope")
            if e.path not in files:
                files[e.path] = (repo / e.path).read_text()
            found = files[e.path].count(e.old)
            if found != 1:
                raise ScriptError(
                    f"unit {unit.name}: {e.old!r} occurs {found} times in {e.path}, not once"
                )
            files[e.path] = files[e.path].replace(e.old, e.new)
    return files


def threads(repo: Path) -> dict[str, list[dict[str, Any]]]:
    """The model server's script, by conversation: the planner's answer (the plan, as JSON)
    and each unit's tool calls; checked against ``repo`` first."""
    script = {
        PLANNER_MARKER: [{"content": PLAN.model_dump_json()}],
        unit_marker("rename"): _rename_thread(),
        unit_marker("tests"): _tests_thread(),
    }
    apply_edits(repo, script)
    return script


def _command(repo: Path, job_id: str) -> list[str]:
    files = [arg for glob in FILES for arg in ("--files", glob)]
    return [
        CLI,
        "agent",
        str(repo),
        "--task",
        TASK,
        *files,
        "--test-cmd",
        TESTS,
        "--job-id",
        job_id,
    ]


def main() -> int:
    repo, job_id = fresh_copy("demo-agent")
    args = _command(repo, job_id)
    if model := os.environ.get("DEMO_MODEL"):
        print(f"DEMO_MODEL is set: {model} plans and edits (its key must be set).", flush=True)
        done = subprocess.run([*args, "--model", model])
    else:
        from agentparallels.testing.fake_llm import FakeLLM

        script = threads(repo)
        with FakeLLM(threads=script, default=None) as fake:
            print(f"A scripted model server on {fake.url} answers (no key needed).", flush=True)
            env = {**os.environ, "OPENAI_API_KEY": "sk-demo-not-a-real-key"}
            model = ["--model", "openai:scripted", "--base-url", fake.openai_base_url]
            done = subprocess.run([*args, *model, "--tool-format", "native"], env=env)
    if done.returncode == 0:
        show_branch(repo, job_id)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
