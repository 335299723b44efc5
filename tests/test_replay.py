"""Recorded histories of the shipped workflows replay against the current code, so a change
that would break running jobs fails here first."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentparallels.replay import load, replay
from tests.support.cli import run_cli

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


async def test_every_recorded_history_replays() -> None:
    """Rename, codemod rolled back by the breaker, model-driven and approved jobs, parents and
    children, and a review: each replays without non-determinism."""
    names = {h.stem for h in HISTORIES}
    assert {"recorded-rename", "recorded-codemod-breaker", "recorded-model"} <= names
    assert {"recorded-approved", "recorded-review"} <= names  # approval update; a committee
    assert "recorded-choreography" in names  # hooks, a pause, a subscriber that is not there
    assert {"recorded-ledger", "recorded-shares"} <= names  # a budgeted job: ledger; before it
    assert any("__" in n for n in names)  # children too
    results = await replay([load(path) for path in HISTORIES])
    expected = [(h.stem.replace("__", "/"), None) for h in HISTORIES]
    assert [(r.workflow_id, r.failure) for r in results] == expected


def test_every_shipped_workflow_has_a_recorded_history() -> None:
    """A workflow added to ``workflows.ALL`` without a recording here would go unguarded."""
    from agentparallels import workflows

    recorded = set()
    for path in HISTORIES:
        first = json.loads(path.read_text())["events"][0]
        recorded.add(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])
    shipped = {cls.__temporal_workflow_definition.name for cls in workflows.ALL}  # type: ignore[attr-defined]
    assert shipped - recorded == set()


def test_replay_command_reports_success_and_the_diverging_event(tmp_path: Path) -> None:
    """`agentparallels replay FILE`: exit 0 when the history replays; exit 1, naming the
    mismatch, for a history whose recorded step no longer matches the code."""
    good = HISTORIES[0]
    ok = run_cli("replay", str(good))
    assert ok.returncode == 0, ok.stderr
    assert f"{good.stem}: " in ok.stdout and "replayed without non-determinism" in ok.stdout

    history = json.loads((good.parent / "recorded-rename.json").read_text())
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


async def test_replay_loads_the_token_encoding_outside_the_workflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An encoding that takes longer to load than the SDK's 2 s deadlock timeout (as on a busy
    machine) does not fail the replay of a workflow that counts tokens: it is loaded first."""
    import tiktoken

    from agentparallels.core import tokens

    load_encoding = tiktoken.get_encoding

    def slow(name: str) -> tiktoken.Encoding:
        time.sleep(3)  # stands in for a starved CPU
        return load_encoding(name)

    tokens.encoding.cache_clear()
    monkeypatch.setattr(tiktoken, "get_encoding", slow)
    try:
        [result] = await replay(
            [load(Path(__file__).parent / "histories/recorded-agent-loop.json")]
        )
    finally:
        tokens.encoding.cache_clear()
    assert result.failure is None
