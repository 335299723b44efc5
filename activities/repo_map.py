"""The planner's map of the repository: paths and top-level symbols, never file contents.

The planner sees the task and this map only (lazy context: a unit reads the files it needs
through its tools). Files are ranked by how many words of the task their path and symbols
share, so that in a large repository the files the task is about come first, and the map is
cut to a token budget, saying how many files it left out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection

from agentparallels.activities import _git
from agentparallels.activities._defn import implements
from agentparallels.activities.refactor import resolve_base
from agentparallels.core import steps, tokens
from agentparallels.core.agentjob import RepoMap, RepoMapInput, in_files

PARSE_LIMIT = 1_000_000
"""Bytes above which a file is listed without its symbols."""
METHODS = 12
"""Method names shown per class."""
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STOPWORDS = frozenset(
    "the and for with from that this into are was were has have not but all any can its "
    "use uses used add make each when then than them they their there which what where who "
    "how why should would could will shall must may might also only just file files code "
    "function functions class classes method methods module modules def py".split()
)


@implements(steps.REPO_MAP)
def repo_map(inp: RepoMapInput) -> RepoMap:
    """The map of the job's base commit: ``base_ref`` resolved, and kept at the job's
    ``base`` scratch ref so that every worker can fetch it whatever the user's branches do
    meanwhile (fetched into this worker's cache if missing)."""
    job = inp.job
    base = job.base_commit or _kept_base(job.repository, job.scratch, inp.base_ref)
    cache = _git.cached_repo(job.repository)
    _git.ensure_commit(cache, job.repository, base)
    listed = _git.run(cache, "ls-tree", "-r", "-z", "--name-only", base)
    files = sorted(p for p in listed.split("\0") if p and in_files(p, inp.files))
    py = [p for p in files if p.endswith(".py")]
    blobs = dict(zip(py, _git.read_blobs(cache, [f"{base}:{p}" for p in py]), strict=True))
    symbols = {p: _symbols(blobs.get(p)) if p in blobs else [] for p in files}
    wanted = words(inp.task)
    ranked = sorted(files, key=lambda p: (-_score(p, symbols[p], wanted), p))
    text = render([(p, symbols[p]) for p in ranked], inp.tokens)
    return RepoMap(base_commit=base, text=text, files=tuple(files), tokens=tokens.count(text))


def _kept_base(repository: str, scratch: str, base_ref: str) -> str:
    """``base_ref``'s commit, at ``<scratch>/base``: a retry of the step finds it there."""
    ref = f"{scratch}/base"
    kept = _git.remote_ref(repository, ref)
    if kept is not None:
        return kept
    base = resolve_base(repository, base_ref)
    cache = _git.cached_repo(repository)
    _git.ensure_commit(cache, repository, base)
    _git.push(cache, repository, [(ref, base, None)])
    return base


def words(text: str) -> set[str]:
    """The lower-case words of ``text``, identifiers split too (``to_cents``, ``toCents`` and
    ``ToCents`` give ``to``, ``cents`` and ``to_cents``...), without short and common words."""
    found: set[str] = set()
    for name in _NAME.findall(text):
        if len(name) > 2:
            found.add(name.lower())
        found.update(w.lower() for w in _WORD.findall(name) if len(w) > 2)
    return found - STOPWORDS


def _score(path: str, symbols: list[str], wanted: Collection[str]) -> int:
    """Task words the path shares, plus those the symbols share (each counted once per side):
    a file whose functions the task names outranks one that only sits in a named folder."""
    return len(words(path.replace("/", " ")) & set(wanted)) + len(
        words(" ".join(symbols)) & set(wanted)
    )


def _symbols(blob: bytes | None) -> list[str]:
    """One line per top-level class (with its methods) and function; a note when unparsable."""
    if blob is None:
        return []
    if len(blob) > PARSE_LIMIT:
        return ["(too large to parse)"]
    try:
        tree = ast.parse(blob)
    except (SyntaxError, ValueError):
        return ["(could not parse)"]
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            more = f", ... {len(methods) - METHODS} more" if len(methods) > METHODS else ""
            shown = f": {', '.join(methods[:METHODS])}{more}" if methods else ""
            lines.append(f"class {node.name}{shown}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
            lines.append(f"def {node.name}({', '.join(args)})")
    return lines


def render(entries: list[tuple[str, list[str]]], budget: int) -> str:
    """Each (path, symbols) as a block, in order, while they fit ``budget`` tokens with the
    closing note; a block that does not fit is left out (a later, smaller one may fit)."""
    blocks: list[str] = []
    used, left_out = 0, 0
    for path, symbols in entries:
        block = "\n".join([path, *(f"  {line}" for line in symbols)])
        size = tokens.count(block + "\n")
        if used + size + _note_size(len(entries)) > budget:
            left_out += 1
            continue
        blocks.append(block)
        used += size
    text = _joined(blocks, left_out)
    while blocks and tokens.count(text) > budget:  # counting in pieces is approximate
        blocks.pop()
        left_out += 1
        text = _joined(blocks, left_out)
    return text


def _joined(blocks: list[str], left_out: int) -> str:
    return "\n".join([*blocks, _note(left_out)] if left_out else blocks)


def _note(left_out: int) -> str:
    return f"({left_out} more file{'s' if left_out != 1 else ''} not shown)"


def _note_size(n: int) -> int:
    return tokens.count(_note(n)) + 1


__all__ = ["render", "repo_map", "words"]
