"""Building an artifact's envelope: the payload validated, the header fields checked."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError

from flock_cli.core.artifact import Artifact
from flock_cli.core.visibility import PublicVisibility, Visibility
from flock_cli.errors import InvalidPayloadError, UsageError
from flock_cli.limits import ValueProblem, check_values

__all__ = ["build_artifact", "model_payload", "payload_limit_error"]


def build_artifact(
    type_name: str,
    model: type[BaseModel],
    payload: Any,
    *,
    new_id: Callable[[], UUID],
    artifact_id: UUID | None,
    fresh_correlation: bool,
    now: datetime,
    produced_by: str,
    correlation_id: UUID | None,
    partition_key: str | None = None,
    tags: Iterable[str] | str | None = None,
    visibility: Visibility | None = None,
) -> Artifact:
    """A new artifact of ``type_name``: ``payload`` is validated into ``model`` (an invalid one
    raises :class:`InvalidPayloadError` naming the type and fields) and stored in JSON form.
    Values JSON cannot hold (NaN, infinity, lone surrogates) and payloads over the limits of
    ``flock_cli.limits`` are refused the same way, rather than stored changed. Ids
    come from ``new_id`` only once the payload is valid (a missing correlation id is fresh when
    ``fresh_correlation``)."""
    _check_envelope(visibility, correlation_id, partition_key)
    tag_set = _tag_set(tags)
    problem = check_values(payload)  # before validation, which would expand an alias bomb
    if problem is not None:
        raise payload_limit_error(type_name, model, problem)
    try:
        validated = model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidPayloadError(type_name, exc) from None
    if correlation_id is None and fresh_correlation:
        correlation_id = new_id()
    return Artifact.trusted(
        id=artifact_id or new_id(),
        type=type_name,
        payload=validated.model_dump(mode="json"),
        produced_by=produced_by,
        correlation_id=correlation_id,
        partition_key=partition_key,
        tags=tag_set,
        visibility=(visibility or _PUBLIC).bind(now),
        created_at=now,
        version=1,
    )


_PUBLIC = PublicVisibility()  # frozen, so every public artifact can share one
_NO_TAGS: frozenset[str] = frozenset()


def payload_limit_error(type_name: str, model: type[BaseModel], problem: ValueProblem) -> InvalidPayloadError:
    """An :class:`InvalidPayloadError` for ``problem`` (found by ``flock_cli.limits``), worded
    and located like Pydantic's own errors, so every payload error has one shape."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    detail: InitErrorDetails = {
        "type": PydanticCustomError("payload_limit", problem.message),  # no context: taken as written
        "loc": problem.path,
        "input": None,
    }
    return InvalidPayloadError(type_name, ValidationError.from_exception_data(model.__name__, [detail]))


def model_payload(obj: Any, call: str) -> dict[str, Any]:
    """The payload of a model instance passed to ``call``; anything else is a usage error."""
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        raise UsageError(
            f"{call}() takes a model instance, got the class {obj.__name__}; instantiate it first"
        )
    raise UsageError(
        f"{call}() takes pydantic model instances, got {type(obj).__name__};"
        " use publish_external(type_name, payload) for dicts"
    )


def _check_envelope(visibility: Any, correlation_id: Any, partition_key: Any) -> None:
    if visibility is not None and not isinstance(visibility, Visibility):
        raise UsageError(
            "visibility must be a Visibility (PublicVisibility(), only_for('agent'), ...),"
            f" got {visibility!r}"
        )
    if correlation_id is not None and not isinstance(correlation_id, UUID):
        raise UsageError(f"correlation_id must be a UUID, got {correlation_id!r}")
    if partition_key is not None and not isinstance(partition_key, str):
        raise UsageError(f"partition_key must be a string, got {partition_key!r}")


def _tag_set(tags: Iterable[str] | str | None) -> frozenset[str]:
    if not tags:
        return _NO_TAGS  # most artifacts: nothing to check
    found = frozenset([tags] if isinstance(tags, str) else tags)
    if not all(isinstance(t, str) and t for t in found):
        raise UsageError(f"tags must be non-empty strings, got {sorted(map(repr, found))}")
    return found
