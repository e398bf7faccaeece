"""How values and queries map to the SQLite board: ids are 16-byte blobs and times integer
microseconds since the epoch (UTC), both cheaper to index and compare than their text forms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from flock_cli.store.contract import ArtifactQuery

__all__ = ["from_micros", "pack_ids", "to_micros", "unpack_ids", "where_clause"]

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
