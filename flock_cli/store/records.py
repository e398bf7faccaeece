"""Records the scheduler and the operator tools exchange with a store (beyond artifacts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel

from flock_cli.store.contract import Delivery, VisibilityDenial

__all__ = ["BatchEntry", "BoardSummary", "GateEntry", "Lineage", "RoutingTx", "RunRecord", "walk"]


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
