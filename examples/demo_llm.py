"""The demo behind `make demo-llm`: a model edits files of the example package, as a durable job.

With ``OPENAI_API_KEY`` set, a real model (``$DEMO_MODEL``, default ``openai:gpt-4.1-mini``)
does the edits. Without it, a scripted model server on 127.0.0.1 answers with prepared edits,
so the demo runs offline: the same SDK, wire protocol, retries and recorded decisions.
"""

from __future__ import annotations

import os
import subprocess
import sys

from agentparallels.testing.fake_llm import FakeLLM
from examples.example_repo import CLI, TESTS, fresh_copy, show_branch

FILES = "src/shopkart/pricing/[!_]*.py"
INSTRUCT = "Add `from __future__ import annotations` as the first import of the module."
LINE = "from __future__ import annotations\n"


def scripted_answer(text: str) -> str:
    """What a good model would answer for one file: the file with the import added."""
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")))
    return "```python\n" + "".join([*lines[:at], LINE, "\n", *lines[at:]]) + "```"


def main() -> int:
    repo, job_id = fresh_copy("demo-llm")
    targets = sorted(p for p in (repo / "src/shopkart/pricing").glob("*.py") if p.name[0] != "_")
    args = [
        CLI,
        "refactor",
        str(repo),
        "--instruct",
        INSTRUCT,
        "--files",
        FILES,
        "--job-id",
        job_id,
        "--test-cmd",
        TESTS,
    ]
    if os.environ.get("OPENAI_API_KEY"):
        print("OPENAI_API_KEY is set: a real model edits the files.", flush=True)
        done = subprocess.run(
            [*args, "--model", os.environ.get("DEMO_MODEL", "openai:gpt-4.1-mini")]
        )
        return done.returncode
    script = [{"content": scripted_answer(p.read_text())} for p in targets]
    with FakeLLM(script) as fake:
        print(f"No OPENAI_API_KEY: a scripted model server on {fake.url} answers.", flush=True)
        env = {**os.environ, "OPENAI_API_KEY": "sk-demo-not-a-real-key"}
        done = subprocess.run(
            [*args, "--model", "openai:scripted", "--base-url", fake.openai_base_url], env=env
        )
    if done.returncode == 0:
        show_branch(repo, job_id)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
