"""The wheel installs one namespace, ``agentparallels``, and works beside a user's own
``workflows`` and ``activities``.

The repository keeps the brief's top level (``workflows/``, ``activities/``, ``worker.py``);
``agentparallels/workflows``, ``agentparallels/activities`` and ``agentparallels/worker.py``
link to them. A wheel that put ``workflows`` or ``activities`` at site-packages' top level
would shadow (or be shadowed by) a user's modules of those names: this builds the wheel,
installs it into a fresh virtual environment and runs the CLI and a small job from a folder
that holds a ``workflows.py`` and an ``activities/`` package of the user's own.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.repos import git, make_repo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the source (links kept): an in-tree build would leave a build/
    folder whose stale modules later wheels would pick up."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "agentparallels"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*cache")
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (found,) = out.glob("agentparallels-*.whl")
    return found


def test_the_wheel_holds_only_the_agentparallels_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"agentparallels"}, tops
    for module in ("workflows/refactor.py", "activities/refactor.py", "worker.py"):
        assert f"agentparallels/{module}" in names


def test_no_module_imports_the_top_level_folders_by_their_own_names() -> None:
    """Everything imports ``agentparallels.workflows`` (...), never ``workflows``: a second
    name for one module would load it twice."""
    wrong = []
    folders = ["agentparallels", "bench", "examples", "tests"]
    files = [ROOT / "worker.py", *(ROOT / "workflows").rglob("*.py")]
    files += [*(ROOT / "activities").rglob("*.py")]
    for folder in folders:
        files += [p for p in (ROOT / folder).rglob("*.py") if not p.is_symlink()]
    for path in files:
        if "shopkart" in path.parts or path.parent.is_symlink():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("workflows", "activities", "worker"):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not wrong, "import these through agentparallels.*:\n" + "\n".join(wrong)


def test_sys_path_is_never_edited() -> None:
    edits = [
        str(p.relative_to(ROOT))
        for folder in ("agentparallels", "bench", "examples", "tests", "workflows", "activities")
        for p in (ROOT / folder).rglob("*.py")
        if not p.parent.is_symlink()
        and p.name != "test_install.py"
        and re.search(r"sys\.path\.(insert|append|extend)\(", p.read_text())
    ]
    assert edits == []


@pytest.mark.slow
def test_installed_beside_a_users_own_workflows_and_activities(
    wheel: Path, tmp_path: Path, env: WorkflowEnvironment
) -> None:
    # A fresh virtual environment, outside the repository, without our editable install.
    # Dependencies come from the test's own environment through a path entry (not its .pth
    # files, so not its editable agentparallels): nothing is downloaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not Path(site, "workflows").exists() and not Path(site, "worker.py").exists()

    # The user's project: modules named like ours, which must stay theirs.
    project = tmp_path / "project"
    (project / "activities").mkdir(parents=True)
    (project / "workflows.py").write_text("OWNER = 'user'\n")
    (project / "activities" / "__init__.py").write_text("OWNER = 'user'\n")
    run_env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PYTHONPATH": str(project),
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "AGENTPARALLELS_CACHE_DIR": str(tmp_path / "cache"),
        "AGENTPARALLELS_STATE_DIR": str(tmp_path / "state"),
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
    }
    both = subprocess.run(
        [
            python,
            "-c",
            "import workflows, activities, agentparallels.workflows.refactor as r, "
            "agentparallels.activities.refactor as a, agentparallels.worker as w; "
            "print(workflows.OWNER, activities.OWNER, r.__file__, a.__file__, w.__file__)",
        ],
        cwd=project,
        env=run_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert both[:2] == ["user", "user"]
    assert all(p.startswith(site) for p in both[2:]), both

    cli = str(venv / "bin" / "agentparallels")
    version = subprocess.run(
        [cli, "--version"], cwd=project, env=run_env, text=True, capture_output=True, check=True
    )
    assert version.stdout.startswith("agentparallels ")

    # A small job, run by the installed CLI and its in-process worker.
    repo = make_repo(
        tmp_path / "repo",
        {
            "pkg/__init__.py": "",
            "pkg/money.py": "def to_cents(x):\n    return x * 100\n",
            "pkg/shop.py": "from pkg.money import to_cents\n\nTOTAL = to_cents(3)\n",
        },
    )
    done = subprocess.run(
        [
            cli,
            "refactor",
            str(repo),
            "--rename",
            "pkg.money.to_cents=cents",
            "--job-id",
            f"install-{os.getpid()}",
        ],
        cwd=project,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    shop = git(repo, "show", f"agentparallels/install-{os.getpid()}:pkg/shop.py")
    assert "from pkg.money import cents" in shop
