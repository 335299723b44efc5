"""The planner's plan as the job validates it: each mistake named with its fix."""

from __future__ import annotations

from agentparallels.core.agentjob import AgentPlan, UnitPlan, plan_errors, topological

FILES = ["pkg/a.py", "pkg/b.py", "tests/test_a.py"]
GLOBS = ["pkg/*.py", "tests/*.py"]


def errors(*units: UnitPlan, max_units: int = 4) -> list[str]:
    return plan_errors(AgentPlan(units=units), FILES, GLOBS, max_units)


def test_a_good_plan_passes_and_runs_dependencies_first() -> None:
    a = UnitPlan(name="a", goal="g", scope=("pkg/a.py",), depends_on=("b",))
    b = UnitPlan(name="b", goal="g", scope=("pkg/b.py", "tests/test_new.py"))
    assert errors(a, b) == []
    assert [u.name for u in topological(AgentPlan(units=(a, b)))] == ["b", "a"]


def test_each_mistake_is_named() -> None:
    found = errors(
        UnitPlan(name="A", goal="g", scope=("setup.py",)),
        UnitPlan(name="repair", goal="g", scope=("pkg/.git/config", "../x.py")),
        UnitPlan(name="c", goal="g", scope=(), capability="rust", depends_on=("nope",)),
        max_units=2,
    )
    assert found == [
        "the plan has 3 units, at most 2 are allowed",
        "unit name 'A': use lower-case letters, digits and dashes",
        "unit A: setup.py is outside the files the job may change (pkg/*.py, tests/*.py)",
        "unit name 'repair' is reserved for the job's own repair unit",
        "unit repair: 'pkg/.git/config' is inside a .git folder, which no unit may touch",
        "unit repair: '../x.py' must be a normalised path inside the repository",
        "unit c: capability 'rust' is not one of python, tests, docs",
        "unit c: its scope is empty; name the files it may write",
        "unit c depends on 'nope', which is not another unit",
    ]


def test_shared_files_need_an_order_and_cycles_are_refused() -> None:
    a = UnitPlan(name="a", goal="g", scope=("pkg/a.py",))
    b = UnitPlan(name="b", goal="g", scope=("pkg/a.py",))
    assert errors(a, b) == [
        "units a and b may both write pkg/a.py; make one depend on the other or split the files"
    ]
    assert errors(a, b.model_copy(update={"depends_on": ("a",)})) == []
    loop = [
        UnitPlan(name="a", goal="g", scope=("pkg/a.py",), depends_on=("b",)),
        UnitPlan(name="b", goal="g", scope=("pkg/b.py",), depends_on=("a",)),
    ]
    assert errors(*loop) == [
        "unit a depends on itself through b",
        "unit b depends on itself through a",
    ]
