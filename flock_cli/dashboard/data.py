"""What ``flock top`` shows, read from the trace store in one pass per refresh.

Everything comes from the DuckDB trace store, which the flock's ingest process updates every half
second: spans and events for what happened, the latest status snapshot for what is running,
queued and gathering right now. Reading it takes a few short read-only queries, so the dashboard
works from another process (and over SSH) while the run writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flock_cli.tracing.reader import ArtifactRow, EventRow, RunRow, TraceReader

__all__ = ["WAITING", "AgentLine", "Snapshot", "load_snapshot"]

_EVENT_KINDS = (
    "breaker.trip",
    "run.retry",
    "dead_letter",
    "join.expired",
    "visibility.denied",
    "predicate.error",
    "model.rate_limit_wait",
)
WAITING = "waiting: rate limit"
"""The state of an agent whose running call waits for its model's rate limit (or a 429)."""
_AGENT_STATS = """
SELECT agent,
       count(*) FILTER (WHERE attributes->>'$."flock.outcome"' = 'ok' OR status = 'ok') AS ok,
       count(*) FILTER (WHERE attributes->>'$."flock.outcome"' = 'failed') AS failed,
       count(*) FILTER (WHERE attributes->>'$."flock.outcome"' = 'retry') AS retried,
       coalesce(sum(CAST(attributes->>'$."llm.input_tokens"' AS BIGINT)), 0)
         + coalesce(sum(CAST(attributes->>'$."llm.output_tokens"' AS BIGINT)), 0) AS tokens,
       sum(CAST(attributes->>'$."llm.cost"' AS DOUBLE)) AS cost,
       avg(end_ns - start_ns) AS mean_ns, max(end_ns) AS last_end
FROM spans WHERE trace_id = ? AND name = 'agent.run' GROUP BY agent
"""


@dataclass
class AgentLine:
    """One agent's row in the agents panel."""

    name: str
    state: str  # running | waiting: rate limit | queued | idle | tripped
    running: int = 0
    queued: int = 0
    limit: int | None = None
    ok: int = 0
    failed: int = 0
    retried: int = 0
    tokens: int = 0
    cost: float | None = None
    mean_ms: float | None = None


@dataclass
class Snapshot:
    """One refresh worth of data."""

    run: RunRow | None
    agents: list[AgentLine] = field(default_factory=list)
    artifacts: list[ArtifactRow] = field(default_factory=list)
    gathering: list[dict[str, Any]] = field(default_factory=list)
    stream: list[EventRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    status_age_s: float | None = None
    running_total: int = 0
    max_concurrency: int | None = None
    error: str | None = None


def load_snapshot(
    reader: TraceReader, run_ref: str | None, now_ns: Callable[[], int], *, artifacts: int = 500
) -> Snapshot:
    """Read the run ``run_ref`` (the newest when None) for one refresh, on one connection."""
    with reader.session():
        return _load(reader, run_ref, now_ns, artifacts)


def _waits(reader: TraceReader, run_id: str) -> dict[str, int]:
    """When each agent's latest rate-limit wait ends (ns), from its ``model.rate_limit_wait`` events."""
    until: dict[str, int] = {}
    for event in reader.events(run_id, ("model.rate_limit_wait",)):
        seconds = event.attributes.get("seconds")
        if event.agent and isinstance(seconds, int | float):
            until[event.agent] = max(until.get(event.agent, 0), event.ts_ns + int(seconds * 1e9))
    return until


def _load(reader: TraceReader, run_ref: str | None, now_ns: Callable[[], int], artifacts: int) -> Snapshot:
    if run_ref is None:
        followed = reader.followed()
        if followed is None:
            return Snapshot(run=None)
        run = followed
    else:
        run = reader.run(run_ref)
    status = reader.status(run.run_id) if run.status == "running" else None
    stats = {row[0]: row for row in reader.sql_rows(_AGENT_STATS, [run.run_id])}
    live = (status or {}).get("agents", {})
    breaker = (status or {}).get("max_agent_iterations")
    names = sorted({*stats, *live} - {None})
    waiting_until = _waits(reader, run.run_id) if status is not None else {}
    agents = []
    for name in names:
        row = stats.get(name)
        now = live.get(name, {})
        running, queued = int(now.get("running", 0)), int(now.get("queued", 0))
        tripped = breaker is not None and int(now.get("iterations", 0)) > int(breaker)
        state = "tripped" if tripped else "running" if running else "queued" if queued else "idle"
        if state == "running" and waiting_until.get(name, 0) > now_ns():
            state = WAITING
        agents.append(
            AgentLine(
                name, state, running, queued, now.get("limit"),
                ok=int(row[1]) if row else 0, failed=int(row[2]) if row else 0,
                retried=int(row[3]) if row else 0, tokens=int(row[4]) if row else 0,
                cost=row[5] if row else None, mean_ms=(row[6] / 1e6) if row and row[6] is not None else None,
            )
        )  # fmt: skip
    gathering = [{"kind": "join", **g} for g in (status or {}).get("pending_groups", [])] + [
        {"kind": "batch", **b} for b in (status or {}).get("batches", [])
    ]
    events = reader.events(run.run_id, _EVENT_KINDS)
    return Snapshot(
        run=run,
        agents=agents,
        artifacts=reader.artifacts(run.run_id, limit=artifacts),
        gathering=gathering,
        stream=reader.events(run.run_id, ("engine.stream",))[-200:],
        events=events[-500:],
        status_age_s=None if status is None else (now_ns() - int(status["taken_ns"])) / 1e9,
        running_total=int((status or {}).get("running", 0)),
        max_concurrency=(status or {}).get("max_concurrency"),
    )
