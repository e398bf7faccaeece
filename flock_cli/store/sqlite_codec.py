"""How values are stored in the SQLite board: ids as 16-byte blobs, times as integer microseconds
since the epoch (UTC). Both are cheaper to index and compare than their text forms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

__all__ = ["from_micros", "pack_ids", "to_micros", "unpack_ids"]

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
