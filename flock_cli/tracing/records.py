"""The records a tracer hands to its writer: spans, artifacts, events, runs and status snapshots.

Spans follow the OpenTelemetry data model (128-bit trace ids, 64-bit span ids in hex, a kind, a
status, attributes and timed events), but they are plain slotted objects rather than SDK spans:
one OpenTelemetry SDK span costs about 65 µs on the benchmark machine, which alone would make a
no-LLM pipeline several times slower (bench/results/tracing.md). These cost about 2 µs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact

__all__ = [
    "Child",
    "EventRecord",
    "FlatSpan",
    "Record",
    "RunEnd",
    "RunStart",
    "Span",
    "SpanStatus",
    "StatusRecord",
    "id_text",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "traceparent",
]

SpanStatus = Literal["unset", "ok", "error"]

_random = random.Random()  # ids need uniqueness, not secrecy; OpenTelemetry's SDK does the same


def new_trace_id() -> str:
    """A random 128-bit trace id in lower-case hex (32 characters)."""
    return f"{_random.getrandbits(128):032x}"


def new_span_id() -> str:
    """A random 64-bit span id in lower-case hex (16 characters)."""
    return f"{_random.getrandbits(64):016x}"


def id_text(value: int) -> str:
    """The canonical text of an artifact id that a flat record carries as its 128-bit int:
    ``str(UUID(int=value))``, formatted directly (the UUID object cost about 6 µs an id, 0.7 s of
    ingest time per 10,000-seed run)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True, eq=False)
class Span:
    """One timed operation. ``end_ns`` is 0 while it runs.

    A top-level span (a publish, an agent run, a traced run) carries its children and the
    artifacts it published, so the hot path makes one object per run rather than one per step.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    kind: str = "internal"
    agent: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    end_ns: int = 0
    status: SpanStatus = "unset"
    message: str | None = None
    # Filled only when there is something to hold: a span lives as long as its run, and with
    # thousands of runs in flight every empty list would be one more object for the GC to walk.
    inputs: tuple[Any, ...] = ()  # artifact ids (UUIDs; strings once written)
    outputs: list[Any] | None = None
    children: list[Child] | None = None
    published: list[Artifact] | None = None
    # Where the span sits in OpenTelemetry's view, when that differs from the local one: the
    # workflow trace it belongs to (one per published input, carried by artifacts as a W3C
    # traceparent) and its parent there. The local ``trace_id`` stays the flock run's, which is
    # what ``flock trace`` calls a run.
    otel_trace_id: str | None = None
    otel_parent_id: str | None = None
    links: tuple[str, ...] = ()  # traceparents of the other inputs of a join or batch
    input_types: tuple[str, ...] = ()
    correlation: Any = None  # the workflow's correlation id (a UUID), when the span belongs to one


def traceparent(trace_id: str, span_id: str) -> str:
    """The W3C ``traceparent`` header value of a sampled span."""
    return f"00-{trace_id}-{span_id}-01"


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-.*)?", re.IGNORECASE)
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C ``traceparent``, or None when it is not one (all-zero ids
    are invalid there). Called once per agent run: a compiled pattern, about 0.5 µs."""
    found = _TRACEPARENT.fullmatch(value)
    if found is None:
        return None
    trace_id, span_id = found.group(1).lower(), found.group(2).lower()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


Child = tuple[str, str, int, int, str, "str | None", "dict[str, Any] | None"]
"""A finished child span kept inside its parent: (span id, name, start, end, status, message,
attributes). Stages, engine calls, store writes and schedule decisions are children of the run or
publish they belong to; the writer turns them into rows of their own, in SQL."""


@dataclass(slots=True, frozen=True)
class EventRecord:
    """Something that happened to an artifact or an agent: a denial, a retry, a dead letter..."""

    trace_id: str | None
    span_id: str | None
    ts_ns: int
    kind: str
    agent: str | None
    artifact_id: Any  # a UUID or its string, or None
    attributes: dict[str, Any]


@dataclass(slots=True, frozen=True)
class RunStart:
    """A traced run began (``Flock.traced_run`` or ``flock run``)."""

    trace_id: str
    span_id: str
    name: str
    started_ns: int
    pid: int
    host: str
    attributes: dict[str, Any]


@dataclass(slots=True, frozen=True)
class RunEnd:
    """A traced run ended."""

    trace_id: str
    ended_ns: int
    status: str


@dataclass(slots=True, frozen=True)
class StatusRecord:
    """What a flock was doing at one moment: running and queued runs, pending joins and batches."""

    trace_id: str | None
    ts_ns: int
    pid: int
    snapshot: dict[str, Any]


FlatSpan = tuple[Any, ...]
"""A finished span as the tagged tuple ``("S", trace_id, span_id, parent_id, name, kind, agent,
start_ns, end_ns, status, message, attributes, inputs, outputs, children, artifacts, otel)`` (see
``frames.flat_span``); ``otel`` is None or ``(otel_trace_id, otel_parent_id, links, input_types,
correlation)``."""

Record = Span | FlatSpan | EventRecord | RunStart | RunEnd | StatusRecord
