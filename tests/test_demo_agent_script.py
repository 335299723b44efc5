"""The scripted answers of `make demo-agent` still fit the example: the plan is valid, every
tool call fits its tool, every edit applies where the job would apply it, and the edited
example passes its own tests. Run without Temporal, so the demo cannot rot unnoticed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentparallels.core.agentjob import (
    PLANNER_MARKER,
    TOOLS,
    AgentLimits,
    AgentPlan,
    plan_errors,
    unit_marker,
)
from agentparallels.core.tools import ToolCall, checked_call
from examples import demo_agent
from examples.example_repo import HERE, TESTS

SHOPKART = HERE / "shopkart"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "shopkart"
    shutil.copytree(SHOPKART, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _tracked(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())


def test_the_planner_answers_with_a_valid_plan(example: Path) -> None:
    script = demo_agent.threads(example)
    (answer,) = script[PLANNER_MARKER]
    plan = AgentPlan.model_validate(json.loads(answer["content"]))
    assert plan == demo_agent.PLAN
    assert plan_errors(plan, _tracked(example), demo_agent.FILES, AgentLimits().max_units) == []
    assert {unit_marker(u.name) for u in plan.units} | {PLANNER_MARKER} == set(script)


def test_every_scripted_call_fits_its_tool_and_each_unit_finishes(example: Path) -> None:
    known = {t.name: t for t in TOOLS}
    for plan in demo_agent.PLAN.units:
        thread = demo_agent.threads(example)[unit_marker(plan.name)]
        calls = [c for entry in thread for c in entry["tool_calls"]]
        for i, c in enumerate(calls):
            checked = checked_call(ToolCall(id=str(i), name=c["name"]), c["arguments"], known)
            assert checked.error is None, (plan.name, c)
        assert calls[-1]["name"] == "finish"
        assert sum(c["name"] == "finish" for c in calls) == 1


def test_the_edits_apply_in_order_and_the_example_passes_its_tests(example: Path) -> None:
    edited = demo_agent.apply_edits(example, demo_agent.threads(example))
    assert set(edited) == {"src/shopkart/orders/cart.py", "src/shopkart/orders/checkout.py",
                           "tests/test_orders.py"}  # fmt: skip
    for path, text in edited.items():
        (example / path).write_text(text)
    source = "\n".join(p.read_text() for p in (example / "src").rglob("*.py"))
    assert "def subtotal_cents(self)" in source and "cart.total()" not in source
    assert "def total(self)" in (example / "src/shopkart/orders/receipts.py").read_text()

    ruff = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "check", "--no-cache", "."],
        cwd=example,
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, (
        ruff.stdout
    )  # the example's own lint rules, stricter than run_check's
    done = subprocess.run(
        [sys.executable, *TESTS.split()[1:], "-rA", "-p", "no:xdist"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED tests/test_orders.py::test_empty_cart_subtotal_is_zero" in done.stdout, (
        done.stdout
    )


def test_a_snippet_that_no_longer_fits_stops_the_demo_before_it_starts(example: Path) -> None:
    cart = example / "src/shopkart/orders/cart.py"
    cart.write_text(cart.read_text().replace("def total(self)", "def sum_all(self)"))
    with pytest.raises(demo_agent.ScriptError, match="occurs 0 times in src/shopkart/orders"):
        demo_agent.threads(example)
