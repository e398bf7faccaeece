"""The tables of the DuckDB trace store.

Plain tables without keys or constraints: DuckDB checks those row by row, which makes batched
inserts several times slower (research/backend.md), and every row here is written exactly once by
one writer. A trace id is a run id: ``flock trace`` calls a trace a run.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "TABLES", "ddl"]

SCHEMA_VERSION = 1

TABLES: dict[str, str] = {
    "meta": "key VARCHAR, value VARCHAR",
    "runs": (
        "trace_id VARCHAR, span_id VARCHAR, name VARCHAR, started_ns BIGINT, ended_ns BIGINT,"
        " status VARCHAR, pid INTEGER, host VARCHAR, attributes JSON"
    ),
    "spans": (
        "trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, name VARCHAR, kind VARCHAR,"
        " agent VARCHAR, start_ns BIGINT, end_ns BIGINT, status VARCHAR, message VARCHAR,"
        " attributes JSON, inputs VARCHAR[], outputs VARCHAR[]"
    ),
    "artifacts": (
        "trace_id VARCHAR, span_id VARCHAR, artifact_id VARCHAR, type VARCHAR, produced_by VARCHAR,"
        " correlation_id VARCHAR, created_ns BIGINT, visibility VARCHAR, tags VARCHAR[], payload JSON"
    ),
    "events": (
        "trace_id VARCHAR, span_id VARCHAR, ts_ns BIGINT, kind VARCHAR, agent VARCHAR,"
        " artifact_id VARCHAR, attributes JSON"
    ),
    "status": "trace_id VARCHAR, ts_ns BIGINT, pid INTEGER, snapshot JSON",
}


def ddl() -> list[str]:
    """The statements that create the store's tables when they are missing."""
    return [f"CREATE TABLE IF NOT EXISTS {name} ({columns})" for name, columns in TABLES.items()]
