"""Everything a workflow history holds, as text to search, payloads included."""

from __future__ import annotations

from temporalio.client import WorkflowHistory


def history_text(history: WorkflowHistory) -> str:
    """The history's events in protobuf wire form, as text. A payload's data (JSON, here) sits
    in it byte for byte, unlike in ``to_json()``, which shows payloads in base64; so a search
    finds whatever any input, result, memo, header or failure carries."""
    raw = b"\n".join(event.SerializeToString() for event in history.events)
    return raw.decode("utf-8", "replace")
