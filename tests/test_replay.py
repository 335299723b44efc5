"""Recorded histories of the shipped workflows replay against the current code, through the
project's plugin (the workers' converter, interceptors and sandbox), so a change that would
break running jobs fails here first.

tests/histories/*.json are recorded from the current workflows (``make histories``);
tests/histories/patched/ keeps recordings made before a ``workflow.patched`` change, which
replay its old branch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow

from agentparallels.replay import load, replay, replayer_for
from tests.nondeterministic import TimerFirstRefactorWorkflow
from tests.support.cli import run_cli

HERE = Path(__file__).parent / "histories"
CURRENT = sorted(HERE.glob("*.json"))
PATCHED = sorted((HERE / "patched").rglob("*.json"))
HISTORIES = CURRENT + PATCHED


CHUNKS = 8
"""The corpus replays in this many parts, which the test processes share."""


def test_the_corpus_has_every_kind_of_history() -> None:
    """Rename, codemod, model-driven, approved and hooked jobs, each also failed and rolled
    back; reviews and coding agents, passing and failing; parents and children; and the older
    recordings of patched code."""
    names = {h.stem for h in CURRENT}
    assert {"recorded-rename", "recorded-rename-tests-fail"} <= names  # rolled back by tests
    assert {"recorded-codemod", "recorded-codemod-breaker"} <= names  # ... by the breaker
    assert {"recorded-model", "recorded-model-breaker"} <= names
    assert {"recorded-approved", "recorded-rejected"} <= names  # approval update, both ways
    assert {"recorded-choreography", "recorded-cancelled"} <= names  # hooks, pause; cancel
    assert {"recorded-review", "recorded-review-rejected"} <= names  # a committee
    assert "recorded-ledger" in names  # a budgeted job: reserve, grant and settle signals
    assert {"recorded-agent", "recorded-agent-breaker"} <= names  # the coding agent, both ways
    assert any("__" in n for n in names)  # children too
    assert {h.stem for h in PATCHED} >= {"recorded-shares"}  # a budgeted job before the ledger


@pytest.mark.parametrize("chunk", range(CHUNKS))
async def test_every_recorded_history_replays(chunk: int) -> None:
    """Each history of the corpus (this part of it) replays without non-determinism."""
    part = HISTORIES[chunk::CHUNKS]
    results = await replay([load(path) for path in part])
    expected = [(h.stem.replace("__", "/"), None) for h in part]
    assert [(r.workflow_id, r.failure) for r in results] == expected


def test_every_shipped_workflow_has_a_recorded_history() -> None:
    """A workflow added to ``workflows.shipped.ALL`` without a recording here would go unguarded."""
    from agentparallels.workflows import shipped

    recorded = set()
    for path in HISTORIES:
        first = json.loads(path.read_text())["events"][0]
        recorded.add(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])
    defined = (cls.__temporal_workflow_definition for cls in shipped.ALL)  # type: ignore[attr-defined]  # set by @workflow.defn; the SDK declares no such attribute
    names = {d.name for d in defined}
    assert names - recorded == set()


async def test_a_nondeterministic_refactor_change_fails_replay() -> None:
    """RefactorWorkflow changed to start a timer first, without ``workflow.patched``, and
    registered under the shipped name: the recorded rename job does not replay on it, with a
    non-determinism error, where the shipped workflow replays it (the test above)."""
    history = load(HERE / "recorded-rename.json")
    changed = replayer_for(workflows=[TimerFirstRefactorWorkflow])
    outcome = await changed.replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(outcome.replay_failure, workflow.NondeterminismError)
    assert "Nondeterminism" in str(outcome.replay_failure)


def test_replay_command_reports_success_and_the_diverging_event(tmp_path: Path) -> None:
    """`agentparallels replay FILE`: exit 0 when the history replays; exit 1, naming the
    mismatch, for a history whose recorded step no longer matches the code."""
    good = HISTORIES[0]
    ok = run_cli("replay", str(good))
    assert ok.returncode == 0, ok.stderr
    assert f"{good.stem}: " in ok.stdout and "replayed without non-determinism" in ok.stdout

    history = json.loads((HERE / "recorded-rename.json").read_text())
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "refactor.plan":
            scheduled["activityType"]["name"] = "refactor.plan-renamed"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(history))
    bad = run_cli("replay", str(tampered))
    assert bad.returncode == 1
    assert "tampered: does not replay: NondeterminismError" in bad.stdout
    assert "refactor.plan" in bad.stdout
