"""The artifact: one immutable, typed, validated entry on the blackboard."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flock_cli.core.frozen import freeze
from flock_cli.core.options import Options
from flock_cli.core.visibility import PublicVisibility, Visibility, VisibilitySpec

__all__ = ["Artifact"]

M = TypeVar("M", bound=BaseModel)


class Artifact(Options):
    """A published piece of data: a type name, a validated payload and its metadata.

    Artifacts are frozen: once published they never change (the blackboard is append-only).
    ``payload`` is the JSON-mode dump of the validated model, made read-only (see ``frozen.py``);
    :meth:`as_model` turns it back into the typed model.
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
    trace_context: str | None = None
    """The W3C ``traceparent`` of the span that published it (a publish or an agent run): the
    runs it causes, in any process, join that trace. Set by the runtime when it is published."""

    @field_validator("payload", mode="after")
    @classmethod
    def _freeze(cls, payload: dict[str, Any]) -> dict[str, Any]:
        frozen: dict[str, Any] = freeze(payload)
        return frozen

    @classmethod
    def trusted(
        cls,
        *,
        id: UUID,
        type: str,
        payload: dict[str, Any],
        produced_by: str,
        correlation_id: UUID | None,
        partition_key: str | None,
        tags: frozenset[str],
        visibility: Visibility,
        created_at: datetime,
        version: int = 1,
        trace_context: str | None = None,
    ) -> Artifact:
        """Build an artifact from values the runtime has already validated, skipping validation.

        The runtime validates every payload against its registered type before it calls this;
        re-validating the envelope here cost more than the rest of a publish (measured with
        bench/pipeline.py). Same result as ``model_construct``, about four times faster.
        """
        artifact = object.__new__(cls)
        object.__setattr__(
            artifact,
            "__dict__",
            {
                "id": id,
                "type": type,
                "payload": freeze(payload),
                "produced_by": produced_by,
                "correlation_id": correlation_id,
                "partition_key": partition_key,
                "tags": tags,
                "visibility": visibility,
                "created_at": created_at,
                "version": version,
                "trace_context": trace_context,
            },
        )
        object.__setattr__(artifact, "__pydantic_fields_set__", set(_FIELDS))
        object.__setattr__(artifact, "__pydantic_extra__", None)
        object.__setattr__(artifact, "__pydantic_private__", None)
        return artifact

    def as_model(self, model: builtins.type[M]) -> M:
        """Validate the payload into ``model`` (raises pydantic's ValidationError on mismatch)."""
        return model.model_validate(self.payload)

    def short_id(self) -> str:
        """The first 8 hex digits of the id, for messages."""
        return self.id.hex[:8]


_FIELDS = tuple(Artifact.model_fields)
