"""The ``fake`` fixture: one scripted ``FakeLLM`` on loopback for a test, and model keys.

A test scripts it with ``fake.push(...)``, or up front with a marker that takes what
``FakeLLM`` takes::

    @pytest.mark.fake_llm([{"content": DIFF}], default={"content": "ok"}, match={...})

Without ``default`` in the marker, a script that runs dry answers a non-retryable 500, so a
call the test did not expect fails it rather than passing on a made-up answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentparallels.testing.fake_llm import FakeLLM

__all__ = ["KEYS", "fake", "model_keys"]

KEYS = {"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-ant-test"}
"""Provider keys the in-process worker reads (the fake takes any key)."""


@pytest.fixture
def model_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``KEYS`` in this process's environment for the test (workers in it can call models)."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    return KEYS


@pytest.fixture
def fake(request: pytest.FixtureRequest, model_keys: dict[str, str]) -> Iterator[FakeLLM]:
    """A started fake model server, scripted by the test's ``fake_llm`` marker if it has one,
    with ``model_keys`` set; stopped after the test."""
    marker = request.node.get_closest_marker("fake_llm")
    args, kwargs = (marker.args, dict(marker.kwargs)) if marker else ((), {})
    kwargs.setdefault("default", None)
    with FakeLLM(*args, **kwargs) as server:
        yield server
