"""The column lists both SQL boards (SQLite and PostgreSQL) select and insert, in the order their
codecs' row tuples follow, and the text a payload is stored as: one definition, so the two boards
cannot drift apart."""

from __future__ import annotations

import json

__all__ = ["ARTIFACT_COLUMNS", "DELIVERY_COLUMNS", "payload_json"]

ARTIFACT_COLUMNS = (
    "id, type, payload, produced_by, correlation_id, partition_key, tags, visibility, created_at, version,"
    " trace_context"
)
DELIVERY_COLUMNS = (
    "id, agent, artifact_ids, created_at, status, attempts, lease_owner, lease_expires_at,"
    " priority, trigger, batch_trigger, group_sizes, subscription"
)

payload_json = json.JSONEncoder(separators=(",", ":")).encode
"""A payload as the compact JSON both boards store (one encoder: ``json.dumps`` with
``separators`` builds a new one per call, about 3 µs, and every artifact is encoded)."""
