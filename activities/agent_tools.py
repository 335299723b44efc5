"""The coding agent's tools: one ``agent.tool`` step per tool call of a unit.

The reading tools (``list_files``, ``read_file``, ``search``) read the unit's checkpoint from
this worker's clone of the job's repository, fetching it from the repository when the clone
lacks it: a worker on another disk goes on where another stopped. The writing tools
(``edit_file``, ``write_file``) change one file in the unit's worktree, held by this attempt
alone (:mod:`activities._workspace`), make one checkpoint commit and push it to the unit's
branch before they return; the commit names the call's key in a trailer, so a retry of the
step finds it and never edits twice. ``run_check`` and ``run_tests`` run in the sandbox in the
worktree at the checkpoint.

What the model can act on (a path outside its scope, a snippet that is not unique, a failing
test) is an outcome with ``ok=False`` and a message for it. Errors are for faults, retried,
and for what no retry can fix: the branch moved under the unit, or a call the workflow should
never have sent (``finish`` is the workflow's own).
"""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from temporalio.exceptions import ApplicationError

from agentparallels.activities import _git, _spans, bulkhead, sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._edit_text import Refusal, created, replaced
from agentparallels.activities._proc import run_command
from agentparallels.activities._workspace import editing
from agentparallels.activities.checks import _ruff_findings
from agentparallels.core import steps
from agentparallels.core.agentjob import ToolOutcome, ToolRequest, in_files, path_error
from agentparallels.core.errors import BAD_INPUT, GIT_CONFLICT

CALL_TRAILER = "Agentparallels-Call"
"""Names the tool call (``ToolRequest.key``) whose edit a checkpoint commit is."""
LIST_LIMIT = 400
"""Most paths ``list_files`` returns."""
SEARCH_LIMIT = 100
"""Most matches ``search`` returns."""
LINE_CHARS = 2000
"""Longest line ``read_file`` shows (a minified file would fill the output otherwise)."""
MATCH_CHARS = 300
"""Longest matching line ``search`` shows."""
MAX_MATCHES = 20
"""Matches shown per file by ``search``."""
SEARCH_TIMEOUT_S = 20.0
"""Longest a search may run: a pathological pattern is refused, not left to run."""


class _BadArgument(Exception):
    """An argument of the wrong type: told to the model, which sent it."""


@implements(steps.AGENT_TOOL)
@_spans.traced_tool_call
def agent_tool(req: ToolRequest) -> ToolOutcome:
    """Run one tool call of a unit (see the module's documentation), timed: the job's
    baseline compares the call's duration with the repository's past calls."""
    started = time.monotonic()
    outcome = _run_tool(req)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return outcome.model_copy(update={"elapsed_ms": elapsed_ms})


def _run_tool(req: ToolRequest) -> ToolOutcome:
    tool = _TOOLS.get(req.call.name)
    if tool is None or req.call.error is not None:
        raise ApplicationError(
            f"the agent.tool step cannot run {req.call.name!r}"
            f"{f' ({req.call.error})' if req.call.error else ''}: the workflow handles "
            "finish and malformed calls itself",
            type=BAD_INPUT,
            non_retryable=True,
        )
    try:
        return tool(req)
    except _BadArgument as e:
        return _outcome(_cache(req), req, False, str(e), f"{req.call.name}: bad arguments")


def _arg(req: ToolRequest, key: str, kind: type, default: Any = None) -> Any:
    value = req.call.arguments.get(key, default)
    if value is not None and (not isinstance(value, kind) or kind is int and value is True):
        raise _BadArgument(f"argument {key} of {req.call.name} must be a {kind.__name__}")
    return value


def _cache(req: ToolRequest) -> Path:
    """This worker's clone of the job's repository, holding the checkpoint."""
    job = req.unit.job
    cache = _git.cached_repo(job.repository)
    _git.ensure_commit(cache, job.repository, req.checkpoint)
    return cache


def _outcome(
    cache: Path, req: ToolRequest, ok: bool, output: str, summary: str, **fields: Any
) -> ToolOutcome:
    """The outcome, its ``state`` the tree of its head (the checkpoint unless it moved)."""
    head = fields.pop("head", req.checkpoint)
    state = _git.run(cache, "rev-parse", f"{head}^{{tree}}")
    return ToolOutcome(ok=ok, output=output, head=head, state=state, summary=summary, **fields)


def _tail(text: str, chars: int) -> str:
    """The end of ``text`` in at most ``chars`` characters, marked when cut."""
    if len(text) <= chars:
        return text
    return "[...]\n" + text[-(chars - 6) :]


def _clean_path(path: str) -> tuple[str, str | None]:
    """``path`` normalised (``./a//b`` -> ``a/b``), and why it is no path of the repository."""
    if not path or "\n" in path:
        return path, f"{path!r} is not a path"
    path = posixpath.normpath(path.strip())
    return path, path_error(path)


# --- Reading ----------------------------------------------------------------------------------


def _list_files(req: ToolRequest) -> ToolOutcome:
    """Tracked files at the checkpoint matching the job's globs, under ``directory``."""
    cache = _cache(req)
    directory = (_arg(req, "directory", str) or "").strip().strip("/")
    if directory in ("", "."):
        directory = ""
    else:
        directory, problem = _clean_path(directory)
        if problem:
            return _outcome(cache, req, False, problem, f"list {directory}")
    listed = _git.run(cache, "ls-tree", "-r", "-z", "--name-only", req.checkpoint)
    paths = [
        p
        for p in listed.split("\0")
        if p and in_files(p, req.files) and (not directory or p.startswith(f"{directory}/"))
    ]
    summary = f"list {directory or '.'}"
    if not paths:
        return _outcome(
            cache, req, True, f"no files under {directory or 'the repository'}", summary
        )
    output = "\n".join(paths[:LIST_LIMIT])
    if len(paths) > LIST_LIMIT:
        output += f"\n[{len(paths) - LIST_LIMIT} more files; list a directory to see them]"
    return _outcome(cache, req, True, output, summary)


def _readable(req: ToolRequest, path: str) -> tuple[str, str | None]:
    path, problem = _clean_path(path)
    if problem is None and not in_files(path, req.files):
        problem = f"{path} is outside the files of this job ({', '.join(req.files)})"
    return path, problem


def _read_file(req: ToolRequest) -> ToolOutcome:
    """Numbered lines ``start``-``end`` of a file at the checkpoint, at most ``read_lines``."""
    cache = _cache(req)
    path, problem = _readable(req, _arg(req, "path", str) or "")
    start, end = _arg(req, "start", int), _arg(req, "end", int)
    first = max(start or 1, 1)
    summary = f"read {path}"
    blob = None if problem else _git.read_blobs(cache, [f"{req.checkpoint}:{path}"])[0]
    if problem is None and blob is None:
        problem = f"there is no file {path}; list_files shows the files"
    elif blob is not None and b"\0" in blob:
        problem = f"{path} is a binary file"
    if problem or blob is None:
        return _outcome(cache, req, False, problem or "", summary)
    lines = blob.decode("utf-8", "replace").splitlines()
    if not lines:
        return _outcome(cache, req, True, f"{path} is empty", summary)
    last = min(end if end is not None else len(lines), len(lines), first + req.read_lines - 1)
    summary = f"read {path}:{first}-{last}"
    if first > len(lines) or last < first:
        why = f"{path} has {len(lines)} lines; ask for lines 1-{len(lines)} (start <= end)"
        return _outcome(cache, req, False, why, summary)
    body = "\n".join(f"{n}\t{lines[n - 1][:LINE_CHARS]}" for n in range(first, last + 1))
    if first > 1 or last < len(lines):
        more = f"; read on with start={last + 1}" if last < len(lines) else ""
        body += f"\n[lines {first}-{last} of {len(lines)}{more}]"
    return _outcome(cache, req, True, body, summary)


def _search(req: ToolRequest) -> ToolOutcome:
    """``git grep -n -E`` at the checkpoint, in the job's files (under ``path``), capped."""
    cache = _cache(req)
    pattern, where = _arg(req, "pattern", str) or "", _arg(req, "path", str)
    summary = f"search {pattern!r}" + (f" in {where}" if where else "")
    problem = None if pattern else "give a non-empty pattern"
    if where and problem is None:
        where, problem = _clean_path(where)
    if problem:
        return _outcome(cache, req, False, problem, summary)
    spec = [where] if where else []
    status, out, err = _git.execute(
        cache,
        "grep",
        "-z",
        "-n",
        "-I",
        "-E",
        f"--max-count={MAX_MATCHES}",
        "-e",
        pattern,
        req.checkpoint,
        "--",
        *spec,
        env={"GIT_LITERAL_PATHSPECS": "1"},
        with_extended_output=True,
        with_exceptions=False,
        kill_after_timeout=SEARCH_TIMEOUT_S,
    )
    if status not in (0, 1):  # 1: nothing matched; else a bad pattern, or killed
        why = str(err).strip() or f"it took over {SEARCH_TIMEOUT_S:g} s"
        return _outcome(cache, req, False, f"the search failed: {why}", summary)
    out = out if status == 0 else ""
    hits = []
    for line in out.splitlines():
        name, number, text = (line.split("\0", 2) + ["", ""])[:3]
        name = name.removeprefix(f"{req.checkpoint}:")
        if in_files(name, req.files):
            hits.append(f"{name}:{number}: {text[:MATCH_CHARS]}")
    output = "\n".join(hits[:SEARCH_LIMIT]) or "no matches"
    if len(hits) > SEARCH_LIMIT:
        output += f"\n[{len(hits) - SEARCH_LIMIT} more matches; narrow the pattern or the path]"
    return _outcome(cache, req, True, _tail(output, req.output_chars), summary)


def _changed_files(req: ToolRequest) -> ToolOutcome:
    """What the change (``start`` to the checkpoint) adds, modifies or deletes: a reviewer's
    first look, one line per file with its status and size of change."""
    cache = _cache(req)
    start = req.start or req.unit.job.base_commit
    _git.ensure_commit(cache, req.unit.job.repository, start)
    stat = _git.run(cache, "diff", "--numstat", "--no-renames", "-z", start, req.checkpoint)
    status = _git.run(cache, "diff", "--name-status", "--no-renames", "-z", start, req.checkpoint)
    kinds = dict(zip(status.split("\0")[1::2], status.split("\0")[0::2], strict=False))
    lines = []
    for entry in stat.split("\0"):
        added, removed, path = (entry.split("\t", 2) + ["", "", ""])[:3]
        if path:
            what = {"A": "added", "D": "deleted"}.get(kinds.get(path, ""), "modified")
            lines.append(f"{path}\t{what}\t+{added} -{removed}")
    output = "\n".join(lines) or "the change changes no file"
    return _outcome(cache, req, True, _tail(output, req.output_chars), "changed files")


def _file_diff(req: ToolRequest) -> ToolOutcome:
    """The unified diff of one file from ``start`` to the checkpoint, capped."""
    cache = _cache(req)
    path, problem = _readable(req, _arg(req, "path", str) or "")
    summary = f"diff {path}"
    if problem:
        return _outcome(cache, req, False, problem, summary)
    start = req.start or req.unit.job.base_commit
    _git.ensure_commit(cache, req.unit.job.repository, start)
    diff = _git.run(cache, "diff", "--no-color", "--no-ext-diff", start, req.checkpoint, "--", path)
    if not diff.strip():
        return _outcome(cache, req, True, f"the change does not touch {path}", summary)
    if len(diff) > req.output_chars:
        more = "; read the file with read_file for the rest"
        diff = diff[: req.output_chars - 80] + f"\n[the diff is cut here{more}]"
    return _outcome(cache, req, True, diff, summary)


# --- Writing ----------------------------------------------------------------------------------


def _edit_file(req: ToolRequest) -> ToolOutcome:
    """Replace the one occurrence of ``old`` with ``new`` in a file of the unit's scope."""
    path, old, new = _arg(req, "path", str), _arg(req, "old", str), _arg(req, "new", str)
    if path is None or old is None or new is None:
        raise _BadArgument("edit_file needs the arguments path, old and new")
    return _write(req, path, "edit", lambda current: replaced(path, current, old, new))


def _write_file(req: ToolRequest) -> ToolOutcome:
    """Create a new file of the unit's scope."""
    path, content = _arg(req, "path", str), _arg(req, "content", str)
    if path is None or content is None:
        raise _BadArgument("write_file needs the arguments path and content")
    return _write(req, path, "write", lambda current: created(path, current, content))


def _write(
    req: ToolRequest,
    path: str,
    verb: Literal["edit", "write"],
    change: Callable[[bytes | None], bytes | Refusal],
) -> ToolOutcome:
    """Apply ``change`` to ``path`` (its bytes at the checkpoint, None if missing) and make it
    one checkpoint commit on the unit's branch, pushed before returning; or find the commit an
    earlier attempt of this call pushed. A refusal leaves everything as it was."""
    job = req.unit.job
    cache = _cache(req)
    path, problem = _clean_path(path)
    summary = f"{verb} {path}"
    if problem is None and path not in req.scope:
        problem = f"{path} is outside your scope; you may write only {', '.join(req.scope)}"
    if problem:
        return _outcome(cache, req, False, problem, summary)
    with editing(job.repository, job.job_id, req.unit.name, req.checkpoint) as wt:
        expected, earlier = _branch(cache, req, path)
        if earlier is None:
            target = wt / path
            problem = _unsafe(wt, path, req)
            if problem:
                return _outcome(cache, req, False, problem, summary)
            result = change(target.read_bytes() if target.exists() else None)
            if isinstance(result, Refusal):
                return _outcome(cache, req, False, result.message, summary)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                problem = f"{path} cannot be written: a file stands where its folder would be"
                return _outcome(cache, req, False, problem, summary)
            target.write_bytes(result)
            earlier = _commit(wt, req, path, verb, expected)
    done = "edited" if verb == "edit" else "created"
    output = f"{done} {path} (checkpoint {earlier[:12]})"
    return _outcome(cache, req, True, output, summary, head=earlier, changed=(path,))


def _unsafe(wt: Path, path: str, req: ToolRequest) -> str | None:
    """Why writing ``path`` in the worktree could reach outside it or its scope (a link), or
    is no file at all; None when it is safe."""
    try:
        bulkhead.check_paths(wt, [path], req.scope)
    except ApplicationError as e:
        return e.message
    target = wt / path
    if target.is_symlink() or target.exists() and not target.is_file():
        return f"{path} is not a regular file"
    return None


def _commit(wt: Path, req: ToolRequest, path: str, verb: str, expected: str | None) -> str:
    """Commit ``path`` as the worktree has it on the checkpoint and push it to the unit's
    branch (which must be at ``expected``); the same call makes the same commit."""
    job = req.unit.job
    message = (
        f"agent {verb}: {path}\n\n{_git.JOB_TRAILER}: {job.job_id}\n"
        f"{_git.EDIT_TRAILER}: {path}\n{CALL_TRAILER}: {req.key}"
    )
    [head] = _git.commit_files(wt, req.checkpoint, [(path, message)], job.timestamp)
    _git.discard(wt, head, clean="")
    _git.push(wt, job.repository, [(req.unit.ref, head, expected)])
    return head


def _branch(cache: Path, req: ToolRequest, path: str) -> tuple[str | None, str | None]:
    """Where the unit's branch is in the job's repository (None: not made yet) and, if an
    earlier attempt of this call already pushed its commit, that commit. Read while the
    worktree is held, so no other attempt on this worker pushes meanwhile."""
    job = req.unit.job
    remote = _git.remote_ref(job.repository, req.unit.ref)
    start = req.start or job.base_commit
    if remote == req.checkpoint or remote is None and req.checkpoint == start:
        return remote, None
    if remote is not None and _is_this_call(cache, req, remote, path):
        return remote, remote
    raise ApplicationError(
        f"{req.unit.ref} is at {remote or 'nothing'}, expected {req.checkpoint}: something "
        "else moved the unit's branch; start the job again",
        type=GIT_CONFLICT,
        non_retryable=True,
    )


def _is_this_call(cache: Path, req: ToolRequest, commit: str, path: str) -> bool:
    """``commit`` is this call's edit: one commit on the checkpoint, naming the call's key,
    changing exactly ``path`` (a trailer alone proves nothing)."""
    _git.ensure_commit(cache, req.unit.job.repository, commit)
    parents = _git.run(cache, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    message = _git.run(cache, "log", "-1", "--format=%B", commit)
    return (
        parents == [req.checkpoint]
        and _git.trailer(message, CALL_TRAILER) == req.key
        and _git.changed_by(cache, [commit])[commit] == [path]
    )


# --- Checking ---------------------------------------------------------------------------------


def _run_check(req: ToolRequest) -> ToolOutcome:
    """Ruff's ``verify_rules`` (syntax errors included) and the job's check command on the
    files the unit changed since it started, in the sandbox."""
    sandbox.require(req.sandbox.mode)
    job = req.unit.job
    cache = _cache(req)
    start = req.start or job.base_commit
    _git.ensure_commit(cache, job.repository, start)
    diff = _git.run(cache, "diff", "--name-only", "--no-renames", "-z", start, req.checkpoint)
    changed = [p for p in diff.split("\0") if p]
    with editing(job.repository, job.job_id, req.unit.name, req.checkpoint) as wt:
        files = [p for p in changed if (wt / p).is_file()]
        problems = _problems(wt, files, req)
        _git.discard(wt, req.checkpoint)  # what a check wrote (a cache) goes
    if not files:
        return _outcome(
            cache, req, True, "nothing to check: no file changed yet", "check: passed",
            check="passed",
        )  # fmt: skip
    if problems:
        output = _tail("\n".join(problems), req.output_chars)
        return _outcome(cache, req, False, output, "check: failed", check="failed")
    checked = f"ruff ({req.verify_rules})" + (f" and `{req.check_cmd}`" if req.check_cmd else "")
    output = f"passed: {checked} on {', '.join(files)}"
    return _outcome(cache, req, True, output, "check: passed", check="passed")


def _problems(wt: Path, files: list[str], req: ToolRequest) -> list[str]:
    """What ruff and the check command find in ``files``: ruff's findings, then each failing
    run of the command (once per file when it names ``{file}``, else once), with its output.
    A command the sandbox stops keeps the sandbox's explanation (see ``run_command``)."""
    policy = sandbox.Policy.of(req.sandbox)
    py = [p for p in files if p.endswith(".py")]
    found = list(_ruff_findings(wt, py, req.verify_rules, req.timeout_s, policy).values())
    if not req.check_cmd or not files:
        return found
    if "{file}" in req.check_cmd:
        # ./ first: a file the model named `--x.py` must not be read as an option.
        commands = [req.check_cmd.replace("{file}", shlex.quote(f"./{p}")) for p in files]
    else:
        commands = [req.check_cmd]
    for command in commands:
        done = run_command(command, wt, req.timeout_s, policy, denial_is_output=True)
        if not done.ok:
            found.append(f"$ {command}  (exit {done.exit_code})\n{done.output.rstrip()}")
    return found


_FAILED = re.compile(r"\b(\d+) (failed|errors?)\b")


def _run_tests(req: ToolRequest) -> ToolOutcome:
    """The job's test command in the sandbox, in the worktree at the checkpoint: the exit
    code and the output's tail. A command that cannot start in the sandbox (exit 126 or 127)
    fails the step with the sandbox's explanation; a path it hid from the tests is named in
    the output (the code under test is the model's, and may reach for anything)."""
    job = req.unit.job
    if not req.test_cmd:
        return _outcome(
            _cache(req), req, False, "no test command was given; use run_check", "tests: none"
        )
    sandbox.require(req.sandbox.mode)
    cache = _cache(req)
    policy = sandbox.Policy.of(req.sandbox)
    with editing(job.repository, job.job_id, req.unit.name, req.checkpoint) as wt:
        done = run_command(req.test_cmd, wt, req.timeout_s, policy, denial_is_output=True)
        _git.discard(wt, req.checkpoint)
    head = f"exit code {done.exit_code}\n"
    output = head + _tail(done.output, max(req.output_chars - len(head), 100))
    if done.ok:
        return _outcome(cache, req, True, output, "tests: passed", check="passed")
    summary = (
        "tests: timed out"
        if done.timed_out
        else f"tests: {_failures(done.output)} (exit {done.exit_code})"
    )
    return _outcome(cache, req, False, output, summary, check="failed")


def _failures(output: str) -> str:
    """What the last line counting failures says (pytest's ``1 failed, 2 errors``), else
    ``failed``."""
    for line in reversed(output.splitlines()):
        if counted := _FAILED.findall(line):
            return ", ".join(f"{n} {what}" for n, what in counted)
    return "failed"


_TOOLS: dict[str, Callable[[ToolRequest], ToolOutcome]] = {
    "list_files": _list_files,
    "read_file": _read_file,
    "search": _search,
    "changed_files": _changed_files,
    "file_diff": _file_diff,
    "edit_file": _edit_file,
    "write_file": _write_file,
    "run_check": _run_check,
    "run_tests": _run_tests,
}
"""Every tool of ``agentjob.TOOLS`` but ``finish``, and the reviewers' read-only tools of
``agentreview.REVIEW_TOOLS`` but ``vote``: the workflow handles those two itself."""

__all__ = ["CALL_TRAILER", "agent_tool"]
