"""The floors hold: every step spec has one implementation, and wire names are spelled once."""

from __future__ import annotations

import re
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
    for name in ("RefactorWorkflow", "ShardWorkflow", "ReviewWorkflow", "AgentLoopWorkflow"):
        spelled = [p for p in sources if re.search(rf'"{name}"', _code(p))]
        assert spelled == [ROOT / "agentparallels/core/names.py"], (name, spelled)
    assert names.REFACTOR == "RefactorWorkflow"


def _code(path: Path) -> str:
    """A module without its ``__all__`` (whose strings name Python objects, not the wire)."""
    return re.sub(r"__all__[^=]*=\s*\[[^\]]*\]", "", path.read_text())
