"""The base of every value sent through Temporal, and the literal types values share."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

SandboxMode = Literal["bwrap", "none"]
"""How tool commands run: in a bubblewrap sandbox, or unconfined (see docs/isolation.md)."""


class Value(BaseModel):
    """Frozen, and strict about its fields: a typo in an input is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Sandbox(Value):
    """How a job's tool commands are confined, and what they may see beyond the defaults (see
    docs/isolation.md). Only names and paths: the values of passed variables never leave the
    worker. A bare mode (``"bwrap"``, ``"none"``, as inputs recorded before these fields had)
    is read as that mode with nothing added."""

    mode: SandboxMode = "bwrap"
    """``bwrap``: deny by default; ``none``: a plain child process of the worker."""
    ro: tuple[str, ...] = ()
    """More absolute paths commands may read (``--sandbox-ro``)."""
    rw: tuple[str, ...] = ()
    """More absolute paths commands may read and write (``--sandbox-rw``)."""
    env: tuple[str, ...] = ()
    """Names of more environment variables of the worker commands get (``--sandbox-env``)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_mode(cls, data: Any) -> Any:
        return {"mode": data} if isinstance(data, str) else data
