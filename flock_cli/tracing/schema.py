"""The tables and views of the DuckDB trace store (docs/traces.md describes every column).

Plain tables without keys or constraints: DuckDB checks those row by row, which makes batched
inserts several times slower (research/backend.md), and every row here is written exactly once by
one writer. A trace id is a run id: ``flock trace`` calls a trace a run. Times are integer
nanoseconds since the epoch (UTC) in the tables; the ``v_*`` views show them as timestamps (UTC)
and flatten the attributes worth a column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__all__ = ["SCHEMA_VERSION", "TABLES", "VIEWS", "ddl", "prepare"]

SCHEMA_VERSION = 2

TABLES: dict[str, str] = {
    "meta": "key VARCHAR, value VARCHAR",
    "runs": (
        "trace_id VARCHAR, span_id VARCHAR, name VARCHAR, started_ns BIGINT, ended_ns BIGINT,"
        " status VARCHAR, pid INTEGER, host VARCHAR, attributes JSON"
    ),
    "spans": (
        "trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, name VARCHAR, kind VARCHAR,"
        " agent VARCHAR, start_ns BIGINT, end_ns BIGINT, status VARCHAR, message VARCHAR,"
        " attributes JSON, inputs VARCHAR[], outputs VARCHAR[], service VARCHAR, start_time TIMESTAMP,"
        " otel_trace_id VARCHAR, otel_parent_id VARCHAR, links VARCHAR[]"
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

# Columns added after version 1, with how rows written before them are filled in.
_ADDED: dict[str, list[tuple[str, str, str | None]]] = {
    "spans": [
        ("service", "VARCHAR", "agent"),
        ("start_time", "TIMESTAMP", "make_timestamp(start_ns // 1000)"),
        ("otel_trace_id", "VARCHAR", None),
        ("otel_parent_id", "VARCHAR", None),
        ("links", "VARCHAR[]", None),
    ],
}


def _ts(column: str) -> str:
    return f"make_timestamp({column} // 1000)"


def _attr(key: str, kind: str = "VARCHAR") -> str:
    # Keys hold dots (``llm.model``): quoted in the JSON path, they are one key, not a nesting.
    cast = f"attributes->>'$.\"{key}\"'"
    return cast if kind == "VARCHAR" else f"TRY_CAST({cast} AS {kind})"


VIEWS: dict[str, str] = {
    "v_runs": f"""
        SELECT trace_id AS run_id, name, status, {_ts("started_ns")} AS started_at,
               {_ts("ended_ns")} AS ended_at, (ended_ns - started_ns) / 1e9 AS duration_s, pid, host,
               {_attr("flock.board")} AS board, attributes
        FROM runs""",
    "v_spans": f"""
        SELECT trace_id AS run_id, span_id, parent_id, name, kind, agent, {_ts("start_ns")} AS started_at,
               {_ts("end_ns")} AS ended_at, (end_ns - start_ns) / 1e6 AS duration_ms, status, message,
               coalesce(otel_trace_id, trace_id) AS otel_trace_id, {_attr("flock.outcome")} AS outcome,
               {_attr("flock.attempt", "INTEGER")} AS attempt, {_attr("llm.model")} AS model,
               {_attr("llm.input_tokens", "BIGINT")} AS input_tokens,
               {_attr("llm.output_tokens", "BIGINT")} AS output_tokens, {_attr("llm.cost", "DOUBLE")} AS cost,
               {_attr("flock.correlation_id")} AS correlation_id, inputs, outputs, links, attributes
        FROM spans""",
    "v_agent_runs": """
        SELECT run_id, span_id, agent, started_at, ended_at, duration_ms, status, outcome, attempt, model,
               input_tokens, output_tokens, cost, correlation_id, message AS error,
               json_extract_string(attributes, '$.input.artifacts[*].type') AS input_types,
               json_extract_string(attributes, '$.output.types[*]') AS output_types,
               inputs, outputs, otel_trace_id
        FROM v_spans WHERE name = 'agent.run'""",
    "v_model_calls": f"""
        SELECT run_id, span_id, parent_id AS agent_run, agent, started_at, duration_ms, status,
               message AS error, {_attr("gen_ai.request.model")} AS request_model,
               {_attr("gen_ai.response.model")} AS response_model,
               {_attr("gen_ai.usage.input_tokens", "BIGINT")} AS input_tokens,
               {_attr("gen_ai.usage.output_tokens", "BIGINT")} AS output_tokens,
               {_attr("gen_ai.response.finish_reasons")} AS finish_reasons,
               {_attr("gen_ai.request.temperature", "DOUBLE")} AS temperature,
               {_attr("gen_ai.request.max_tokens", "BIGINT")} AS max_tokens
        FROM v_spans WHERE name = 'llm.call'""",
    "v_tool_calls": f"""
        SELECT run_id, span_id, parent_id AS agent_run, agent, {_attr("gen_ai.tool.name")} AS tool,
               started_at, duration_ms, status, message AS error
        FROM v_spans WHERE name = 'tool.call'""",
    "v_artifacts": f"""
        SELECT trace_id AS run_id, span_id, artifact_id, type, produced_by, correlation_id,
               {_ts("created_ns")} AS created_at, visibility, tags, payload
        FROM artifacts""",
    "v_events": f"""
        SELECT trace_id AS run_id, span_id, {_ts("ts_ns")} AS at, kind, agent, artifact_id, attributes
        FROM events""",
}


def ddl() -> list[str]:
    """The statements that create the store's tables when they are missing."""
    return [f"CREATE TABLE IF NOT EXISTS {name} ({columns})" for name, columns in TABLES.items()]


def view_ddl(*, temporary: bool = False) -> list[str]:
    """The statements that (re)create the ``v_*`` views (``temporary``: as a reader's own, over
    the union of several stores)."""
    kind = "TEMP VIEW" if temporary else "VIEW"
    return [f"CREATE OR REPLACE {kind} {name} AS {sql.strip()}" for name, sql in VIEWS.items()]


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the store (inside the caller's write transaction) to :data:`SCHEMA_VERSION`: tables
    created when missing, columns added since version 1 added (and filled in), views made.

    Every time, not once per process: the store may have been deleted (or pruned to nothing) since.
    """
    for statement in ddl():
        con.execute(statement)
    found = con.execute("SELECT max(TRY_CAST(value AS INTEGER)) FROM meta WHERE key = 'schema'").fetchall()
    version = found[0][0] if found and found[0][0] is not None else 0
    if version >= SCHEMA_VERSION:
        return
    if version:  # a store of an older release: its tables lack the newer columns
        for table, columns in _ADDED.items():
            for name, kind, fill in columns:
                con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")
                if fill is not None:
                    con.execute(f"UPDATE {table} SET {name} = {fill} WHERE {name} IS NULL")
    for statement in view_ddl():
        con.execute(statement)
    con.execute("DELETE FROM meta WHERE key = 'schema'")
    con.execute("INSERT INTO meta VALUES ('schema', ?)", [str(SCHEMA_VERSION)])
