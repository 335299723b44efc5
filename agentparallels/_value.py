"""The base of every value sent through Temporal."""

from pydantic import BaseModel, ConfigDict


class Value(BaseModel):
    """Frozen, and strict about its fields: a typo in an input is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
