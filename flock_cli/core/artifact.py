"""The artifact: one immutable, typed, validated entry on the blackboard."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

from flock_cli.core.visibility import PublicVisibility, VisibilitySpec

__all__ = ["Artifact"]

M = TypeVar("M", bound=BaseModel)


class Artifact(BaseModel):
    """A published piece of data: a type name, a validated payload and its metadata.

    Artifacts are frozen: once published they never change (the blackboard is append-only).
    ``payload`` is the JSON-mode dump of the validated model; :meth:`as_model` turns it back into
    the typed model.
    """

    model_config = ConfigDict(frozen=True)

    id: UUID = Field(default_factory=uuid4)
    type: str
    payload: dict[str, Any]
    produced_by: str = "external"
    correlation_id: UUID | None = None
    partition_key: str | None = None
    tags: frozenset[str] = frozenset()
    visibility: VisibilitySpec = Field(default_factory=PublicVisibility)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    version: int = 1

    def as_model(self, model: builtins.type[M]) -> M:
        """Validate the payload into ``model`` (raises pydantic's ValidationError on mismatch)."""
        return model.model_validate(self.payload)

    def short_id(self) -> str:
        """The first 8 hex digits of the id, for messages."""
        return self.id.hex[:8]
