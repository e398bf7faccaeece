"""How values and queries map to the SQLite board: ids are 16-byte blobs and times integer
microseconds since the epoch (UTC), both cheaper to index and compare than their text forms."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from flock_cli.core.artifact import Artifact
from flock_cli.core.visibility import PublicVisibility, Visibility, VisibilitySpec
from flock_cli.store.columns import ARTIFACT_COLUMNS, DELIVERY_COLUMNS, payload_json
from flock_cli.store.contract import ArtifactQuery, Delivery, DeliveryStatus

__all__ = [
    "ARTIFACT_COLUMNS",
    "DELIVERY_COLUMNS",
    "artifact_from_row",
    "artifact_row",
    "delivery_from_row",
    "delivery_row",
    "from_micros",
    "pack_ids",
    "to_micros",
    "unpack_ids",
    "where_clause",
]

_VISIBILITY: TypeAdapter[Any] = TypeAdapter(VisibilitySpec)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    # Integer microseconds since the epoch: compact, exact, and SQL compares and orders them.
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def unpack_ids(blob: bytes) -> tuple[UUID, ...]:
    """UUIDs packed as consecutive 16-byte values (ids are stored as 16-byte blobs)."""
    return tuple(UUID(bytes=blob[i : i + 16]) for i in range(0, len(blob), 16))


def pack_ids(ids: Sequence[UUID]) -> bytes:
    return b"".join(i.bytes for i in ids)


def where_clause(query: ArtifactQuery) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters for an artifact query (visibility is checked in Python)."""
    clauses: list[str] = []
    params: list[Any] = []

    def among(column: str, values: frozenset[str]) -> None:
        clauses.append(f"{column} IN ({','.join('?' * len(values))})")
        params.extend(sorted(values))

    if query.types is not None:
        among("type", query.types)
    if query.produced_by is not None:
        among("produced_by", query.produced_by)
    if query.correlation_id is not None:
        clauses.append("correlation_id = ?")
        params.append(query.correlation_id.bytes)
    if query.since is not None:
        clauses.append("created_at >= ?")
        params.append(to_micros(query.since))
    if query.until is not None:
        clauses.append("created_at < ?")
        params.append(to_micros(query.until))
    for tag in sorted(query.tags or ()):
        clauses.append("seq IN (SELECT artifact_seq FROM artifact_tags WHERE tag = ?)")
        params.append(tag)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def artifact_row(a: Artifact) -> tuple[Any, ...]:
    """The ``ARTIFACT_COLUMNS`` values of an artifact."""
    return (
        a.id.bytes,
        a.type,
        payload_json(a.payload),
        a.produced_by,
        a.correlation_id.bytes if a.correlation_id else None,
        a.partition_key,
        json.dumps(sorted(a.tags)) if a.tags else "[]",
        _visibility_json(a.visibility),
        to_micros(a.created_at),
        a.version,
        a.trace_context,
    )


def artifact_from_row(row: Sequence[Any]) -> Artifact:
    """An artifact from its ``ARTIFACT_COLUMNS`` values (already validated when written)."""
    return Artifact.trusted(
        id=UUID(bytes=row[0]),
        type=row[1],
        payload=json.loads(row[2]),
        produced_by=row[3],
        correlation_id=UUID(bytes=row[4]) if row[4] else None,
        partition_key=row[5],
        tags=frozenset(json.loads(row[6])),
        visibility=_VISIBILITY.validate_json(row[7]),
        created_at=from_micros(row[8]),
        version=row[9],
        trace_context=row[10],
    )


def delivery_row(d: Delivery) -> tuple[Any, ...]:
    """The ``DELIVERY_COLUMNS`` values of a delivery."""
    return (
        d.id.bytes,
        d.agent,
        pack_ids(d.artifact_ids),
        to_micros(d.created_at),
        d.status.value,
        d.attempts,
        d.lease_owner,
        to_micros(d.lease_expires_at) if d.lease_expires_at else None,
        d.priority,
        d.trigger,
        d.batch_trigger,
        _ONE_GROUP if d.group_sizes == (1,) else json.dumps(list(d.group_sizes)),
        d.subscription,
    )


_ONE_GROUP = "[1]"  # the group sizes of almost every delivery: one artifact in one group


def _visibility_json(visibility: Visibility) -> str:
    """A visibility's stored JSON; the public one (most artifacts) is written once per process."""
    if type(visibility) is PublicVisibility:
        return _PUBLIC_JSON
    return visibility.model_dump_json()


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A delivery from its ``DELIVERY_COLUMNS`` values."""
    return Delivery(
        id=UUID(bytes=row[0]),
        agent=row[1],
        artifact_ids=unpack_ids(row[2]),
        created_at=from_micros(row[3]),
        status=DeliveryStatus(row[4]),
        attempts=row[5],
        lease_owner=row[6],
        lease_expires_at=from_micros(row[7]) if row[7] else None,
        priority=row[8],
        trigger=row[9],
        batch_trigger=row[10],
        group_sizes=tuple(json.loads(row[11])),
        subscription=row[12],
    )


_PUBLIC_JSON = PublicVisibility().model_dump_json()
