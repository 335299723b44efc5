"""The base of every value sent through Temporal, and the literal types values share."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

SandboxMode = Literal["bwrap", "none"]
"""How tool commands run: in a bubblewrap sandbox, or unconfined (see docs/isolation.md)."""


class Value(BaseModel):
    """Frozen, and strict about its fields: a typo in an input is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
