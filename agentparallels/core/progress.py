"""Showing a job's progress in a terminal."""

from __future__ import annotations

from agentparallels.core.agentjob import AgentResult
from agentparallels.core.models import Progress, RefactorResult
from agentparallels.core.progress_log import LoggedJob

BAR_WIDTH = 30


def line(p: Progress, parts: str = "shards") -> str:
    """One line: a bar of files done, the phase, shards (an agent job's ``units``) done and
    any breaker not closed."""
    total = max(p.files_total, 1)
    filled = round(BAR_WIDTH * p.files_done / total) if p.files_total else 0
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    shards_done = sum(1 for s in p.shards if s.state == "done")
    text = f"[{bar}] {p.files_done}/{p.files_total} files | {p.phase}"
    if p.shards:
        text += f" | {parts} {shards_done}/{len(p.shards)} done"
    if p.tokens or p.remaining is not None:
        text += f" | {p.tokens} tokens"
        if p.remaining is not None:
            text += f" ({p.remaining} left)"
    if p.cost_usd is not None:
        text += f" | ${p.cost_usd:.4f}"
    tripped = [s.name for s in p.shards if s.breaker != "closed" or s.failures]
    if tripped:
        text += " | retrying: " + ", ".join(tripped)
    if p.message:
        text += f" | {p.message}"
    return text


def table(p: Progress) -> str:
    """Every shard's state, as ``agentparallels status`` prints it."""
    rows = [f"job {p.job_id}: {p.phase}, {p.files_done}/{p.files_total} files"]
    if p.tokens or any(b.allowance is not None for b in p.budget):
        rows.append("  tokens: " + budget(p))
    if p.cost_usd is not None:
        rows.append(f"  cost: ${p.cost_usd:.4f}")
    for s in p.shards:
        rows.append(
            f"  {s.name:<24} {s.label:<32} {s.state:<10} {s.files_done:>4}/{s.files_total:<4} "
            f"breaker {s.breaker} ({s.failures} consecutive failures)"
        )
    if p.message:  # what the job waits on: budget, the breaker, a plan or a result to approve
        rows += ["", *(f"  {line}" for line in p.message.splitlines())]
    return "\n".join(rows)


def budget(p: Progress) -> str:
    """Tokens per phase against what each may spend: ``plan 0/1000, execute 420/8000, ...``;
    for a job with a ledger, first what is spent, reserved and left of the enforced budget:
    ``420 spent, 120 reserved, 9460 left (plan 0/1000, execute 420+120/8000, ...)``."""
    phases = ", ".join(
        f"{b.phase} {b.spent}"
        + (f"+{b.reserved}" if b.reserved else "")
        + (f"/{b.allowance}" if b.allowance is not None else "")
        for b in p.budget
    )
    if p.remaining is None and not p.reserved:
        return phases
    head = f"{p.tokens} spent" + (f", {p.reserved} reserved" if p.reserved else "")
    if p.remaining is not None:
        head += f", {p.remaining} left"
    return f"{head} ({phases})" if phases else head


def summary(r: RefactorResult) -> str:
    if r.outcome == "unchanged":
        return "\n".join(
            [f"job {r.job_id}: nothing to change; the repository is untouched", *_notes(r)]
        )
    lines = [
        f"job {r.job_id} succeeded: {len(r.files_changed)} files changed in "
        f"{len(r.modules)} modules, on branch {r.branch} ({r.head_commit[:12]})",
    ]
    for m in r.modules:
        lines.append(f"  {m.module}: {len(m.files_changed)} files ({', '.join(m.shards)})")
    if r.usage.total:
        cost = f", about ${r.cost_usd:.4f}" if r.cost_usd is not None else ""
        lines.append(
            f"  model calls: {r.usage.input_tokens} input + {r.usage.output_tokens} output "
            f"tokens{cost}"
        )
    if r.reused_shards:
        lines.append(f"  taken over from an earlier run: {', '.join(r.reused_shards)}")
    for c in r.checks:
        lines.append(f"  check `{c.command}`: {'passed' if c.passed else 'FAILED'}")
    if r.apply_note:
        lines.append(f"  {r.apply_note}")
    return "\n".join([*lines, *_notes(r)])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def agent_summary(r: AgentResult) -> str:
    """An agent job's outcome: the branch, the files, each unit in one line, the checks and
    the tokens; what a user reads to decide whether to merge."""
    if r.outcome == "no_changes":
        return f"job {r.job_id}: the units changed nothing; the repository is untouched"
    lines = [
        f"job {r.job_id} succeeded: {_count(len(r.files_changed), 'file')} changed by "
        f"{_count(len(r.units), 'unit')}, on branch {r.branch} ({r.head[:12]})",
    ]
    if r.resumed_from:
        lines.append(f"  resumes job {r.resumed_from}")
    for u in r.units:
        said = u.summary.strip().splitlines()[0] if u.summary.strip() else "(no summary)"
        kept = f" (kept from job {u.kept_from}, no model call)" if u.kept_from else ""
        lines.append(f"  unit {u.name}: {', '.join(u.files_changed) or 'no files'}{kept}")
        lines.append(f"    {said[:160]}")
    for c in r.checks:
        lines.append(f"  check `{c.command}`: {'passed' if c.passed else 'FAILED'}")
    for rr in r.reviews:
        approvals = sum(v.approve for v in rr.votes)
        verdict = "approved" if rr.approved else "rejected"
        lines.append(f"  review round {rr.round}: {verdict}, {approvals} of {len(rr.votes)}")
    for a in r.approvals:
        by = f" by {a.by}" if a.by else ""
        lines.append(f"  {a.gate} {a.outcome}{by}" + (f": {a.reason}" if a.reason else ""))
    cost = f", about ${r.cost_usd:.4f}" if r.cost_usd else ""
    lines.append(
        f"  model calls: {r.usage.input_tokens} input + {r.usage.output_tokens} output tokens{cost}"
    )
    if r.published is not None and r.published.apply_note:
        lines.append(f"  {r.published.apply_note}")
    lines += _flag_lines(r)
    return "\n".join(lines)


def _flag_lines(r: AgentResult) -> list[str]:
    """The tool calls outside the repository's baseline (``core.baseline``)."""
    if not r.baseline_jobs:
        return ["  tool calls: no baseline yet (the first agent job on this repository)"]
    lines = [f"  tool calls: {r.flagged} outside the baseline of {r.baseline_jobs} past jobs"]
    lines += [f"    [{f.unit}] {f.line()}" for f in r.flags]
    if r.flagged > len(r.flags):
        lines.append(f"    ... and {r.flagged - len(r.flags)} more (see `agentparallels events`)")
    return lines


def _notes(r: RefactorResult) -> list[str]:
    """What a rename did not do the usual way: say so, naming the files."""
    lines = []
    if r.respelled:
        lines.append(
            "  renamed token by token (identifiers spelled with letters Python normalises, "
            f"which rope cannot read): {', '.join(r.respelled)}"
        )
    if r.unparsed:
        lines.append(
            f"  NOT renamed, they do not parse (fix them and rename again): {', '.join(r.unparsed)}"
        )
    return lines


def logged(job: LoggedJob, repository: str) -> str:
    """What a job's progress log says, for a job Temporal has no history of."""
    log = job.log
    finished = [s for s in job.shards if s.entry.result is not None]
    committed = sum(s.committed for s in job.shards)
    rows = [
        f"job {log.job_id}: no history in Temporal; its progress log in {repository} says:",
        f"  base {log.base_commit[:12]}, {log.files_total} files in {len(job.shards)} shards: "
        f"{len(finished)} finished, {committed} files committed",
    ]
    for s in job.shards:
        e = s.entry
        if e.result is not None:
            state, where = "finished", f"result {e.result.head[:12]}"
        elif s.branch is not None:
            state, where = "unfinished", f"branch at {s.branch[:12]}"
        else:
            state, where = "not started", ""
        rows.append(
            f"  {e.name:<24} {e.label:<32} {state:<11} {s.committed:>4}/{e.files_total:<4} "
            f"files committed  {where}".rstrip()
        )
    if job.published:
        rows.append(f"  published: branch agentparallels/{log.job_id} at {job.published[:12]}")
    else:
        rows.append(
            f"  to finish it, run the same `agentparallels refactor` command with --job-id "
            f"{log.job_id}: finished shards and committed files are kept"
        )
    return "\n".join(rows)


__all__ = [
    "BAR_WIDTH",
    "agent_summary",
    "budget",
    "line",
    "logged",
    "summary",
    "table",
]
