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
# Columns computed in SQL rather than carried in the batch file: the agent as the span's
# ``service`` and the start as a timestamp (both for queries written against other tools' stores,
# like the blackboard design's "artifact transformations").
_DERIVED = {"spans": {"service": "agent", "start_time": "make_timestamp(start_ns // 1000)"}}


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
    derived = _DERIVED.get(table, {})
    selects = [derived.get(n, s) for n, s in zip(names, selects, strict=True)]
    own = f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(selects)} FROM {source}"
    if table != "spans":
        return [own]
    children = (
        "INSERT INTO spans (trace_id, span_id, parent_id, name, kind, agent, start_ns, end_ns, status,"
        " message, attributes, inputs, outputs, service, start_time, otel_trace_id, otel_parent_id, links)"
        " SELECT trace_id, c.span_id, span_id, c.name, 'internal', agent, c.start_ns, c.end_ns, c.status,"
        " c.message, c.attributes, [], [], agent, make_timestamp(c.start_ns // 1000), otel_trace_id,"
        " CASE WHEN otel_trace_id IS NULL THEN NULL ELSE span_id END, []"
        f" FROM (SELECT trace_id, span_id, agent, otel_trace_id, unnest(children) AS c FROM {source})"
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
             attributes, inputs, outputs, children, published) = item[:16]  # fmt: skip
            otel = item[16] if len(item) > 16 else None
            otel_trace, otel_parent, links, input_types, correlation = (
                otel if otel is not None else (None, None, (), (), None)
            )
            if input_types or published or correlation is not None:
                attributes = _flow_attributes(attributes, inputs, input_types, published)
                if correlation is not None:
                    attributes["flock.correlation_id"] = id_text(correlation)
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
                "otel_trace_id": otel_trace, "otel_parent_id": otel_parent, "links": list(links),
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


def _flow_attributes(
    attributes: dict[str, Any] | None, inputs: list[int], input_types: tuple[str, ...], published: list[Any]
) -> dict[str, Any]:
    """A span's attributes with what it consumed and published, in the two shapes queries ask for
    (the blackboard design's "artifact transformations" reads both): flat keys like
    ``input.artifacts`` and ``output.type``, and the same nested (``$.input.artifacts[0].type``)."""
    flow = dict(attributes or {})
    if input_types:
        consumed = [{"id": id_text(i), "type": t} for i, t in zip(inputs, input_types, strict=False)]
        flow["input.artifacts"] = consumed
        flow["input"] = {"artifacts": consumed}
    if published:
        types = [artifact[1] for artifact in published]
        flow["output.type"] = types[0]
        flow["output.types"] = types
        flow["output"] = {"type": types[0], "types": types}
    return flow


# One encoder for every payload: json.dumps with options builds a new encoder on each call.
_encode_payload = json.JSONEncoder(ensure_ascii=False).encode


def _payload(payload: Any) -> str:
    # Encoded on its own so an oversized payload can be summarised; the batch JSON carries it as
    # a string that DuckDB parses back (CAST ... AS JSON).
    text = _encode_payload(payload)
    if len(text) > _MAX_PAYLOAD:
        return json.dumps({"_truncated": True, "bytes": len(text)})
    return text
