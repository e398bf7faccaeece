"""The column lists both SQL boards (SQLite and PostgreSQL) select and insert, in the order their
codecs' row tuples follow: one list, so the two boards cannot drift apart."""

from __future__ import annotations

__all__ = ["ARTIFACT_COLUMNS", "DELIVERY_COLUMNS"]

ARTIFACT_COLUMNS = (
    "id, type, payload, produced_by, correlation_id, partition_key, tags, visibility, created_at, version,"
    " trace_context"
)
DELIVERY_COLUMNS = (
    "id, agent, artifact_ids, created_at, status, attempts, lease_owner, lease_expires_at,"
    " priority, trigger, batch_trigger, group_sizes, subscription"
)
