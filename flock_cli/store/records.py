"""Records the runtime and the operator tools exchange with a store (beyond artifacts): deliveries,
dead letters, denials, routing steps, gate and batch entries, run records, lineage and summaries.

The store contract (:mod:`flock_cli.store.contract`) is written in these types and re-exports the
first ones; this module depends on no other module of the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, NamedTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BatchEntry",
    "BoardSummary",
    "DeadLetter",
    "DeadLetterReason",
    "Delivery",
    "DeliveryStatus",
    "GateEntry",
    "Lineage",
    "RoutingTx",
    "RunRecord",
    "VisibilityDenial",
    "walk",
]


class DeliveryStatus(StrEnum):
    """Where a delivery is in its life."""

    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"


class Delivery(NamedTuple):
    """One unit of work: ``agent`` must process ``artifact_ids`` (one run, possibly a batch).

    Immutable, and a named tuple rather than a Pydantic model or a frozen dataclass: every run
    makes one and moves it once, and a tuple is built in C (a frozen dataclass sets each of its 13
    fields through ``object.__setattr__``: 3.4 µs to make one, against about 1 µs).
    """

    id: UUID
    agent: str
    artifact_ids: tuple[UUID, ...]
    created_at: datetime
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    priority: int = 0
    trigger: Literal["event", "direct", "redelivery"] = "event"
    batch_trigger: str | None = None
    group_sizes: tuple[int, ...] = ()
    subscription: int = 0

    def moved(
        self,
        status: DeliveryStatus,
        *,
        attempts: int | None = None,
        lease_owner: str | None = None,
        lease_expires_at: datetime | None = None,
    ) -> Delivery:
        """This delivery in ``status`` (the lease fields as given, unset by default)."""
        id_, agent, artifact_ids, created_at, _, attempts_now, _, _, *rest = self
        return _new_tuple(
            Delivery,
            (id_, agent, artifact_ids, created_at, status, attempts_now if attempts is None else attempts,
             lease_owner, lease_expires_at, *rest),
        )  # fmt: skip


_new_tuple = tuple.__new__


DeadLetterReason = Literal["failed", "breaker", "budget", "embargoed", "stopped", "denied"]


class DeadLetter(BaseModel):
    """A run that failed for good, work a circuit breaker or budget held back, a delivery that was
    still waiting for an embargo when the flock shut down, or one that no agent allowed to see its
    artifacts could take (``denied``: kept, never run by an agent that may not see it)."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    agent: str
    artifact_ids: tuple[UUID, ...]
    reason: DeadLetterReason
    error_type: str | None = None
    error: str | None = None
    stage: str | None = None
    attempts: int = 0
    outputs_published: bool = False
    created_at: datetime
    delivery_id: UUID | None = None
    subscription: int | None = None


class VisibilityDenial(BaseModel):
    """One refused look: ``viewer`` could not see ``artifact_id`` (when scheduling or reading)."""

    model_config = ConfigDict(frozen=True)

    artifact_id: UUID
    viewer: str
    visibility: str
    where: Literal["schedule", "read"]
    at: datetime
    embargoed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class GateEntry:
    """An artifact waiting in an AND gate or join group of subscription ``sub_key``."""

    sub_key: str
    artifact_id: UUID
    arrived_at: datetime


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """A unit (one artifact, or one completed group) waiting in the batch of ``sub_key``."""

    sub_key: str
    artifact_ids: tuple[UUID, ...]
    arrived_at: datetime


@dataclass(slots=True)
class RoutingTx:
    """Everything one routing step changes, committed by ``BlackboardStore.commit_routing`` at once.

    One artifact's routing (or one timer firing) either happens completely or not at all, so a
    crash can never leave an artifact claimed but without its delivery, or a gate that lost an
    artifact. ``routed`` marks artifacts whose routing this is.
    """

    routed: list[UUID] = field(default_factory=list)
    claims: list[tuple[UUID, str]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    gate_adds: list[GateEntry] = field(default_factory=list)
    gate_removes: list[tuple[str, UUID]] = field(default_factory=list)
    batch_adds: list[BatchEntry] = field(default_factory=list)
    batch_clears: list[str] = field(default_factory=list)
    denials: list[VisibilityDenial] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.routed
            or self.claims
            or self.deliveries
            or self.gate_adds
            or self.gate_removes
            or self.batch_adds
            or self.batch_clears
            or self.denials
        )


class RunRecord(BaseModel):
    """One orchestrator session on a board: who ran it, with which definition, how it ended."""

    id: UUID
    fingerprint: str
    owner: str
    pid: int
    host: str
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None = None
    status: Literal["running", "finished", "crashed"] = "running"


class Lineage(BaseModel):
    """What an artifact was derived from (``parents``) and what was derived from it (``children``),
    transitively, oldest first."""

    artifact_id: UUID
    parents: list[UUID]
    children: list[UUID]


class BoardSummary(BaseModel):
    """Counts of visible artifacts by type and by producer."""

    total: int
    by_type: dict[str, int]
    by_producer: dict[str, int]


def walk(start: UUID, step: Callable[[UUID], Iterable[UUID]]) -> list[UUID]:
    """Every id reachable from ``start`` through ``step``, breadth first, without repeats."""
    seen: dict[UUID, None] = {}
    frontier = list(step(start))
    while frontier:
        current = frontier.pop(0)
        if current not in seen and current != start:
            seen[current] = None
            frontier.extend(step(current))
    return list(seen)
