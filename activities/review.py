"""Reading the change a review committee judges: the diff of a ref against its base."""

from __future__ import annotations

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.activities.refactor import resolve_base
from agentparallels.core import steps
from agentparallels.core.consensus import DiffRequest, ReviewDiff


@implements(steps.READ_DIFF)
def read_diff(inp: DiffRequest) -> ReviewDiff:
    """The diff from the merge base of ``base`` and ``ref`` to ``ref`` (what merging ``ref``
    would bring in), cut at ``max_chars``. Reads only; safe to repeat."""
    head = resolve_base(inp.repository, inp.ref)
    base = resolve_base(inp.repository, inp.base)
    cache = _git.cached_repo(inp.repository)
    _git.ensure_commit(cache, inp.repository, head)
    _git.ensure_commit(cache, inp.repository, base)
    fork = _git.run(cache, "merge-base", base, head)
    names = _git.run(cache, "diff", "--name-only", "--no-renames", "-z", fork, head)
    text = _git.run(cache, "diff", "--no-color", "--no-ext-diff", fork, head)
    return ReviewDiff(
        base_commit=fork,
        head_commit=head,
        files=tuple(sorted(p for p in names.split("\0") if p)),
        text=text[: inp.max_chars],
        truncated=len(text) > inp.max_chars,
    )


__all__ = ["read_diff"]
