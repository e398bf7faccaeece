"""``flock trace export`` and ``flock trace metrics``: runs out of the store as JSON lines, OTLP/JSON
or Prometheus text."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flock_cli.tracing.otlp import links_of

if TYPE_CHECKING:
    from flock_cli.tracing.reader import RunRow, SpanRow, TraceReader

__all__ = ["export_lines", "otlp_resources", "run_metrics"]


def export_lines(reader: TraceReader, runs: list[RunRow], fmt: str) -> Iterator[str]:
    """``jsonl``: one record per line (run, span, artifact, event), each with a ``record`` key.
    ``otlp``: one OTLP/JSON ExportTraceServiceRequest holding every run (one resource each).
    ``recording``: one recorded model call per line, for ``flock run --replay-from``."""
    if fmt == "recording":
        yield from _recording_lines(reader, runs)
        return
    if fmt == "otlp":
        yield json.dumps({"resourceSpans": otlp_resources(reader, runs)}, default=str)
        return
    for run in runs:
        spans = reader.spans(run.run_id)
        events = reader.events(run.run_id)
        yield json.dumps({"record": "run", **run.to_json()}, default=str)
        for s in spans:
            yield json.dumps({"record": "span", "trace_id": run.run_id, **s.__dict__}, default=str)
        for a in reader.artifacts(run.run_id):
            yield json.dumps({"record": "artifact", **a.__dict__}, default=str)
        for e in events:
            yield json.dumps({"record": "event", "trace_id": run.run_id, **e.__dict__}, default=str)


def otlp_resources(
    reader: TraceReader, runs: list[RunRow], environ: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The OTLP/JSON ``resourceSpans`` of ``runs`` (one resource each), as the live exporter would
    have sent them: named by the GenAI conventions, in their workflows' traces, with the service
    name and resource attributes of the ``OTEL_*`` variables and the run's host and pid, and prompt
    and answer text only with the capture switch on."""
    from flock_cli.tracing.otlp import default_resource, encode, resource_from_env
    from flock_cli.tracing.semconv import capture_content, convert

    env = os.environ if environ is None else environ
    service, resource = resource_from_env(env, "flock")
    capture = capture_content(env)
    resources: list[dict[str, Any]] = []
    for run in runs:
        by_span: dict[str | None, list[Any]] = defaultdict(list)
        for e in reader.events(run.run_id):
            refs = {"flock.agent": e.agent, "flock.artifact_id": e.artifact_id}
            by_span[e.span_id].append((e.ts_ns, e.kind, {**e.attributes, **refs}))
        data = [
            convert(_span_data(run.run_id, s, by_span.get(s.span_id, [])), agent=s.agent, capture=capture)
            for s in reader.spans(run.run_id)
        ]
        process = {**default_resource(service), "host.name": run.host, "process.pid": run.pid}
        attributes = {
            **{k: v for k, v in process.items() if v is not None},
            "flock.run": run.name,
            **resource,
        }
        resources += encode(data, service, attributes)["resourceSpans"]
    return resources


def _span_data(trace_id: str, span: SpanRow, events: list[Any]) -> dict[str, Any]:
    attributes = dict(span.attributes)
    if span.agent:
        attributes["flock.agent"] = span.agent
    if span.inputs:
        attributes["flock.inputs"] = span.inputs
    if span.outputs:
        attributes["flock.outputs"] = span.outputs
    if span.otel_trace_id is not None:  # the workflow's trace, which the live exporter used too
        trace_id, parent_id = span.otel_trace_id, span.otel_parent_id
    else:
        parent_id = span.parent_id
    return {
        "trace_id": trace_id, "span_id": span.span_id, "parent_id": parent_id, "name": span.name,
        "kind": span.kind, "start_ns": span.start_ns, "end_ns": span.end_ns, "status": span.status,
        "message": span.message, "attributes": attributes, "events": events, "links": links_of(span.links),
    }  # fmt: skip


def run_metrics(reader: TraceReader, run: RunRow) -> str:
    """The run's metrics in the Prometheus text format (the families ``flock run --metrics-port``
    serves live; the gauges come from the run's latest status snapshot, of each process's run
    for a run several processes worked)."""
    from flock_cli.tracing.board_runs import agents_now
    from flock_cli.tracing.metrics import Family, Histogram, render

    ids = run.scope
    spans = reader.spans(ids)
    published = Counter(a.type for a in reader.artifacts(ids))
    runs: Counter[tuple[str, str]] = Counter()
    latency: dict[str, Histogram] = {}
    for s in spans:
        if s.name != "agent.run":
            continue
        agent = s.agent or "?"
        runs[agent, str(s.attributes.get("flock.outcome", s.status))] += 1
        latency.setdefault(agent, Histogram()).observe(s.duration_ms / 1000)
    events = Counter(e.kind for e in reader.events(ids) if e.kind != "engine.stream")
    agents = agents_now(reader, run)
    return render(
        [
            Family(
                "flock_artifacts_published_total",
                "counter",
                "Artifacts published, by type.",
                {(("type", t),): float(n) for t, n in sorted(published.items())},
            ),
            Family(
                "flock_agent_runs_total",
                "counter",
                "Agent runs (attempts) that ended, by agent and status.",
                {(("agent", a), ("status", s)): float(n) for (a, s), n in sorted(runs.items())},
            ),
            Family(
                "flock_agent_run_duration_seconds",
                "histogram",
                "Duration of agent runs (attempts), by agent.",
                {(("agent", a),): h for a, h in sorted(latency.items())},
            ),
            Family(
                "flock_agent_runs_in_progress",
                "gauge",
                "Agent runs in progress now (active agents), by agent.",
                {(("agent", a),): float(v.get("running", 0)) for a, v in sorted(agents.items())},
            ),
            Family(
                "flock_deliveries_pending",
                "gauge",
                "Deliveries waiting for a concurrency slot, by agent.",
                {(("agent", a),): float(v.get("queued", 0)) for a, v in sorted(agents.items())},
            ),
            Family(
                "flock_events_total",
                "counter",
                "Runtime events (retries, dead letters, breaker trips, denials...), by kind.",
                {(("kind", k),): float(n) for k, n in sorted(events.items())},
            ),
        ]
    )


def _recording_lines(reader: TraceReader, runs: list[RunRow]) -> Iterator[str]:
    """One line per recorded model call: a file ``flock run --replay-from`` reads."""
    from flock_cli.engines.recording import recorded_calls

    for run in runs:
        for call in recorded_calls(reader, run.run_id, f"run {run.run_id[:12]}"):
            yield json.dumps(call.to_json(), sort_keys=True)
