"""What ``flock trace list`` shows of a run: :class:`RunRow`, and the query that summarises runs."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RUN_SUMMARY", "RunRow", "Workflow", "alive", "run_row"]

RUN_SUMMARY = """
WITH picked AS (  -- the runs asked for, found without reading their spans' attributes
    SELECT trace_id, min(started) AS started_ns FROM (
        SELECT trace_id, started_ns AS started FROM runs
        UNION ALL
        SELECT trace_id, start_ns FROM spans WHERE parent_id IS NULL OR name = 'agent.run'
    ) WHERE {where} GROUP BY trace_id ORDER BY started_ns DESC {limit}
),
s AS (
    SELECT trace_id, min(start_ns) AS first_ns, max(end_ns) AS last_ns,
           arg_min(name, start_ns) AS first_name,
           count(*) FILTER (WHERE name = 'agent.run') AS agent_runs,
           count(*) FILTER (WHERE name = 'agent.run' AND status = 'error') AS failed_attempts,
           coalesce(sum(CAST(attributes->>'$."llm.input_tokens"' AS BIGINT))
               + sum(CAST(attributes->>'$."llm.output_tokens"' AS BIGINT)), 0) AS tokens,
           sum(CAST(attributes->>'$."llm.cost"' AS DOUBLE)) AS cost
    FROM spans WHERE trace_id IN (SELECT trace_id FROM picked) AND (parent_id IS NULL OR name = 'agent.run')
    GROUP BY trace_id
),
a AS (SELECT trace_id, count(DISTINCT artifact_id) AS artifacts, arg_min(type, created_ns) AS first_type
      FROM artifacts WHERE trace_id IN (SELECT trace_id FROM picked) GROUP BY trace_id),
d AS (SELECT trace_id, count(*) AS dead FROM events
      WHERE kind = 'dead_letter' AND trace_id IN (SELECT trace_id FROM picked) GROUP BY trace_id)
SELECT p.trace_id, r.name, s.first_name, a.first_type,
       coalesce(r.started_ns, s.first_ns) AS started_ns, coalesce(r.ended_ns, CASE WHEN r.trace_id IS NULL
       THEN s.last_ns END) AS ended_ns, r.status, r.pid, r.host, r.attributes,
       coalesce(a.artifacts, 0), coalesce(s.agent_runs, 0), coalesce(s.failed_attempts, 0),
       coalesce(d.dead, 0), coalesce(s.tokens, 0), s.cost
FROM picked p LEFT JOIN runs r ON r.trace_id = p.trace_id LEFT JOIN s ON s.trace_id = p.trace_id
LEFT JOIN a ON a.trace_id = p.trace_id LEFT JOIN d ON d.trace_id = p.trace_id
ORDER BY started_ns DESC
"""


@dataclass(frozen=True)
class Workflow:
    """One workflow (the artifacts sharing a correlation id, and the agent runs on them), in
    whichever runs and processes it went through."""

    correlation_id: str


@dataclass
class RunRow:
    """One run (one trace): a ``traced_run``/``flock run``, or a publish outside any run."""

    run_id: str
    name: str
    started_ns: int
    ended_ns: int | None
    status: str  # running | ok | failed | interrupted
    artifacts: int
    agent_runs: int
    failed_attempts: int
    dead_letters: int
    tokens: int
    cost: float | None
    pid: int | None = None
    host: str | None = None
    recipe: str | None = None
    board: str | None = None
    """The board the run worked (``setup.board_identity``), when its process recorded one."""
    processes: list[RunRow] = field(default_factory=list)
    """For a run several processes worked (``board_runs.py``): each process's own run, oldest
    first; empty for the run of one process."""
    workflow: str | None = None
    """The correlation id, when the row is one workflow rather than a run (``workflow.py``)."""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (None while running)."""
        return None if self.ended_ns is None else (self.ended_ns - self.started_ns) / 1e9

    @property
    def trace_ids(self) -> list[str]:
        """The traces that make up the run: its processes' runs, or its own id."""
        return [p.run_id for p in self.processes] or [self.run_id]

    @property
    def scope(self) -> list[str] | Workflow:
        """What the reader's queries select for this row: its traces, or its workflow."""
        return Workflow(self.workflow) if self.workflow else self.trace_ids

    @property
    def process(self) -> str:
        """``host:pid`` of the process that wrote the run (``?`` where unknown)."""
        return f"{self.host or '?'}:{self.pid if self.pid is not None else '?'}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (``board`` and ``processes`` only when there are some)."""
        data = {**asdict(self), "duration_s": self.duration_s}
        for key in ("board", "workflow"):
            if data[key] is None:
                del data[key]
        if self.processes:
            data["processes"] = [p.to_json() for p in self.processes]
        else:
            del data["processes"]
        return data


def run_row(row: tuple[Any, ...]) -> RunRow:
    """A row of :data:`RUN_SUMMARY` as a :class:`RunRow` (its status settled: a run whose
    process is gone from this host is ``interrupted``)."""
    (run_id, name, first_name, first_type, started, ended, status, pid, host, attributes, artifacts,
     agent_runs, failed_attempts, dead, tokens, cost) = row  # fmt: skip
    attrs = json.loads(attributes) if isinstance(attributes, str) else (attributes or {})
    if name is None:  # a publish outside any traced run
        name = f"publish {first_type}" if first_type else (first_name or "?")
    if status == "running":
        status = "running" if alive(pid, host) else "interrupted"
    elif status in ("interrupted", "aborted"):
        pass  # stopped by Ctrl-C or SIGTERM before it finished
    elif dead or status == "failed":
        status = "failed"
    else:
        status = "ok"
    return RunRow(
        run_id, name, int(started), None if ended is None else int(ended), status, int(artifacts),
        int(agent_runs), int(failed_attempts), int(dead), int(tokens or 0), cost, pid, host,
        attrs.get("recipe"), attrs.get("flock.board"),
    )  # fmt: skip


def alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that writes a run still lives (assumed so for other hosts)."""
    if pid is None or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
