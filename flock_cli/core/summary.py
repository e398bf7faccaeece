"""What happened during a run: the RunSummary returned by ``run_until_idle`` and ``shutdown``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from flock_cli.store.contract import DeadLetter

__all__ = [
    "BreakerTrip",
    "BudgetHold",
    "ExpiredGroup",
    "Failure",
    "PendingEmbargo",
    "PendingGroup",
    "PredicateError",
    "RunSummary",
    "SummaryCollector",
]


class Failure(BaseModel):
    """An agent run that failed for good (after its retries)."""

    agent: str
    error_type: str
    error: str
    stage: str
    attempts: int
    artifact_ids: list[UUID]
    outputs_published: bool = False
    delivery_id: UUID | None = None


class BreakerTrip(BaseModel):
    """An agent hit ``max_agent_iterations`` within one workflow (correlation id); ``held`` runs
    went to the dead letters instead. ``correlation_ids`` names the workflows that tripped."""

    agent: str
    limit: int
    held: int = 0
    correlation_ids: list[UUID | None] = Field(default_factory=list)


class BudgetHold(BaseModel):
    """A budget ran out: ``held`` runs it covers went to the dead letters (reason ``budget``)
    instead of starting. ``scope`` is ``run`` (the flock's budget) or ``agent``."""

    agent: str
    scope: Literal["run", "agent"]
    reason: str
    held: int = 0


class ExpiredGroup(BaseModel):
    """A join group that expired incomplete; its artifacts are listed, nothing is lost."""

    agent: str
    subscription: int
    key: str
    reason: str
    artifact_ids: list[UUID]
    present: list[str]
    missing: list[str]


class PendingGroup(BaseModel):
    """An AND gate or join group still waiting for artifacts when the summary was taken.

    ``status`` says whether anything left in the flock can complete it: ``waiting`` (runs in
    flight, or a delivery held by an embargo, may still produce what is missing), ``stuck``
    (nothing left can: it needs new input from outside) or ``deadlock`` (what is missing only
    ever comes from this agent's own outputs: the gate can never fill). ``reason`` explains it.
    """

    agent: str
    subscription: int
    key: str | None
    artifact_ids: list[UUID]
    missing: list[str]
    status: Literal["waiting", "stuck", "deadlock"] = "waiting"
    reason: str = ""


class PendingEmbargo(BaseModel):
    """An artifact an agent (or an exclusive group, ``group:<name>``) will receive once its
    embargo lifts (``AfterVisibility``); ``agents`` are the agents that may then take it."""

    agent: str
    agents: list[str] = Field(default_factory=list)
    artifact_id: UUID
    lifts_at: datetime


class PredicateError(BaseModel):
    """A ``where=`` predicate raised: the artifact did not match, and this records why."""

    agent: str
    subscription: int
    artifact_id: UUID
    error: str


class RunSummary(BaseModel):
    """Everything that happened since the previous summary.

    ``ok`` is False when any run failed, anything went to the dead letters or a breaker tripped.
    """

    agent_runs: int = 0
    runs_by_agent: dict[str, int] = Field(default_factory=dict)
    artifacts_published: int = 0
    failures: list[Failure] = Field(default_factory=list)
    retries: int = 0
    breaker_trips: list[BreakerTrip] = Field(default_factory=list)
    budget_holds: list[BudgetHold] = Field(default_factory=list)
    expired_groups: list[ExpiredGroup] = Field(default_factory=list)
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    visibility_denials: int = Field(
        default=0, description="deliveries refused because the agent may not see the artifact"
    )
    embargoed: int = Field(
        default=0,
        description="deliveries held by an embargo (AfterVisibility): not denials, they run when it"
        " lifts (pending_embargoes lists those still waiting)",
    )
    filtered: dict[str, int] = Field(default_factory=dict)
    predicate_errors: list[PredicateError] = Field(default_factory=list)
    pending_groups: list[PendingGroup] = Field(default_factory=list)
    pending_embargoes: list[PendingEmbargo] = Field(default_factory=list)
    not_started: int = Field(
        default=0,
        description="runs that were waiting when the flock stopped starting work: still pending on a"
        " durable board (the next flock runs them), dead letters (reason 'stopped') otherwise",
    )
    released: int = Field(
        default=0,
        description="runs interrupted at shutdown whose deliveries went back to the durable board"
        " (they run again when a flock resumes it)",
    )
    leases_lost: int = Field(
        default=0,
        description="runs whose lease expired and was taken over by another process of a shared board"
        " before they finished: their outputs were refused (fenced), the other process's run counts",
    )

    @property
    def ok(self) -> bool:
        """No failure, no dead letter, no breaker trip, no run held by a budget, no gate that can
        never fill (a ``deadlock`` pending group)."""
        deadlocked = any(g.status == "deadlock" for g in self.pending_groups)
        held = self.breaker_trips or self.budget_holds
        return not (self.failures or self.dead_letters or held or deadlocked)

    @property
    def stuck_groups(self) -> list[PendingGroup]:
        """Pending groups nothing left in the flock can complete (``stuck`` or ``deadlock``):
        at the end of a closed run (``flock run`` without ``--watch``) a workflow did not finish."""
        return [g for g in self.pending_groups if g.status != "waiting"]

    @classmethod
    def merged(cls, summaries: list[RunSummary]) -> RunSummary:
        """One summary of consecutive periods (a watch's and its shutdown's): counts and lists
        add up; what is still pending is the last summary's view."""
        merged: dict[str, Any] = {}
        for summary in summaries:
            for name, value in summary:
                if name not in merged:
                    merged[name] = value
                elif isinstance(value, list):
                    merged[name] = [*merged[name], *value]
                elif isinstance(value, dict):
                    merged[name] = {
                        k: merged[name].get(k, 0) + value.get(k, 0) for k in {*merged[name], *value}
                    }
                elif isinstance(value, int):
                    merged[name] = merged[name] + value
        if summaries:
            merged["pending_groups"] = summaries[-1].pending_groups
            merged["pending_embargoes"] = summaries[-1].pending_embargoes
        return cls(**merged)


class LiveStatus(BaseModel):
    """A snapshot of a flock at work, for progress displays (``Flock.status()``).

    The counters cover the period since the previous summary, like :class:`RunSummary`.
    """

    running: int = 0
    running_by_agent: dict[str, int] = Field(default_factory=dict)
    queued_by_agent: dict[str, int] = Field(default_factory=dict)
    runs_by_agent: dict[str, int] = Field(default_factory=dict)
    artifacts_published: int = 0
    failures: int = 0
    retries: int = 0
    dead_letters: int = 0
    breaker_trips: int = 0


class SummaryCollector:
    """Accumulates counters between two summaries."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new period."""
        self.runs: Counter[str] = Counter()
        self.published = 0
        self.failures: list[Failure] = []
        self.retries = 0
        self.trips: dict[str, BreakerTrip] = {}
        self.budget_holds: dict[tuple[str, str], BudgetHold] = {}
        self.expired: list[ExpiredGroup] = []
        self.dead: list[DeadLetter] = []
        self.denials = 0
        self.embargoed = 0
        self.filtered: Counter[str] = Counter()
        self.predicate_errors: list[PredicateError] = []
        self.released = 0
        self.leases_lost = 0
        self.not_started = 0

    def live(self, running_by_agent: dict[str, int], queued_by_agent: dict[str, int]) -> LiveStatus:
        """The counters so far, with what is running and queued now."""
        return LiveStatus(
            running=sum(running_by_agent.values()),
            running_by_agent={a: n for a, n in running_by_agent.items() if n},
            queued_by_agent={a: n for a, n in queued_by_agent.items() if n},
            runs_by_agent=dict(self.runs),
            artifacts_published=self.published,
            failures=len(self.failures),
            retries=self.retries,
            dead_letters=len(self.dead),
            breaker_trips=len(self.trips),
        )

    def build(self, pending: list[PendingGroup], embargoes: list[PendingEmbargo]) -> RunSummary:
        """The summary of the current period."""
        return RunSummary(
            agent_runs=sum(self.runs.values()),
            runs_by_agent=dict(self.runs),
            artifacts_published=self.published,
            failures=list(self.failures),
            retries=self.retries,
            breaker_trips=list(self.trips.values()),
            budget_holds=list(self.budget_holds.values()),
            expired_groups=list(self.expired),
            dead_letters=list(self.dead),
            visibility_denials=self.denials,
            embargoed=self.embargoed,
            filtered=dict(self.filtered),
            predicate_errors=list(self.predicate_errors),
            pending_groups=pending,
            pending_embargoes=embargoes,
            released=self.released,
            leases_lost=self.leases_lost,
            not_started=self.not_started,
        )
