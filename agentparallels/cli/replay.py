"""``agentparallels replay JOB|FILE...``: replay recorded histories against this code, to find
a change that would break running jobs before it is deployed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentparallels.cli.common import err, existing
from agentparallels.client import connect
from agentparallels.core.errors import UsageError

__all__ = ["add_parser", "replay"]


def add_parser(sub: Any) -> None:
    again = sub.add_parser(
        "replay", help="replay a job's recorded history against the current code"
    )
    again.add_argument("target", nargs="+", help="job ids, or history JSON files")
    again.set_defaults(handler=replay)


def _split_targets(targets: list[str]) -> tuple[list[Any], list[str]]:
    """History files (loaded) and job ids, from the command line's targets."""
    from agentparallels import replay as replaying

    histories, jobs = [], []
    for target in targets:
        path = Path(target)
        if path.suffix != ".json" and not path.exists():
            jobs.append(target)
            continue
        if not path.is_file():
            raise UsageError(f"no history file {target}")
        try:
            histories.append(replaying.load(path))
        except ValueError as e:
            raise UsageError(f"{target} is not a workflow history in JSON: {e}") from None
    return histories, jobs


async def replay(args: argparse.Namespace) -> int:
    # The replayer loads every workflow: only when this command runs.
    from agentparallels import replay as replaying

    histories, jobs = _split_targets(args.target)
    if jobs:
        client = await connect(autostart=False, announce=err)
        for job in jobs:
            await existing(client, job)  # a clear error for an unknown id
            histories.extend(await replaying.histories_of(client, job))
    failed = 0
    for result in await replaying.replay(histories):
        if result.failure is None:
            print(f"{result.workflow_id}: {result.events} events replayed without non-determinism")
        else:
            failed += 1
            print(f"{result.workflow_id}: does not replay: {result.failure}")
    return 1 if failed else 0
