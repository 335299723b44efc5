"""Checks of a refactor request made before anything starts, with messages that say how to fix it.

What needs the code base itself (does the symbol exist, is the new name taken) is checked by the
job's planning step, before it changes anything; its error comes back as a usage error too.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from agentparallels.core import redact
from agentparallels.core._value import Sandbox, SandboxMode
from agentparallels.core.errors import UsageError
from agentparallels.core.llm import BudgetLimits, Price, split_model
from agentparallels.core.models import BaseEdit, CommandEdit, EditSpec, ModelEdit, RenameEdit

E = TypeVar("E", bound=BaseEdit)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def is_url(repository: str) -> bool:
    return "://" in repository or (repository.count(":") == 1 and "@" in repository.split(":")[0])


def no_credentials(repository_url: str) -> None:
    """Refuse a repository URL that carries a credential: the URL is the job's input, so it
    would be stored in the workflow history (see docs/security.md)."""
    if found := redact.credentials(repository_url):
        raise UsageError(
            f"the repository URL {redact.url(repository_url)} carries {' and '.join(found)}, "
            "which would be stored in the job's history: remove it from the URL and let git "
            "supply it on every worker (a credential helper, e.g. `git config --global "
            "credential.helper store`, or an ssh key)"
        )


def endpoint(url: str | None) -> None:
    """Refuse a model endpoint (``--base-url``) that carries a credential, for the same reason."""
    if url and (why := redact.endpoint_refusal(url)):
        raise UsageError(f"--base-url {why}")


def repository(path_or_url: str) -> str:
    """The repository as the job will name it: a URL as given (refused if it carries a
    credential), or a local repository's top folder as an absolute path."""
    if is_url(path_or_url):
        no_credentials(path_or_url)
        if _git(Path("/"), "ls-remote", "--heads", path_or_url).returncode != 0:
            raise UsageError(f"cannot read the git repository at {path_or_url}: check the URL")
        return path_or_url
    path = Path(path_or_url).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"{path_or_url} does not exist: pass the path of a git repository")
    top = _git(path, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageError(
            f"{path_or_url} is not a git repository: run `git init` and commit there, "
            "or pass a repository's path"
        )
    return top.stdout.strip()


def base_ref(repo: str, ref: str) -> None:
    if is_url(repo):
        return  # resolved by the planning step against the remote
    if _git(Path(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise UsageError(
            f"base ref '{ref}' not found in {repo}: pass an existing branch, tag or commit "
            "with --base (a new repository needs a first commit)"
        )


def edit(
    rename: str | None,
    edit_cmd: str | None,
    files: list[str] | None,
    *,
    instruct: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
) -> EditSpec:
    """The edit the command-line flags ask for. What makes a spec valid, each kind checks
    itself (:mod:`agentparallels.core.models`); here only how the flags combine."""
    chosen = [
        flag
        for flag, value in (
            ("--rename", rename),
            ("--edit-cmd", edit_cmd),
            ("--instruct", instruct),
        )
        if value
    ]
    if len(chosen) > 1:
        raise UsageError(f"conflicting editors: give one of {', '.join(chosen)}, not several")
    if (model or base_url) and not instruct:
        raise UsageError("--model and --base-url go with --instruct")
    patterns = tuple(files or ("**/*.py",))
    if instruct:
        if not model:
            raise UsageError("--instruct needs --model PROVIDER:MODEL, e.g. --model openai:gpt-4.1")
        return spec(ModelEdit, instruct=instruct, model=model, base_url=base_url, files=patterns)
    if rename:
        if files:
            raise UsageError("--files goes with --edit-cmd; a rename finds its files itself")
        old, sep, new = rename.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--rename takes OLD=NEW (e.g. pkg.mod.func=new_name), not '{rename}'")
        return spec(RenameEdit, old=old.strip(), new=new.strip())
    if edit_cmd:
        return spec(CommandEdit, command=edit_cmd, files=patterns)
    raise UsageError(
        "nothing to do: pass --rename OLD=NEW, --edit-cmd 'CMD {file}' or --instruct TEXT"
    )


FLAGS = {
    "old": "--rename",
    "new": "--rename",
    "command": "--edit-cmd",
    "files": "--files",
    "instruct": "--instruct",
    "model": "--model",
    "base_url": "--base-url",
}
"""The command-line option that gives each field of an edit spec."""


def spec(kind: type[E], **fields: Any) -> E:
    """The edit ``kind`` made of ``fields``; its own check's first complaint as a usage error
    naming the option that gave the field."""
    try:
        return kind(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        flag = FLAGS.get(str(first["loc"][0]) if first["loc"] else "", kind.flag)
        raise UsageError(f"{flag}: {reason}") from None


def clean_for_apply(repo: str) -> None:
    if is_url(repo):
        raise UsageError("--apply needs a local repository; fetch the job's branch instead")
    status = _git(Path(repo), "status", "--porcelain", "--untracked-files=no")
    if status.stdout.strip():
        raise UsageError(
            f"--apply needs a clean working tree, and {repo} has uncommitted changes: "
            "commit or stash them, or drop --apply and merge the job's branch later"
        )
    if _git(Path(repo), "symbolic-ref", "-q", "HEAD").returncode != 0:
        raise UsageError(f"--apply needs a checked-out branch, and HEAD of {repo} is detached")


def prices(specs: list[str]) -> dict[str, Price]:
    """``openai:gpt-4.1=2,8`` -> that model's price: $2 per million input tokens, $8 output."""
    found = {}
    for spec in specs:
        model, _, numbers = spec.rpartition("=")
        try:
            split_model(model)
            given, taken = (float(n) for n in numbers.split(","))
            found[model] = Price(input=given, output=taken)
        except ValueError:
            raise UsageError(
                f"--price takes MODEL=IN,OUT in dollars per million tokens "
                f"(e.g. openai:gpt-4.1=2,8), not '{spec}'"
            ) from None
    return found


def sandbox(mode: SandboxMode) -> None:
    """Fail closed: the sandbox asked for must be buildable here (the worker checks again)."""
    from agentparallels.activities import sandbox as tool_sandbox

    why = tool_sandbox.problem(mode)
    if why:
        raise UsageError(f"{why}; or pass --sandbox none to run tool commands unconfined")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sandbox_spec(
    mode: SandboxMode,
    ro: Sequence[str] = (),
    rw: Sequence[str] = (),
    env: Sequence[str] = (),
    *,
    base: Sandbox | None = None,
) -> Sandbox:
    """``--sandbox`` with what ``--sandbox-ro PATH``, ``--sandbox-rw PATH`` and
    ``--sandbox-env NAME`` add (to ``base``'s, for a resumed job): each path must exist and is
    kept absolute, each name must be a variable name."""
    if mode == "none" and (ro or rw or env):
        raise UsageError(
            "--sandbox-ro, --sandbox-rw and --sandbox-env widen the bwrap sandbox; with "
            "--sandbox none commands see everything already: drop them or the --sandbox none"
        )
    paths: dict[str, list[str]] = {"--sandbox-ro": [], "--sandbox-rw": []}
    for flag, given in (("--sandbox-ro", ro), ("--sandbox-rw", rw)):
        for text in given:
            path = os.path.abspath(os.path.expanduser(text))
            if not os.path.exists(path):
                raise UsageError(
                    f"{flag} {text}: no such file or folder; pass an existing path (it is "
                    "exposed to tool commands at the same place)"
                )
            paths[flag].append(path)
    for name in env:
        if not ENV_NAME.fullmatch(name):
            raise UsageError(
                f"--sandbox-env takes a variable name (letters, digits, _), not '{name}'"
            )
        if name in ("HOME", "TMPDIR"):
            raise UsageError(f"--sandbox-env {name}: the sandbox sets {name} itself")
    base = base or Sandbox(mode=mode)

    def merged(old: tuple[str, ...], new: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*old, *new]))

    return Sandbox(
        mode=mode,
        ro=merged(base.ro, paths["--sandbox-ro"]),
        rw=merged(base.rw, paths["--sandbox-rw"]),
        env=merged(base.env, env),
    )


def budget(total: int | None, shares: str | None) -> BudgetLimits:
    """``--budget-tokens`` and ``--phase-shares plan=0.1,execute=0.7,verify=0.2``."""
    if shares is None:
        return BudgetLimits(total=total)
    if total is None:
        raise UsageError("--phase-shares divides --budget-tokens: give --budget-tokens N too")
    parsed: dict[str, float] = {}
    for part in shares.split(","):
        phase, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            parsed[phase.strip()] = float(value)
        except ValueError:
            raise UsageError(
                f"--phase-shares takes PHASE=SHARE,... (e.g. {_SHARES_EXAMPLE}), not '{shares}'"
            ) from None
    try:
        return BudgetLimits(total=total, shares=parsed)
    except ValidationError as e:
        reason = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"--phase-shares {shares}: {reason} (e.g. {_SHARES_EXAMPLE})") from None


_SHARES_EXAMPLE = "plan=0.1,execute=0.7,verify=0.2"


__all__ = [
    "ENV_NAME",
    "FLAGS",
    "base_ref",
    "budget",
    "clean_for_apply",
    "edit",
    "endpoint",
    "is_url",
    "no_credentials",
    "prices",
    "repository",
    "sandbox",
    "sandbox_spec",
    "spec",
]
