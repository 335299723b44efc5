"""What an agent's edit does to a file's text: the exact replacement of a unique snippet, or a
new file. When it cannot, a :class:`Refusal` says why in words that help the model try again
(where the snippet occurs, or the lines closest to it): a refusal is not an error, the model
reads it and corrects its call."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

CLOSEST = 3
"""Lines shown when a snippet is not found."""


@dataclass(frozen=True, slots=True)
class Refusal:
    message: str


def created(path: str, current: bytes | None, content: str) -> bytes | Refusal:
    """The bytes of the new file ``path``; refused if it exists."""
    if current is not None:
        return Refusal(f"{path} already exists; use edit_file to change it")
    return content.encode()


def replaced(path: str, current: bytes | None, old: str, new: str) -> bytes | Refusal:
    """``current`` with its one occurrence of ``old`` replaced by ``new``. A file with CRLF
    line ends is matched with them (``read_file`` shows lines without them)."""
    if current is None:
        return Refusal(f"there is no file {path}; use write_file to create a new file")
    try:
        text = current.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(f"{path} is not UTF-8 text; it cannot be edited with edit_file")
    if not old:
        return Refusal("old is empty: copy the exact text to replace from the file")
    if old == new:
        return Refusal(f"no change: old and new are the same, so {path} would not change")
    if "\r\n" in text and "\r\n" not in old:
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
    at = occurrences(text, old)
    if not at:
        return Refusal(_not_found(path, text, old))
    if len(at) > 1:
        lines = ", ".join(str(text.count("\n", 0, i) + 1) for i in at[:10])
        return Refusal(
            f"old occurs {len(at)} times in {path} (starting at lines {lines}); include more "
            "of the lines around the one you mean, so that it occurs exactly once"
        )
    return (text[: at[0]] + new + text[at[0] + len(old) :]).encode()


def occurrences(text: str, snippet: str) -> list[int]:
    """Where ``snippet`` starts in ``text``, overlapping occurrences too."""
    found, i = [], text.find(snippet)
    while i >= 0:
        found.append(i)
        i = text.find(snippet, i + 1)
    return found


def _not_found(path: str, text: str, old: str) -> str:
    """Why ``old`` was not found, with the lines of ``path`` closest to its first line."""
    message = (
        f"old was not found in {path}: copy it exactly as the file has it (read_file shows "
        "each line after its number and a tab; leave those out), indentation included"
    )
    first = next((line.strip() for line in old.splitlines() if line.strip()), "")
    lines = text.splitlines()
    scored = sorted(
        (-difflib.SequenceMatcher(None, first, line.strip()).ratio(), n)
        for n, line in enumerate(lines, start=1)
        if line.strip()
    )
    close = sorted(n for score, n in scored[:CLOSEST] if -score >= 0.6)
    if not close:
        return f"{message}. Nothing in it is close; read_file shows its current text."
    shown = "\n".join(f"{n}\t{lines[n - 1]}" for n in close)
    return f"{message}. The lines closest to its first line:\n{shown}"


__all__ = ["Refusal", "created", "occurrences", "replaced"]
