"""Prometheus metrics of a flock, in the Prometheus text exposition format (version 0.0.4).

The counters live in memory and cost a dict update each; ``flock run --metrics-port`` serves them
over HTTP while a run goes on, and ``flock trace metrics`` renders the same families from the
trace store for runs that are over.

A gauge keeps every agent it ever listed, at 0 when nothing runs or waits: a series that vanished
would read as "no data" rather than "none queued", and sums and alerts over it would skip it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "LATENCY_BUCKETS",
    "OPERATION_BUCKETS",
    "TOKEN_BUCKETS",
    "Family",
    "Histogram",
    "Metrics",
    "render",
]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the agent-run latency histogram; +Inf is implied."""

OPERATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""Upper bounds (seconds) of the model-call duration histogram: the GenAI conventions' advice for
``gen_ai.client.operation.duration``."""

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""Upper bounds of the token-usage histogram: the GenAI conventions' advice for
``gen_ai.client.token.usage``."""

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Bucket counts (cumulative only when rendered), sum and count of observed values."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        """Count one value."""
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class Family:
    """One metric family: its samples by label set (histograms keep a Histogram per label set)."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    samples: dict[Labels, float | Histogram] = field(default_factory=dict)


class Metrics:
    """The metrics of one flock.

    Updated on the event loop; ``render`` may run on another thread (the HTTP server): it copies
    each dict first, which CPython does without letting another thread in.
    """

    def __init__(self) -> None:
        self.published: dict[str, int] = {}
        self.runs: dict[tuple[str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.in_progress: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.tokens: dict[Labels, Histogram] = {}
        self.operations: dict[Labels, Histogram] = {}
        self.pending: Callable[[], dict[str, int]] | None = None
        self.ended = False
        self._gauge_agents: set[str] = set()

    def track(self, agents: Iterable[str]) -> None:
        """List ``agents`` in the gauges from now on, at 0 until they run or wait."""
        self._gauge_agents.update(agents)

    def end(self) -> None:
        """The run is over: nothing runs or waits in this flock any more, so the gauges read 0
        (runs a timeout left queued are not waiting for anything); the counters keep their values."""
        self.ended = True

    def artifact_published(self, type_name: str) -> None:
        """Count one published artifact."""
        self.published[type_name] = self.published.get(type_name, 0) + 1

    def run_started(self, agent: str) -> None:
        """An agent run (attempt) began."""
        self.in_progress[agent] = self.in_progress.get(agent, 0) + 1

    def run_finished(self, agent: str, status: str, seconds: float) -> None:
        """An agent run (attempt) ended with ``status`` after ``seconds``."""
        self.in_progress[agent] = self.in_progress.get(agent, 1) - 1
        key = (agent, status)
        self.runs[key] = self.runs.get(key, 0) + 1
        histogram = self.latency.get(agent)
        if histogram is None:
            histogram = self.latency[agent] = Histogram()
        histogram.observe(seconds)

    def event(self, kind: str) -> None:
        """Count one runtime event (retry, dead letter, breaker trip, ...)."""
        self.events[kind] = self.events.get(kind, 0) + 1

    def model_call(self, attributes: dict[str, object], seconds: float, error_type: str | None) -> None:
        """Count one model call by the GenAI conventions' metrics: its duration
        (``gen_ai.client.operation.duration``) and its input and output tokens
        (``gen_ai.client.token.usage``), labelled by operation, provider and model."""
        base: Labels = tuple(
            (key.replace(".", "_"), str(attributes[key]))
            for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
            if attributes.get(key) is not None
        )
        timed = (*base, ("error_type", error_type)) if error_type else base
        histogram = self.operations.get(timed)
        if histogram is None:
            histogram = self.operations[timed] = Histogram(OPERATION_BUCKETS)
        histogram.observe(seconds)
        for kind in ("input", "output"):
            used = attributes.get(f"gen_ai.usage.{kind}_tokens")
            if isinstance(used, int):
                key = (*base, ("gen_ai_token_type", kind))
                tokens = self.tokens.get(key)
                if tokens is None:
                    tokens = self.tokens[key] = Histogram(TOKEN_BUCKETS)
                tokens.observe(used)

    def families(self) -> list[Family]:
        """Every family, with the current values."""
        ended = self.ended
        pending = self.pending() if self.pending is not None and not ended else {}
        in_progress = self.in_progress.copy()
        self._gauge_agents.update(pending, in_progress)  # scrapes render at once: one C-level step each
        agents = sorted(self._gauge_agents.copy())
        return [
            Family(
                "flock_artifacts_published_total",
                "counter",
                "Artifacts published, by type.",
                {(("type", t),): float(n) for t, n in sorted(self.published.copy().items())},
            ),
            Family(
                "flock_agent_runs_total",
                "counter",
                "Agent runs (attempts) that ended, by agent and status.",
                {(("agent", a), ("status", s)): float(n) for (a, s), n in sorted(self.runs.copy().items())},
            ),
            Family(
                "flock_agent_run_duration_seconds",
                "histogram",
                "Duration of agent runs (attempts), by agent.",
                {(("agent", a),): h for a, h in sorted(self.latency.copy().items())},
            ),
            Family(
                "flock_agent_runs_in_progress",
                "gauge",
                "Agent runs in progress now (active agents), by agent.",
                {(("agent", a),): 0.0 if ended else float(in_progress.get(a, 0)) for a in agents},
            ),
            Family(
                "flock_deliveries_pending",
                "gauge",
                "Deliveries waiting for a concurrency slot, by agent.",
                {(("agent", a),): float(pending.get(a, 0)) for a in agents},
            ),
            Family(
                "flock_events_total",
                "counter",
                "Runtime events (retries, dead letters, breaker trips, denials...), by kind.",
                {(("kind", k),): float(n) for k, n in sorted(self.events.copy().items())},
            ),
            Family(
                "gen_ai_client_operation_duration_seconds",
                "histogram",
                "Duration of model calls (gen_ai.client.operation.duration), by operation, provider, model.",
                dict(sorted(self.operations.copy().items())),
            ),
            Family(
                "gen_ai_client_token_usage",
                "histogram",
                "Tokens a model call used (gen_ai.client.token.usage), by operation, provider, model, type.",
                dict(sorted(self.tokens.copy().items())),
            ),
        ]

    def render(self) -> str:
        """The metrics in the Prometheus text format."""
        return render(self.families())


def render(families: Iterable[Family]) -> str:
    """Render families in the Prometheus text exposition format."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples.items():
            if isinstance(value, Histogram):
                cumulative = 0
                for bound, count in zip(value.bounds, value.counts, strict=True):
                    cumulative += count
                    lines.append(_sample(f"{family.name}_bucket", (*labels, ("le", _num(bound))), cumulative))
                lines.append(_sample(f"{family.name}_bucket", (*labels, ("le", "+Inf")), value.count))
                lines.append(_sample(f"{family.name}_sum", labels, value.total))
                lines.append(_sample(f"{family.name}_count", labels, value.count))
            else:
                lines.append(_sample(family.name, labels, value))
    return "\n".join(lines) + "\n"


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_num(value)}"
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{body}}} {_num(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 9))  # nanosecond precision; no float noise in the text
