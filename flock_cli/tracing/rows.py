"""Turning flattened trace records into table rows that DuckDB ingests quickly (in the ingest process).

Each table's rows of a batch become one JSON array of objects, written to a scratch file with a
single ``json.dumps`` (C code), and DuckDB's JSON reader loads it with the table's column types.
Measured on the benchmark machine for 10,000 agent runs: 0.1 s in DuckDB (with the GIL released,
so the event loop keeps running), against about 2 s for ``INSERT ... SELECT unnest(?)`` over
Python lists, most of which holds the GIL.

A top-level span's row also carries its children (stages, engine calls, store writes, schedule
decisions); SQL unnests them into rows of their own. Ids (UUIDs) become strings through
``default=str``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flock_cli.tracing.records import id_text
from flock_cli.tracing.schema import TABLES

__all__ = ["Batch", "insert_statements", "to_rows"]

_MAX_PAYLOAD = 1 << 20  # payloads above 1 MiB are summarised, not copied into the traces
_SLICE = 50  # rows encoded between two pauses of the writer thread
_CHILD_FIELDS = ("span_id", "name", "start_ns", "end_ns", "status", "message", "attributes")
_CHILD_TYPE = (
    "STRUCT(span_id VARCHAR, name VARCHAR, start_ns BIGINT, end_ns BIGINT, status VARCHAR,"
    " message VARCHAR, attributes JSON)[]"
)
_ENCODED = {"artifacts": "payload"}  # columns whose values arrive as encoded JSON text


def _columns(table: str) -> list[tuple[str, str]]:
    return [tuple(c.strip().split(" ", 1)) for c in TABLES[table].split(",")]  # type: ignore[misc]


class Batch:
    """The rows of one batch, per table, plus the updates that are not inserts."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {
            "runs": [], "spans": [], "artifacts": [], "events": [], "status": []
        }  # fmt: skip
        self.run_ends: list[tuple[int, str, str]] = []  # (ended_ns, status, trace_id)
        self.status_keys: set[tuple[str | None, int]] = set()

    def dumps(self, table: str) -> str:
        """The table's rows as one JSON document.

        Encoded in slices with a pause between them: the writer thread shares the GIL with the
        event loop, and one long stretch of encoding would hold the loop up.
        """
        rows = self.rows[table]
        parts = []
        for start in range(0, len(rows), _SLICE):
            parts.append(json.dumps(rows[start : start + _SLICE], default=str, ensure_ascii=False)[1:-1])
            time.sleep(0)
        return "[" + ",".join(parts) + "]"


def insert_statements(table: str) -> list[str]:
    """The statements that insert a batch file of ``table`` (its path is the one parameter)."""
    columns = _columns(table)
    types = {name: ("VARCHAR" if _ENCODED.get(table) == name else kind) for name, kind in columns}
    if table == "spans":
        types["children"] = _CHILD_TYPE
    spec = ", ".join(f"{name}: '{kind}'" for name, kind in types.items())
    source = f"read_json(?, format='array', records=true, columns={{{spec}}})"
    names = [name for name, _ in columns]
    selects = [f"CAST({n} AS JSON)" if _ENCODED.get(table) == n else n for n in names]
    own = f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(selects)} FROM {source}"
    if table != "spans":
        return [own]
    children = (
        "INSERT INTO spans SELECT trace_id, c.span_id, span_id, c.name, 'internal', agent, c.start_ns,"
        " c.end_ns, c.status, c.message, c.attributes, [], []"
        f" FROM (SELECT trace_id, span_id, agent, unnest(children) AS c FROM {source})"
    )
    return [own, children]


def to_rows(items: list[tuple[Any, ...]]) -> Batch:
    """Group flattened records (``frames.flatten``) into table rows."""
    batch = Batch()
    spans, artifacts, events = batch.rows["spans"], batch.rows["artifacts"], batch.rows["events"]
    for item in items:
        tag = item[0]
        if tag == "S":
            (_, trace_id, span_id, parent_id, name, kind, agent, start_ns, end_ns, status, message,
             attributes, inputs, outputs, children, published) = item  # fmt: skip
            for (
                artifact_id,
                type_name,
                produced_by,
                correlation,
                created,
                visibility,
                tags,
                payload,
            ) in published:
                artifacts.append({
                    "trace_id": trace_id, "span_id": span_id, "artifact_id": id_text(artifact_id),
                    "type": type_name, "produced_by": produced_by,
                    "correlation_id": None if correlation is None else id_text(correlation),
                    "created_ns": int(created * 1e6) * 1000, "visibility": visibility, "tags": tags,
                    "payload": _payload(payload),
                })  # fmt: skip
            spans.append({
                "trace_id": trace_id, "span_id": span_id, "parent_id": parent_id, "name": name, "kind": kind,
                "agent": agent, "start_ns": start_ns, "end_ns": end_ns, "status": status, "message": message,
                "attributes": attributes or None, "inputs": [id_text(i) for i in inputs],
                "outputs": [id_text(o) for o in outputs],
                "children": [dict(zip(_CHILD_FIELDS, child, strict=True)) for child in children],
            })  # fmt: skip
        elif tag == "E":
            _, trace_id, span_id, ts_ns, kind, agent, artifact_id, attributes = item
            events.append({
                "trace_id": trace_id, "span_id": span_id, "ts_ns": ts_ns, "kind": kind, "agent": agent,
                "artifact_id": artifact_id, "attributes": attributes or None,
            })  # fmt: skip
        elif tag == "R":
            _, trace_id, span_id, name, started_ns, pid, host, attributes = item
            batch.rows["runs"].append({
                "trace_id": trace_id, "span_id": span_id, "name": name, "started_ns": started_ns,
                "ended_ns": None, "status": "running", "pid": pid, "host": host,
                "attributes": attributes or None,
            })  # fmt: skip
        elif tag == "X":
            _, trace_id, ended_ns, status = item
            batch.run_ends.append((ended_ns, status, trace_id))
        elif tag == "T":
            _, trace_id, ts_ns, pid, snapshot = item
            batch.rows["status"].append(
                {"trace_id": trace_id, "ts_ns": ts_ns, "pid": pid, "snapshot": snapshot}
            )
            batch.status_keys.add((trace_id, pid))
    return batch


# One encoder for every payload: json.dumps with options builds a new encoder on each call.
_encode_payload = json.JSONEncoder(ensure_ascii=False).encode


def _payload(payload: Any) -> str:
    # Encoded on its own so an oversized payload can be summarised; the batch JSON carries it as
    # a string that DuckDB parses back (CAST ... AS JSON).
    text = _encode_payload(payload)
    if len(text) > _MAX_PAYLOAD:
        return json.dumps({"_truncated": True, "bytes": len(text)})
    return text
