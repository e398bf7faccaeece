"""The store contract: what every blackboard store (memory, SQLite, PostgreSQL) must do.

A store holds four things:

* **artifacts**, append-only; every read takes a *viewer* and returns only what that viewer may
  see (denials are recorded);
* **consumptions**, the (artifact, consumer) pairs already taken, so each pair runs at most once;
* **deliveries**, units of work (an agent must process these artifacts) with a status, an attempt
  counter that doubles as a fencing token, and a lease; an agent's outputs and the completion of its
  delivery are committed together by :meth:`BlackboardStore.complete`;
* **dead letters**, runs that failed for good (or were held by a circuit breaker), kept until
  re-queued.

The records it is written in (deliveries, dead letters, denials, routing steps...) are defined in
:mod:`flock_cli.store.records`; ``Delivery``, ``DeadLetter`` and ``VisibilityDenial`` are also
imported from here. The same contract test suite runs against every implementation.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from flock_cli.clock import Clock, SystemClock
from flock_cli.core.artifact import Artifact
from flock_cli.core.registry import canonical_name
from flock_cli.core.visibility import AgentIdentity
from flock_cli.errors import RunError
from flock_cli.store.records import (
    BatchEntry,
    BoardSummary,
    DeadLetter,
    DeadLetterReason,
    Delivery,
    DeliveryStatus,
    GateEntry,
    Lineage,
    RoutingTx,
    RunRecord,
    VisibilityDenial,
)

__all__ = [
    "EXTERNAL",
    "UNRESTRICTED",
    "ArtifactQuery",
    "BlackboardStore",
    "DeadLetter",
    "DeadLetterReason",
    "Delivery",
    "DeliveryStatus",
    "NotLeaderError",
    "Page",
    "StaleLeaseError",
    "Viewer",
    "VisibilityDenial",
]

M = TypeVar("M", bound=BaseModel)


class _Unrestricted:
    """The operator's view: every artifact, regardless of visibility (CLI inspection, tests)."""

    name: Final = "__operator__"

    def __repr__(self) -> str:
        return "UNRESTRICTED"


UNRESTRICTED: Final = _Unrestricted()
"""Viewer that sees everything. Use it for operator tooling only; agents never get it."""

EXTERNAL: Final = AgentIdentity(name="external")
"""The default viewer of store reads: an outside caller that sees what an anonymous identity may."""

Viewer = AgentIdentity | _Unrestricted


class StaleLeaseError(RunError):
    """A delivery was completed or failed with an attempt number that no longer holds its lease."""


class NotLeaderError(RunError):
    """A routing step on a shared board was refused: this process does not (or no longer) hold
    the board's routing lock; the process that holds it routes the artifacts instead."""


class ArtifactQuery(BaseModel):
    """Filters for :meth:`BlackboardStore.query`; every given filter must match."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    types: frozenset[str] | None = None
    produced_by: frozenset[str] | None = None
    correlation_id: UUID | None = None
    tags: frozenset[str] | None = Field(default=None, description="artifacts carrying every tag")
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0)
    newest_first: bool = False

    def matches(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` passes every filter (used by stores that filter in Python)."""
        return (
            (self.types is None or artifact.type in self.types)
            and (self.produced_by is None or artifact.produced_by in self.produced_by)
            and (self.correlation_id is None or artifact.correlation_id == self.correlation_id)
            and (self.tags is None or self.tags <= artifact.tags)
            and (self.since is None or artifact.created_at >= self.since)
            and (self.until is None or artifact.created_at < self.until)
        )


class Page(BaseModel):
    """One page of query results and the total number of visible matches."""

    items: list[Artifact]
    total: int


class BlackboardStore(ABC):
    """Abstract blackboard store. All methods are coroutines; implementations must be safe to call
    from one event loop concurrently.

    ``clock`` decides what "now" means for visibility checks when a read passes no ``now``; a
    :class:`~flock_cli.Flock` sets it to its own clock, so embargoes follow injected time.
    """

    clock: Clock = SystemClock()

    def now(self, now: datetime | None = None) -> datetime:
        """``now`` if given, else the store clock's current time."""
        return now if now is not None else self.clock.now()

    # -- artifacts -------------------------------------------------------------------------------

    @abstractmethod
    async def append(self, artifacts: Sequence[Artifact]) -> None:
        """Add artifacts (all or none). Artifacts are never updated afterwards."""

    @abstractmethod
    async def query(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Page:
        """Visible artifacts matching ``query``, oldest first unless ``newest_first``."""

    async def get(
        self, artifact_id: UUID, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Artifact | None:
        """One artifact by id, or None if it does not exist or ``viewer`` may not see it."""
        found = await self.get_many([artifact_id], viewer=viewer, now=now)
        return found[0] if found else None

    @abstractmethod
    async def get_many(
        self, artifact_ids: Sequence[UUID], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> list[Artifact]:
        """The visible artifacts among ``artifact_ids``, in the order asked."""

    @abstractmethod
    async def feed(
        self,
        after: int,
        query: ArtifactQuery | None = None,
        *,
        limit: int = 500,
        also: Sequence[int] = (),
    ) -> builtins.list[tuple[int, Artifact]]:
        """Artifacts by board position, for followers of the board (``GET /v1/events``).

        Every append gives its artifacts increasing positions. Returns up to ``limit`` artifacts
        at positions after ``after``, and those at the positions ``also`` names (gaps a follower
        saw: on a board many processes write, a position can become visible after a higher one,
        when its transaction commits later), matching ``query``'s filters (its paging is ignored),
        in position order. Unrestricted: callers filter by visibility (``read_filter``).
        """

    @abstractmethod
    async def head(self) -> int:
        """The highest board position given so far (0 on an empty board): where a new follower of
        the board starts to see what comes next."""

    async def list(self, *, viewer: Viewer = EXTERNAL, now: datetime | None = None) -> list[Artifact]:
        """Every visible artifact, oldest first."""
        return (await self.query(None, viewer=viewer, now=now)).items

    async def get_artifacts_by_type(
        self, type_name: str, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> builtins.list[Artifact]:
        """Visible artifacts of the canonical type ``type_name``, oldest first."""
        return (await self.query(ArtifactQuery(types=frozenset({type_name})), viewer=viewer, now=now)).items

    async def get_by_type(
        self, model: type[M], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> builtins.list[M]:
        """Visible artifacts of ``model``'s type, validated into the model, oldest first."""
        artifacts = await self.get_artifacts_by_type(canonical_name(model), viewer=viewer, now=now)
        return [a.as_model(model) for a in artifacts]

    # -- consumptions ----------------------------------------------------------------------------

    @abstractmethod
    async def claim_consumption(self, artifact_id: UUID, consumer: str) -> bool:
        """Record that ``consumer`` takes ``artifact_id``; False if it was already taken."""

    @abstractmethod
    async def consumers_of(self, artifact_id: UUID) -> set[str]:
        """Who has taken ``artifact_id``."""

    # -- deliveries ------------------------------------------------------------------------------

    @abstractmethod
    async def add_delivery(self, delivery: Delivery) -> None:
        """Record new work."""

    @abstractmethod
    async def lease(self, delivery_id: UUID, owner: str, *, now: datetime, ttl: float) -> Delivery | None:
        """Take the lease of a pending (or lease-expired) delivery, incrementing ``attempts``.

        Returns the leased delivery, or None when someone else holds a live lease or it is finished.
        The returned ``attempts`` is the fencing token for :meth:`complete` and :meth:`release`.
        """

    @abstractmethod
    async def complete(
        self,
        delivery_id: UUID,
        attempt: int,
        outputs: Sequence[Artifact],
        *,
        routed: Collection[UUID] = (),
    ) -> None:
        """Append ``outputs`` and mark the delivery done, atomically.

        ``routed`` names outputs that need no routing step (no subscription takes their type):
        they are stored as routed already, so no later write has to mark them.
        Raises StaleLeaseError (and changes nothing) if ``attempt`` no longer holds the lease.
        """

    @abstractmethod
    async def release(
        self, delivery_id: UUID, attempt: int, *, dead: bool = False, retry_at: datetime | None = None
    ) -> None:
        """Give the lease back (pending again, for a retry) or mark the delivery dead.

        ``retry_at`` is when a retry is due: a shared board lets no other process lease the
        delivery before then (a board one process works needs nothing: that process waits)."""

    @abstractmethod
    async def bury(self, delivery_id: UUID, attempt: int | None, letter: DeadLetter) -> None:
        """Mark a delivery dead and keep ``letter``, atomically (a crash can never leave one
        without the other). ``attempt`` is the lease held, fenced as in :meth:`release`; None
        means the delivery is pending (no lease taken). Raises StaleLeaseError otherwise."""

    @abstractmethod
    async def get_delivery(self, delivery_id: UUID) -> Delivery | None:
        """A delivery by id."""

    @abstractmethod
    async def deliveries(self, *, status: DeliveryStatus | None = None) -> builtins.list[Delivery]:
        """Deliveries, oldest first, optionally of one status."""

    # -- dead letters ----------------------------------------------------------------------------

    @abstractmethod
    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a failed or held run."""

    @abstractmethod
    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Every dead letter, oldest first."""

    @abstractmethod
    async def take_dead_letter(self, letter_id: UUID) -> DeadLetter | None:
        """Remove and return a dead letter (to re-queue it), or None if unknown."""

    # -- audit -----------------------------------------------------------------------------------

    @abstractmethod
    async def record_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        """Keep visibility denials for audit."""

    @abstractmethod
    async def denials(self) -> builtins.list[VisibilityDenial]:
        """Every recorded denial, oldest first."""

    # -- routing state (durable stores persist it so a restarted orchestrator can resume) --------

    durable: bool = False
    """True for stores that outlive the process (the orchestrator then resumes from them)."""

    shared: bool = False
    """True for a board that many orchestrator processes work at once (PostgreSQL): each leases
    its work from the board, and only the holder of the routing lock routes."""

    @property
    def leading(self) -> bool:
        """Whether this process routes for the board (always, on a board it does not share)."""
        return True

    @abstractmethod
    async def commit_routing(self, tx: RoutingTx) -> None:
        """Apply one routing step atomically: claims, deliveries, gate and batch changes, denials,
        and the ``routed`` marks. A step whose claim was already taken fails as a whole (ValueError,
        from this call or from the next :meth:`sync`) and changes nothing.

        A store may return before the step is durable, so that many steps share one commit;
        :meth:`sync` waits for durability. Steps are applied in call order.
        """

    async def sync(self) -> None:  # noqa: B027 - stores that commit at once need nothing here
        """Wait until every write made so far is durable."""

    @abstractmethod
    async def unrouted(self, limit: int = 1000) -> builtins.list[Artifact]:
        """Artifacts appended but not routed yet (by another process, or before a crash), oldest first."""

    @abstractmethod
    async def gate_entries(self) -> builtins.list[GateEntry]:
        """Artifacts waiting in gates and join groups, in arrival order."""

    @abstractmethod
    async def batch_entries(self) -> builtins.list[BatchEntry]:
        """Units waiting in partial batches, in arrival order."""

    async def open_work(self) -> tuple[int, int, int]:
        """(pending, leased, unrouted) counts: work that some orchestrator still has to do."""
        return (
            len(await self.deliveries(status=DeliveryStatus.PENDING)),
            len(await self.deliveries(status=DeliveryStatus.LEASED)),
            len(await self.unrouted()),
        )

    @abstractmethod
    async def release_leases(self, owner: str) -> int:
        """Make the deliveries leased by ``owner`` (a dead orchestrator) pending again; returns how many.

        Attempt numbers are kept, so a late completion by the dead owner is still rejected.
        """

    # -- runs ------------------------------------------------------------------------------------

    @abstractmethod
    async def save_run(self, run: RunRecord) -> None:
        """Insert or update a run record."""

    @abstractmethod
    async def runs(self) -> builtins.list[RunRecord]:
        """Every run record, oldest first."""

    # -- lineage and summaries -------------------------------------------------------------------

    async def lineage(
        self, artifact_id: UUID, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Lineage:
        """The artifacts ``artifact_id`` was derived from and those derived from it (transitively),
        as ``viewer`` may see them, like every other read: ids it may not see are left out and the
        refusals recorded. An artifact the viewer may not see has an empty lineage (its relatives
        would tell what it is). A hidden artifact does not cut the walk: what was derived through
        it is listed when the viewer may see that, as a query would show it anyway.
        """
        if isinstance(viewer, _Unrestricted):
            return await self._full_lineage(artifact_id)
        when = self.now(now)
        if await self.get(artifact_id, viewer=viewer, now=when) is None:
            return Lineage(artifact_id=artifact_id, parents=[], children=[])
        full = await self._full_lineage(artifact_id)
        shown = {a.id for a in await self.get_many([*full.parents, *full.children], viewer=viewer, now=when)}
        return Lineage(
            artifact_id=artifact_id,
            parents=[i for i in full.parents if i in shown],
            children=[i for i in full.children if i in shown],
        )

    @abstractmethod
    async def _full_lineage(self, artifact_id: UUID) -> Lineage:
        """:meth:`lineage` as the unrestricted viewer sees it: every ancestor and descendant."""

    async def summarize(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> BoardSummary:
        """Counts of visible matching artifacts by type and by producer."""
        items = (await self.query(query, viewer=viewer, now=now)).items
        by_type: dict[str, int] = {}
        by_producer: dict[str, int] = {}
        for a in items:
            by_type[a.type] = by_type.get(a.type, 0) + 1
            by_producer[a.produced_by] = by_producer.get(a.produced_by, 0) + 1
        return BoardSummary(total=len(items), by_type=by_type, by_producer=by_producer)

    async def _readable(
        self, artifacts: Iterable[Artifact], viewer: Viewer, now: datetime
    ) -> builtins.list[Artifact]:
        """What ``viewer`` may read of ``artifacts`` at ``now``; the denials are recorded."""
        shown, denied = read_filter(artifacts, viewer, now)
        if denied:
            await self.record_denials(denied)
        return shown

    async def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release resources (connections, files)."""


def visible(artifact: Artifact, viewer: Viewer, now: datetime) -> bool:
    """Whether ``viewer`` may see ``artifact`` at ``now``."""
    if isinstance(viewer, _Unrestricted):
        return True
    return artifact.visibility.allows(viewer, now=now)


def read_filter(
    artifacts: Iterable[Artifact], viewer: Viewer, now: datetime
) -> tuple[builtins.list[Artifact], builtins.list[VisibilityDenial]]:
    """What ``viewer`` may read of ``artifacts`` at ``now``, and a denial record for each of the
    others (every store keeps those for the audit)."""
    if not isinstance(viewer, AgentIdentity):
        return list(artifacts), []  # UNRESTRICTED: the board's own reads
    shown, denied = [], []
    for artifact in artifacts:
        if visible(artifact, viewer, now):
            shown.append(artifact)
        else:
            denied.append(denial(artifact, viewer, now, "read"))
    return shown, denied


def denial(artifact: Artifact, viewer: AgentIdentity, now: datetime, where: Any) -> VisibilityDenial:
    """A denial record for ``viewer`` looking at ``artifact``."""
    lifts = getattr(artifact.visibility, "lifts_at", None)
    return VisibilityDenial(
        artifact_id=artifact.id,
        viewer=viewer.name,
        visibility=artifact.visibility.describe(),
        where=where,
        at=now,
        embargoed_until=lifts(now) if lifts is not None and lifts(now) > now else None,
    )
