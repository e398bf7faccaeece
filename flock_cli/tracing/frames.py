"""What crosses from a flock to its trace ingest process: records flattened into plain tuples.

The flock's process does as little per record as it can (the GIL it shares with the event loop
is the scarce resource): a record becomes a tagged tuple of strings, ints and plain containers,
and a batch of them one ``marshal`` frame, CPython's fastest serialiser. Artifact ids travel as
128-bit ints; payloads as the JSON text they become in the store anyway. Everything else (rows,
JSON, DuckDB) happens in the ingest process (``ingest.py``) on the other core.
"""

from __future__ import annotations

import json
import marshal
import struct
from typing import Any, BinaryIO

from flock_cli.tracing.records import EventRecord, Record, RunEnd, RunStart, Span

__all__ = ["encode_frame", "flatten", "read_frame"]
_HEADER = struct.Struct(">I")


def flatten(records: list[Record]) -> list[tuple[Any, ...]]:
    """Records as tagged tuples: S(pan), E(vent), R(un start), X (run end), T (status)."""
    items: list[tuple[Any, ...]] = []
    described: dict[int, str] = {}  # visibility objects are shared: describe each once
    for record in records:
        if isinstance(record, Span):
            artifacts = []
            for a in record.published:
                visibility = described.get(id(a.visibility))
                if visibility is None:
                    visibility = described[id(a.visibility)] = a.visibility.describe()
                correlation = a.correlation_id
                artifacts.append(
                    (a.id.int, a.type, a.produced_by, None if correlation is None else correlation.int,
                     a.created_at.timestamp(), visibility, sorted(a.tags), _thaw(a.payload))
                )  # fmt: skip
            items.append(
                ("S", record.trace_id, record.span_id, record.parent_id, record.name, record.kind,
                 record.agent, record.start_ns, record.end_ns, record.status, record.message,
                 record.attributes, [i.int for i in record.inputs], [o.int for o in record.outputs],
                 record.children, artifacts)
            )  # fmt: skip
        elif isinstance(record, EventRecord):
            artifact_id = None if record.artifact_id is None else str(record.artifact_id)
            items.append(
                ("E", record.trace_id, record.span_id, record.ts_ns, record.kind, record.agent, artifact_id,
                 _plain(record.attributes))
            )  # fmt: skip
        elif isinstance(record, RunStart):
            items.append(
                ("R", record.trace_id, record.span_id, record.name, record.started_ns, record.pid,
                 record.host, _plain(record.attributes))
            )  # fmt: skip
        elif isinstance(record, RunEnd):
            items.append(("X", record.trace_id, record.ended_ns, record.status))
        else:
            items.append(("T", record.trace_id, record.ts_ns, record.pid, _plain(record.snapshot)))
    return items


def encode_frame(seq: int, items: list[tuple[Any, ...]]) -> bytes:
    """One length-prefixed frame. Anything marshal refuses (a value a component put in an
    attribute, say) is turned into plain JSON data first."""
    try:
        body = marshal.dumps((seq, items))
    except ValueError:
        body = marshal.dumps((seq, [_plain(item) for item in items]))
    return _HEADER.pack(len(body)) + body


def read_frame(stream: BinaryIO) -> tuple[int, list[tuple[Any, ...]]] | None:
    """The next frame from ``stream``, or None at its end."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    seq, items = marshal.loads(body)
    return seq, items


def _plain(value: Any) -> Any:
    """JSON-ready data made of plain containers (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


_PLAIN = (str, int, float, bool, type(None))


def _thaw(value: Any) -> Any:
    """A payload as plain dicts and lists, which marshal takes (frozen ones it refuses). Cheaper
    than encoding it here: the ingest process does the JSON."""
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else _thaw(v) for v in value]
    return value if type(value) in _PLAIN else str(value)
