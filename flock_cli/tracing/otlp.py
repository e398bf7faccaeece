"""OTLP: the OpenTelemetry wire format, as JSON (``http/json``), for export files and collectors.

``encode`` turns spans into an OTLP ``ExportTraceServiceRequest`` document; ``flock trace export
--format otlp`` writes it and :class:`OtlpExporter` posts it to a collector while a flock runs,
configured by the standard environment variables:

* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the
  base URL; ``/v1/traces`` is appended). Without either, nothing is exported.
* ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`` (``key=value,...``), ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``
  (milliseconds), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``: ``http/protobuf`` (OpenTelemetry's
  default, and ours when the ``[otlp]`` extra is installed, see ``otlp_protobuf.py``) or
  ``http/json`` (the default without it). Another protocol (``grpc``), ``http/protobuf`` without
  the extra, or an ``OTEL_TRACES_EXPORTER`` other than ``otlp``/``none`` is a warning: nothing is
  exported and the local traces carry on.
* ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``,
  ``OTEL_TRACES_EXPORTER=none``, ``OTEL_BSP_SCHEDULE_DELAY`` (milliseconds between posts).

``http/json`` needs no OpenTelemetry package: the JSON encoding is part of the OTLP specification.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from flock_cli.errors import UsageError
from flock_cli.tracing.records import EventRecord, FlatSpan, Record, id_text, parse_traceparent
from flock_cli.tracing.semconv import capture_content, convert

__all__ = [
    "PROTOCOLS",
    "OtlpExporter",
    "SpanData",
    "default_resource",
    "encode",
    "links_of",
    "otlp_exporter_from_env",
    "resource_from_env",
    "setting",
    "span_data",
]

log = logging.getLogger("flock_cli.tracing")

PROTOCOLS = ("http/json", "http/protobuf")
"""The OTLP protocols the exporter speaks."""

_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"unset": 0, "ok": 1, "error": 2}

SpanData = dict[str, Any]
"""A span as plain data: trace_id, span_id, parent_id, name, kind, start_ns, end_ns, status,
message, attributes (dict), events (list of (ts_ns, name, attributes)) and, optionally, links
(list of (trace_id, span_id))."""


def span_data(span: FlatSpan, events: Iterable[EventRecord] = (), *, capture: bool = False) -> list[SpanData]:
    """A finished span (``frames.flat_span``), and its children, as :data:`SpanData` named by the
    GenAI conventions (``semconv.py``), in its workflow's trace (the trace context its inputs
    carried) with links to the other inputs' spans. ``capture``: keep prompt and answer text."""
    (_, trace_id, span_id, parent_id, name, kind, agent, start_ns, end_ns, status, message, attrs,
     inputs, outputs, children, _artifacts) = span[:16]  # fmt: skip
    otel = span[16] if len(span) > 16 else None
    links: tuple[str, ...] = ()
    correlation = None
    if otel is not None:
        otel_trace, otel_parent, links = otel[0], otel[1], otel[2]
        correlation = otel[4] if len(otel) > 4 else None
        if otel_trace is not None:
            trace_id, parent_id = otel_trace, otel_parent
    attributes = dict(attrs)
    common: dict[str, Any] = {}
    if agent is not None:
        common["flock.agent"] = agent
    if correlation is not None:
        common["flock.correlation_id"] = id_text(correlation)
    attributes.update(common)
    if inputs:
        attributes["flock.inputs"] = [id_text(i) for i in inputs]
    if outputs:
        attributes["flock.outputs"] = [id_text(o) for o in outputs]
    own: SpanData = {
        "trace_id": trace_id, "span_id": span_id, "parent_id": parent_id, "name": name, "kind": kind,
        "start_ns": start_ns, "end_ns": end_ns, "status": status, "message": message,
        "attributes": attributes, "links": links_of(links),
        "events": [(e.ts_ns, e.kind, {**e.attributes, **_event_refs(e)}) for e in events],
    }  # fmt: skip
    kids: list[SpanData] = [
        {
            "trace_id": trace_id,
            "span_id": child_id,
            "parent_id": span_id,
            "name": child_name,
            "kind": "internal",
            "start_ns": start,
            "end_ns": end,
            "status": child_status,
            "message": child_message,
            "attributes": {**(child_attrs or {}), **common},
            "events": [],
        }
        for child_id, child_name, start, end, child_status, child_message, child_attrs in children
    ]
    return [convert(s, agent=agent, capture=capture) for s in (own, *kids)]


def links_of(contexts: Iterable[str]) -> list[tuple[str, str]]:
    """The (trace id, span id) of each W3C traceparent in ``contexts``, those that are not skipped."""
    found = []
    for context in contexts:
        parsed = parse_traceparent(context)
        if parsed is not None:
            found.append(parsed)
    return found


def _event_refs(event: EventRecord) -> dict[str, Any]:
    refs: dict[str, Any] = {}
    if event.agent is not None:
        refs["flock.agent"] = event.agent
    if event.artifact_id is not None:
        refs["flock.artifact_id"] = event.artifact_id
    return refs


def encode(
    spans: Iterable[SpanData], service: str, resource: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` holding ``spans``."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes({**default_resource(service), **(resource or {})})},
                "scopeSpans": [
                    {
                        "scope": {"name": "flock-flow"},
                        "spans": [_span(s) for s in spans],
                    }
                ],
            }
        ]
    }


def _span(s: SpanData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": s["trace_id"],
        "spanId": s["span_id"],
        "name": s["name"],
        "kind": _KINDS.get(s["kind"], 1),
        "startTimeUnixNano": str(s["start_ns"]),
        "endTimeUnixNano": str(s["end_ns"]),
        "attributes": _attributes(s["attributes"]),
        "status": {"code": _STATUS.get(s["status"], 0)},
    }
    if s.get("parent_id"):
        out["parentSpanId"] = s["parent_id"]
    if s.get("message") and s["status"] == "error":  # OTLP: a status message only with an error
        out["status"]["message"] = s["message"]
    if s.get("links"):
        out["links"] = [{"traceId": t, "spanId": sp} for t, sp in s["links"]]
    if s.get("events"):
        out["events"] = [
            {"timeUnixNano": str(ts), "name": name, "attributes": _attributes(attrs)}
            for ts, name, attrs in s["events"]
        ]
    return out


def default_resource(service: str) -> dict[str, Any]:
    """The resource attributes of this process: ``service.name``, ``service.version`` (the
    installed Flock-Flow's), ``host.name`` and ``process.pid``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("flock-flow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown"
    return {
        "service.name": service,
        "service.version": installed,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.sdk.name": "flock-flow",
        "telemetry.sdk.language": "python",
    }


def _attributes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in values.items() if value is not None]


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        # JSON has no NaN or infinity: OTLP/JSON writes them as strings, which protobuf's
        # mapping reads back as the float.
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"stringValue": json.dumps(value, default=str)}


# -- the exporter ----------------------------------------------------------------------------------


def otlp_exporter_from_env(service: str, environ: Mapping[str, str] | None = None) -> OtlpExporter | None:
    """An exporter configured by the ``OTEL_*`` variables, or None when they ask for none."""
    env = os.environ if environ is None else environ

    def variable(name: str) -> str:
        return setting(env, name)[0]

    def get(name: str) -> str | None:
        return setting(env, name)[1]

    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")} - {""}
    if not exporters or exporters == {"none"}:
        return None
    if "otlp" not in exporters:
        log.warning(
            "OTEL_TRACES_EXPORTER=%s is not spoken here (only otlp and none): no export (local traces"
            " carry on)",
            env.get("OTEL_TRACES_EXPORTER"),
        )
        return None
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        url = base.rstrip("/") + "/v1/traces"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"OTLP endpoint {url!r} is not an http:// or https:// URL")
    protocol = get("PROTOCOL") or _default_protocol()
    if protocol not in PROTOCOLS:
        log.warning(
            "%s=%s is not spoken here: no OTLP export (local traces carry on); use http/protobuf or"
            " http/json (a collector's HTTP port, usually 4318, takes both)",
            variable("PROTOCOL"),
            protocol,
        )
        return None
    if protocol == "http/protobuf":
        from flock_cli.tracing.otlp_protobuf import require

        try:
            require()
        except UsageError as exc:
            log.warning("%s: no OTLP export (local traces carry on)", exc)
            return None
    headers = _pairs(get("HEADERS") or "", variable("HEADERS"))
    timeout = _millis(get("TIMEOUT"), variable("TIMEOUT"), 10_000)
    delay = _millis(env.get("OTEL_BSP_SCHEDULE_DELAY"), "OTEL_BSP_SCHEDULE_DELAY", 5_000)
    name, resource = resource_from_env(env, service)
    return OtlpExporter(
        url,
        service=name,
        headers=headers,
        timeout=timeout,
        interval=delay,
        resource=resource,
        protocol=protocol,
        capture=capture_content(env),
    )


def setting(env: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """The variable that sets the exporter's ``name`` (``PROTOCOL``, ``HEADERS``...), the
    traces-specific one winning, and its value (None when unset or blank)."""
    specific = f"OTEL_EXPORTER_OTLP_TRACES_{name}"
    variable = specific if env.get(specific, "").strip() else f"OTEL_EXPORTER_OTLP_{name}"
    return variable, env.get(variable, "").strip() or None


def _default_protocol() -> str:
    """OpenTelemetry's default, ``http/protobuf``, when the protocol definitions are installed
    (the ``[otlp]`` extra); else ``http/json``, which needs nothing (and every collector's HTTP
    port takes)."""
    from flock_cli.tracing.otlp_protobuf import require

    try:
        require()
    except UsageError:
        return "http/json"
    return "http/protobuf"


def resource_from_env(env: Mapping[str, str], service: str) -> tuple[str, dict[str, str]]:
    """The service name (``OTEL_SERVICE_NAME``, else ``service.name`` of
    ``OTEL_RESOURCE_ATTRIBUTES``, else ``service``) and the other resource attributes the
    ``OTEL_RESOURCE_ATTRIBUTES`` variable sets."""
    resource = _pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES")
    name = env.get("OTEL_SERVICE_NAME", "").strip() or resource.pop("service.name", "") or service
    return name, resource


def _pairs(text: str, variable: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{variable}: {item!r} is not key=value")
        pairs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return pairs


def _millis(text: str | None, variable: str, default: int) -> float:
    if text is None or not text.strip():
        return default / 1000
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{variable}={text!r} is not a number of milliseconds") from None
    if not value > 0:
        raise UsageError(f"{variable} must be a positive number of milliseconds")
    return value / 1000


class OtlpExporter:
    """Posts finished spans (with their events) to an OTLP/HTTP collector from a thread."""

    def __init__(
        self,
        url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        interval: float = 5.0,
        resource: Mapping[str, Any] | None = None,
        max_pending: int = 200_000,
        protocol: str = "http/json",
        capture: bool = False,
    ) -> None:
        self.capture = capture
        """Whether prompt and answer text are exported (``semconv.CAPTURE_CONTENT_ENV``)."""
        self.url, self.service, self.timeout, self.interval = url, service, timeout, interval
        self.max_pending = max_pending
        self.dropped = 0
        if protocol not in PROTOCOLS:
            raise UsageError(f"OTLP protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        kind = "application/json" if protocol == "http/json" else "application/x-protobuf"
        self.headers = {"Content-Type": kind, **(headers or {})}
        self.resource = dict(resource or {})
        self.exported = 0
        self._queue: deque[Record | threading.Event] = deque()
        self._events: dict[str, list[EventRecord]] = {}
        self._problems: list[str] = []
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="flock-otlp-exporter", daemon=True)
        self._thread.start()

    @property
    def problems(self) -> list[str]:
        """Export failures, one line each."""
        problems = list(self._problems)
        if self.dropped:
            problems.append(f"{self.dropped} spans were not exported: the OTLP collector did not keep up")
        return problems

    def put(self, record: Record) -> None:
        """Queue a record; spans and their events are exported, the rest is ignored."""
        if isinstance(record, EventRecord) or (isinstance(record, tuple) and record[0] == "S"):
            if len(self._queue) < self.max_pending:  # a slow or absent collector must not cost memory
                self._queue.append(record)
            else:
                self.dropped += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Post everything queued so far."""
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Post what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            spans: list[SpanData] = []
            markers: list[threading.Event] = []
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, threading.Event):
                    markers.append(item)
                elif isinstance(item, EventRecord):
                    if item.span_id is not None:
                        self._events.setdefault(item.span_id, []).append(item)
                elif isinstance(item, tuple):
                    spans.extend(span_data(item, self._events.pop(item[2], ()), capture=self.capture))
            if len(self._events) > 10_000:  # events of spans that never ended (a crashed run)
                self._events.clear()
            if spans:
                self._post(spans)
            for marker in markers:
                marker.set()
            if stopping:
                return

    def send(self, document: dict[str, Any]) -> None:
        """Post one OTLP/JSON ``ExportTraceServiceRequest`` document now, in this exporter's
        protocol (``flock trace export --send``). Raises OSError (``urllib.error.URLError``)
        or ValueError when the collector cannot be reached or refuses it."""
        if self.protocol == "http/protobuf":
            from flock_cli.tracing.otlp_protobuf import to_protobuf

            body = to_protobuf(document)
        else:
            body = json.dumps(document, default=str).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    def _post(self, spans: list[SpanData]) -> None:
        try:
            self.send(encode(spans, self.service, self.resource))
            self.exported += len(spans)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            message = f"OTLP export to {self.url} failed: {exc}"
            if message not in self._problems:
                self._problems.append(message)
