"""What a run's traces mean: the causal tree (artifact -> agent run -> artifacts), the critical
path, concurrency, and who saw or was denied each artifact. Pure functions over reader rows.

The rows may come from several processes' traces (a board run, ``board_runs.py``): artifact ids
link an agent run on one process to the run on another that published its input, so the tree is
one tree. ``processes`` (trace id -> ``host:pid``) then marks where each run and artifact was made.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flock_cli.tracing.reader import ArtifactRow, EventRow, SpanRow
from flock_cli.tracing.run_metrics import metrics_of

__all__ = [
    "ArtifactNode",
    "AuditEntry",
    "RunNode",
    "audit",
    "build_tree",
    "concurrency",
    "critical_path",
    "peak_concurrency",
    "runs_of",
]


@dataclass
class RunNode:
    """One delivery to an agent: its attempts (retries) and what the last one published (its
    metrics are the last attempt's)."""

    attempts: list[SpanRow]
    outputs: list[ArtifactNode] = field(default_factory=list)
    also_consumed: list[str] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    process: str | None = None
    """``host:pid`` of the process it ran on, in a run of several processes."""

    @property
    def final(self) -> SpanRow:
        """The last attempt."""
        return self.attempts[-1]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready nested data."""
        final = self.final
        process = {"process": self.process} if self.process else {}
        return {
            **process,
            "agent": final.agent,
            "span_id": final.span_id,
            "status": final.status,
            "outcome": final.attributes.get("flock.outcome", final.status),
            "attempts": len(self.attempts),
            "duration_ms": round(final.duration_ms, 3),
            "error": final.message,
            "metrics": metrics_of(final.attributes),
            "also_consumed": self.also_consumed,
            "events": [{"kind": e.kind, **e.attributes} for e in self.events],
            "outputs": [node.to_json() for node in self.outputs],
        }


@dataclass
class ArtifactNode:
    """An artifact and the runs it woke (runs with several inputs hang under their first)."""

    artifact: ArtifactRow
    runs: list[RunNode] = field(default_factory=list)
    notes: list[EventRow] = field(default_factory=list)
    process: str | None = None
    """``host:pid`` of the process that published it, in a run of several processes."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready nested data."""
        a = self.artifact
        process = {"process": self.process} if self.process else {}
        return {
            **process,
            "artifact_id": a.artifact_id,
            "type": a.type,
            "produced_by": a.produced_by,
            "visibility": a.visibility,
            "notes": [{"kind": e.kind, "agent": e.agent, **e.attributes} for e in self.notes],
            "runs": [run.to_json() for run in self.runs],
        }


def runs_of(spans: list[SpanRow]) -> list[RunNode]:
    """Agent runs grouped by delivery (retries are attempts of one run), in start order."""
    groups: dict[str, list[SpanRow]] = defaultdict(list)
    for span in spans:
        if span.name == "agent.run":
            groups[str(span.attributes.get("flock.delivery", span.span_id))].append(span)
    runs = [RunNode(sorted(attempts, key=lambda s: s.start_ns)) for attempts in groups.values()]
    return sorted(runs, key=lambda r: r.attempts[0].start_ns)


def build_tree(
    artifacts: list[ArtifactRow],
    spans: list[SpanRow],
    events: list[EventRow],
    processes: dict[str, str] | None = None,
) -> tuple[list[ArtifactNode], list[RunNode]]:
    """The causal tree of a run: roots are artifacts nothing in the run produced. Also returns
    runs whose inputs came from outside the run (resumed work, another process's publish).
    ``processes`` (trace id -> ``host:pid``) marks each run and artifact with its process."""
    where = processes or {}
    nodes = {a.artifact_id: ArtifactNode(a, process=where.get(a.trace_id)) for a in artifacts}
    runs = runs_of(spans)
    for node in runs:
        node.process = where.get(node.final.trace_id)
    by_span = {attempt.span_id: run for run in runs for attempt in run.attempts}
    for event in events:
        if event.kind == "engine.stream":
            continue
        run = by_span.get(event.span_id or "")
        if run is not None and event.agent == run.final.agent:
            run.events.append(event)  # the run's own retry or dead letter
        elif event.artifact_id in nodes:
            nodes[event.artifact_id].notes.append(event)  # a denial, filter or hold of another agent
    produced: set[str] = set()
    orphans: list[RunNode] = []
    for run in runs:
        final = run.final
        run.outputs = [nodes[o] for o in final.outputs if o in nodes]
        produced.update(final.outputs)
        anchor = next((i for i in final.inputs if i in nodes), None)
        if anchor is None:
            orphans.append(run)
            continue
        nodes[anchor].runs.append(run)
        run.also_consumed = [i for i in final.inputs if i != anchor]
    roots = [node for node in nodes.values() if node.artifact.artifact_id not in produced]
    return roots, orphans


def critical_path(runs: list[RunNode]) -> list[RunNode]:
    """The chain of runs that decided the run's length: from the run that ended last, back
    through the input that arrived last, to a run woken from outside."""
    if not runs:
        return []
    producer = {o: run for run in runs for o in run.final.outputs}
    path = [max(runs, key=lambda r: r.final.end_ns)]
    seen = {id(path[0])}
    while True:
        preds = [producer[i] for i in path[-1].final.inputs if i in producer and id(producer[i]) not in seen]
        if not preds:
            break
        latest = max(preds, key=lambda r: r.final.end_ns)
        seen.add(id(latest))
        path.append(latest)
    path.reverse()
    return path


def concurrency(spans: list[SpanRow], start_ns: int, end_ns: int, columns: int) -> list[int]:
    """Agent runs in progress at the middle of each of ``columns`` equal slices of [start_ns, end_ns]."""
    width = max(1, end_ns - start_ns)
    runs = [(s.start_ns, s.end_ns) for s in spans if s.name == "agent.run"]
    moments = [start_ns + (column + 0.5) * width / columns for column in range(columns)]
    return [sum(1 for begin, end in runs if begin <= t < end) for t in moments]


def peak_concurrency(spans: list[SpanRow]) -> int:
    """The most agent runs in progress at any one moment."""
    edges = sorted(
        edge for s in spans if s.name == "agent.run" for edge in ((s.start_ns, 1), (s.end_ns, -1))
    )  # at equal times, an end (-1) sorts before a start: touching runs do not overlap
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


@dataclass
class AuditEntry:
    """Who received, was denied or was filtered from an artifact."""

    artifact_id: str
    type: str
    agent: str
    outcome: str  # consumed | denied | filtered | embargoed
    detail: str
    process: str | None = None  # host:pid of the agent's process, in a run of several processes

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (``process`` only when known)."""
        data = dict(self.__dict__)
        if self.process is None:
            del data["process"]
        return data


def audit(
    artifacts: list[ArtifactRow],
    spans: list[SpanRow],
    events: list[EventRow],
    processes: dict[str, str] | None = None,
) -> list[AuditEntry]:
    """For each artifact of the run: the agents that consumed it and those it was kept from
    (with the process each agent ran on, from ``processes``: trace id -> ``host:pid``)."""
    where = processes or {}
    types = {a.artifact_id: a.type for a in artifacts}
    entries: list[AuditEntry] = []
    for run in runs_of(spans):
        final = run.final
        for artifact_id in final.inputs:
            attempts = len(run.attempts)
            detail = f"run {final.span_id[:8]}, {final.attributes.get('flock.outcome', final.status)}"
            if attempts > 1:
                detail += f" after {attempts} attempts"
            agent, process = final.agent or "?", where.get(final.trace_id)
            entries.append(
                AuditEntry(artifact_id, types.get(artifact_id, "?"), agent, "consumed", detail, process)
            )
    for event in events:
        if event.artifact_id is None:
            continue
        if event.kind == "visibility.denied":
            until = event.attributes.get("embargoed_until")
            outcome = "embargoed" if until else "denied"
            detail = f"visibility {event.attributes.get('visibility', '?')}" + (
                f", until {until}" if until else ""
            )
        elif event.kind == "subscription.filtered":
            outcome, detail = "filtered", str(event.attributes.get("reason", ""))
        else:
            continue
        entries.append(
            AuditEntry(
                event.artifact_id,
                types.get(event.artifact_id, "?"),
                event.agent or "?",
                outcome,
                detail,
                where.get(event.trace_id or ""),
            )
        )
    order = {a.artifact_id: i for i, a in enumerate(artifacts)}
    entries.sort(key=lambda e: (order.get(e.artifact_id, len(order)), e.agent, e.outcome))
    return entries
