"""What both benches need to know about the machine they run on, and how they exit."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent  # no resolve(): the workflow sandbox may import this


def proc_cpu(pid: int | None) -> float:
    """user + system CPU seconds of process ``pid`` (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all processors of the machine have spent busy since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def dev_server_pid() -> int | None:
    """The dev server this process started (its child running the temporal binary)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        if comm.startswith("temporal") and int(rest[1]) == me:
            return int(stat.parent.name)
    return None


def project_revision() -> dict[str, Any]:
    """The commit measured, and whether project files (outside bench/) differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", ".", ":(exclude)bench")
    return {"commit": git("rev-parse", "HEAD"), "modified_outside_bench": bool(dirty)}


def run_main(main: Callable[[], None]) -> None:
    """Run ``main`` and leave without interpreter teardown: the Temporal client can crash it."""
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (print(e.code, file=sys.stderr) or 2)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
