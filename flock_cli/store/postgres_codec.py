"""How values and queries map to the PostgreSQL board: ids are ``uuid``, times ``timestamptz``,
payloads ``json`` (kept as written), tags and id lists arrays; psycopg adapts them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from flock_cli.core.artifact import Artifact
from flock_cli.core.visibility import VisibilitySpec
from flock_cli.store.columns import ARTIFACT_COLUMNS, DELIVERY_COLUMNS, payload_json
from flock_cli.store.contract import ArtifactQuery, Delivery, DeliveryStatus

__all__ = [
    "ARTIFACT_COLUMNS",
    "CLAIM",
    "DELIVERY_COLUMNS",
    "INSERT_ARTIFACT",
    "INSERT_DELIVERY",
    "artifact_from_row",
    "artifact_params",
    "delivery_from_row",
    "delivery_params",
    "where_clause",
]

_VISIBILITY: TypeAdapter[Any] = TypeAdapter(VisibilitySpec)


def artifact_params(a: Artifact, produced_in: UUID | None) -> tuple[Any, ...]:
    return (
        a.id,
        a.type,
        payload_json(a.payload),
        a.produced_by,
        a.correlation_id,
        a.partition_key,
        sorted(a.tags),
        a.visibility.model_dump_json(),
        a.created_at,
        a.version,
        a.trace_context,
        produced_in,
    )


def artifact_from_row(row: Sequence[Any]) -> Artifact:
    return Artifact.trusted(
        id=row[0],
        type=row[1],
        payload=row[2],
        produced_by=row[3],
        correlation_id=row[4],
        partition_key=row[5],
        tags=frozenset(row[6]),
        visibility=_VISIBILITY.validate_python(row[7]),
        created_at=row[8],
        version=row[9],
        trace_context=row[10],
    )


def delivery_params(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.agent,
        list(d.artifact_ids),
        d.created_at,
        d.status.value,
        d.attempts,
        d.lease_owner,
        d.lease_expires_at,
        d.priority,
        d.trigger,
        d.batch_trigger,
        list(d.group_sizes),
        d.subscription,
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A delivery from its ``DELIVERY_COLUMNS`` values."""
    return Delivery(
        id=row[0],
        agent=row[1],
        artifact_ids=tuple(row[2]),
        created_at=row[3],
        status=DeliveryStatus(row[4]),
        attempts=row[5],
        lease_owner=row[6],
        lease_expires_at=row[7],
        priority=row[8],
        trigger=row[9],
        batch_trigger=row[10],
        group_sizes=tuple(row[11]),
        subscription=row[12],
    )


def where_clause(query: ArtifactQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.types is not None:
        clauses.append("type = ANY(%s)")
        params.append(sorted(query.types))
    if query.produced_by is not None:
        clauses.append("produced_by = ANY(%s)")
        params.append(sorted(query.produced_by))
    if query.correlation_id is not None:
        clauses.append("correlation_id = %s")
        params.append(query.correlation_id)
    if query.since is not None:
        clauses.append("created_at >= %s")
        params.append(query.since)
    if query.until is not None:
        clauses.append("created_at < %s")
        params.append(query.until)
    if query.tags:
        clauses.append("tags @> %s")
        params.append(sorted(query.tags))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


INSERT_ARTIFACT = (
    f"INSERT INTO flock.artifacts ({ARTIFACT_COLUMNS}, produced_in)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING"
)
CLAIM = "INSERT INTO flock.consumptions(artifact_id, consumer) VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_DELIVERY = (
    f"INSERT INTO flock.deliveries ({DELIVERY_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (id) DO NOTHING"
)
