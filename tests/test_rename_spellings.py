"""A rename job on a repository where one module spells the symbol with letters Python
normalises (NFKC), and one that mentions it does not parse: the job renames the first by the
token-level fallback and names both in its result and in the CLI's report."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from agentparallels import worker
from agentparallels.core.models import RefactorInput, RenameEdit
from agentparallels.core.progress import summary
from tests.support.repos import git, make_repo, start_job

LIGATURE = "\ufb01"  # 'ﬁ': Python reads `ﬁnd` as `find`


async def test_rename_job_reports_respelled_and_unparsed_files(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """pkg/user.py imports and calls `ﬁnd`: the job renames it (rope alone skips the file,
    leaving a call to a name that no longer exists) and reports it; pkg/broken.py mentions
    `find` but does not parse: reported by name, not changed."""
    broken = "from pkg.core import find\n\ndef broken(:\n    return find(1)\n"
    repo = make_repo(
        tmp_path / "repo",
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "def find(x):\n    return x\n",
            "pkg/user.py": f"from pkg.core import {LIGATURE}nd\n\nVALUE = {LIGATURE}nd(1)\n",
            "pkg/broken.py": broken,
        },
    )
    job = RefactorInput(repository=str(repo), edit=RenameEdit(old="pkg.core.find", new="locate"))
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        result = await (await start_job(client, task_queue, job)).result()

    assert result.outcome == "succeeded"
    assert result.files_changed == ("pkg/core.py", "pkg/user.py")
    assert result.respelled == ("pkg/user.py",)
    assert result.unparsed == ("pkg/broken.py",)
    assert git(repo, "show", f"{result.branch}:pkg/user.py") == (
        "from pkg.core import locate\n\nVALUE = locate(1)"
    )
    assert git(repo, "show", f"{result.branch}:pkg/broken.py") == broken.rstrip("\n")
    report = summary(result)
    assert "renamed token by token" in report and "pkg/user.py" in report
    assert "NOT renamed, they do not parse" in report and "pkg/broken.py" in report
