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

from flock_cli.tracing.records import EventRecord, FlatSpan, Record, RunEnd, RunStart, Span

__all__ = ["FlatSpan", "Item", "encode_frame", "flat_span", "flatten", "read_frame"]
_HEADER = struct.Struct(">I")


_described: dict[int, tuple[Any, str]] = {}  # id(visibility) -> (visibility, its description)


def flat_span(span: Span) -> FlatSpan:
    """A finished span as a tuple of plain values, made when it ends.

    Plain tuples and dicts of strings and numbers are untracked by CPython's garbage collector, so
    spans waiting for the writer do not pile up in the old generation and make every full
    collection longer (with Span objects waiting instead, the pipeline spent about twice as long
    in full collections).
    """
    artifacts = []
    for a in span.published or ():
        visibility = a.visibility
        known = _described.get(id(visibility))
        if known is None or known[0] is not visibility:  # ids are reused once an object is gone
            if len(_described) > 1024:
                _described.clear()
            known = _described[id(visibility)] = (visibility, visibility.describe())
        correlation = a.correlation_id
        artifacts.append(
            (a.id.int, a.type, a.produced_by, None if correlation is None else correlation.int,
             a.created_at.timestamp(), known[1], sorted(a.tags) if a.tags else (), _thaw(a.payload))
        )  # fmt: skip
    otel = None
    if span.otel_trace_id is not None or span.input_types or span.correlation is not None:
        correlation = span.correlation
        otel = (span.otel_trace_id, span.otel_parent_id, span.links, span.input_types,
                None if correlation is None else correlation.int)  # fmt: skip
    return (
        "S", span.trace_id, span.span_id, span.parent_id, span.name, span.kind, span.agent, span.start_ns,
        span.end_ns, span.status, span.message, span.attributes, [i.int for i in span.inputs],
        [o.int for o in span.outputs or ()], span.children or (), artifacts, otel,
    )  # fmt: skip


Item = tuple[Any, ...] | bytes
"""A record in a frame: a tagged tuple, or a finished span already marshalled (``TraceWriter.put``)."""


def flatten(records: list[Record | bytes]) -> list[Item]:
    """Records as tagged tuples: S(pan, already flat), E(vent), R(un start), X (run end), T (status);
    marshalled spans are kept as they are (``read_frame`` unmarshals them)."""
    items: list[Item] = []
    for record in records:
        if isinstance(record, tuple | bytes):  # flat, or flat and marshalled
            items.append(record)
        elif isinstance(record, Span):
            items.append(flat_span(record))
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


def encode_frame(seq: int, items: list[Item], *, urgent: bool = False) -> bytes:
    """One length-prefixed frame; ``urgent`` asks the ingest process to write at once (a flush).
    Anything marshal refuses (a value a component put in an attribute, say) is turned into plain
    JSON data first; records already marshalled (``bytes``) travel as they are."""
    try:
        body = marshal.dumps((seq, urgent, items))
    except ValueError:
        plain = [item if type(item) is bytes else _plain(item) for item in items]
        body = marshal.dumps((seq, urgent, plain))
    return _HEADER.pack(len(body)) + body


def read_frame(stream: BinaryIO) -> tuple[int, bool, list[tuple[Any, ...]]] | None:
    """The next frame from ``stream`` (sequence number, urgent, records), or None at its end."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    seq, urgent, items = marshal.loads(body)
    return seq, urgent, [marshal.loads(item) if type(item) is bytes else item for item in items]


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-ready data made of plain containers (tuples become lists). What JSON cannot hold
    (keys that are tuples, a container holding itself) is made to fit rather than refused: a
    dict's keys become strings, anything else its ``repr``."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError):
        if isinstance(value, dict) and depth < 8:
            return {str(k): _plain(v, depth + 1) for k, v in value.items()}
        return repr(value)


_PLAIN = (str, int, float, bool, type(None))


def _thaw(value: Any) -> Any:
    """A payload as plain dicts and lists, which marshal takes (frozen ones it refuses). Cheaper
    than encoding it here: the ingest process does the JSON."""
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else _thaw(v) for v in value]
    return value if type(value) in _PLAIN else str(value)
