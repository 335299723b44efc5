"""The agent loop's feedback step: a tool command run on the model's answer."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

from agentparallels.activities import sandbox
from agentparallels.activities._defn import implements
from agentparallels.activities._proc import run_command
from agentparallels.core import steps
from agentparallels.core.agent import ToolInput, ToolResult


@implements(steps.RUN_TOOL)
def run_tool(inp: ToolInput) -> ToolResult:
    """Run ``inp.command`` with ``{answer}`` replaced by the path of a file holding the answer.
    Reads and writes nothing else of its own, so running it again is harmless. The answer's
    folder is made inside ``workdir`` (and removed after), where a sandboxed command sees it."""
    workdir = Path(inp.workdir) if inp.workdir else None
    with tempfile.TemporaryDirectory(prefix=".agentparallels-answer-", dir=workdir) as scratch:
        answer = Path(scratch) / "answer.txt"
        answer.write_text(inp.answer)
        command = inp.command.replace("{answer}", shlex.quote(str(answer)))
        # The confinement is the loop's input, never the model's: the answer is only a file in
        # the folder, and what a folder holds never widens the sandbox (activities/exposure.py).
        policy = sandbox.Policy.of(inp.sandbox)
        done = run_command(
            command, workdir or Path(scratch), inp.timeout_s, policy, denial_is_output=True
        )
    return ToolResult(exit_code=done.exit_code, output=done.output)


__all__ = ["run_tool"]
