"""The in-memory store: fast, process-local, gone when the process exits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from flock_cli.core.artifact import Artifact
from flock_cli.store.contract import (
    EXTERNAL,
    ArtifactQuery,
    BlackboardStore,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Page,
    StaleLeaseError,
    Viewer,
    VisibilityDenial,
    read_filter,
)
from flock_cli.store.records import BatchEntry, GateEntry, Lineage, RoutingTx, RunRecord, walk

__all__ = ["InMemoryBlackboardStore"]


class InMemoryBlackboardStore(BlackboardStore):
    """Keeps everything in dictionaries. Every method completes without awaiting, so each call is
    atomic with respect to the event loop."""

    def __init__(self) -> None:
        # Keyed by the ids' integers (``UUID.int``): a UUID's hash runs Python code, an int's does
        # not, and every run touches these maps several times.
        self._artifacts: dict[int, Artifact] = {}
        self._by_type: dict[str, list[Artifact]] = {}
        self._consumptions: dict[int, set[str]] = {}
        self._deliveries: dict[int, Delivery] = {}
        self._dead: dict[UUID, DeadLetter] = {}
        self._denials: list[VisibilityDenial] = []
        self._unrouted: dict[int, None] = {}  # insertion-ordered set
        self._gates: dict[tuple[str, UUID], GateEntry] = {}
        self._batches: dict[str, list[BatchEntry]] = {}
        self._parents: dict[int, tuple[UUID, ...]] = {}
        self._children: dict[int, list[UUID]] = {}
        self._runs: dict[UUID, RunRecord] = {}
        self._positions: list[Artifact] = []  # board position n is self._positions[n - 1]

    # -- artifacts -------------------------------------------------------------------------------

    async def append(self, artifacts: Sequence[Artifact]) -> None:
        """Add artifacts; an id already present rejects the whole call."""
        for artifact in artifacts:
            if artifact.id.int in self._artifacts:
                raise ValueError(f"artifact {artifact.id} already exists")
        self._append(artifacts)

    def _append(self, artifacts: Sequence[Artifact], routed: Collection[UUID] = ()) -> None:
        for artifact in artifacts:
            key = artifact.id.int
            self._artifacts[key] = artifact
            self._by_type.setdefault(artifact.type, []).append(artifact)
            if not routed or artifact.id not in routed:
                self._unrouted[key] = None
            self._positions.append(artifact)

    def _filter_visible(self, artifacts: list[Artifact], viewer: Viewer, now: datetime) -> list[Artifact]:
        shown, denied = read_filter(artifacts, viewer, now)
        self._denials.extend(denied)
        return shown

    async def query(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Page:
        """Filter in Python over the type index (or every artifact when no type is given)."""
        query = query or ArtifactQuery()
        if query.types is not None and len(query.types) == 1:
            candidates = list(self._by_type.get(next(iter(query.types)), ()))
        elif query.types is not None:
            candidates = [a for a in self._artifacts.values() if a.type in query.types]  # insertion order
        else:
            candidates = list(self._artifacts.values())
        matched = [a for a in candidates if query.matches(a)]
        shown = self._filter_visible(matched, viewer, self.now(now))
        if query.newest_first:
            shown.reverse()
        end = None if query.limit is None else query.offset + query.limit
        return Page(items=shown[query.offset : end], total=len(shown))

    async def head(self) -> int:
        """The newest position."""
        return len(self._positions)

    async def feed(
        self,
        after: int,
        query: ArtifactQuery | None = None,
        *,
        limit: int = 500,
        also: Sequence[int] = (),
    ) -> list[tuple[int, Artifact]]:
        """Positions count appends from 1; one process writes, so they appear in order."""
        query = query or ArtifactQuery()
        wanted = sorted({p for p in also if 0 < p <= after} | set(range(after + 1, len(self._positions) + 1)))
        found: list[tuple[int, Artifact]] = []
        for position in wanted:
            artifact = self._positions[position - 1]
            if query.matches(artifact):
                found.append((position, artifact))
                if len(found) == limit:
                    break
        return found

    async def get_many(
        self, artifact_ids: Sequence[UUID], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> list[Artifact]:
        """Look up by id, then filter by visibility."""
        found = [self._artifacts[i.int] for i in artifact_ids if i.int in self._artifacts]
        return self._filter_visible(found, viewer, self.now(now))

    # -- consumptions ----------------------------------------------------------------------------

    async def claim_consumption(self, artifact_id: UUID, consumer: str) -> bool:
        """Set insertion; False if already present."""
        taken = self._consumptions.setdefault(artifact_id.int, set())
        if consumer in taken:
            return False
        taken.add(consumer)
        return True

    async def consumers_of(self, artifact_id: UUID) -> set[str]:
        """A copy of the consumer set."""
        return set(self._consumptions.get(artifact_id.int, ()))

    # -- deliveries ------------------------------------------------------------------------------

    async def add_delivery(self, delivery: Delivery) -> None:
        """Store the delivery; an existing id is an error."""
        if delivery.id.int in self._deliveries:
            raise ValueError(f"delivery {delivery.id} already exists")
        self._deliveries[delivery.id.int] = delivery

    async def lease(self, delivery_id: UUID, owner: str, *, now: datetime, ttl: float) -> Delivery | None:
        """Pending, or leased with an expired lease, becomes leased by ``owner``."""
        current = self._deliveries.get(delivery_id.int)
        if current is None or current.status in (DeliveryStatus.DONE, DeliveryStatus.DEAD):
            return None
        if (
            current.status == DeliveryStatus.LEASED
            and current.lease_expires_at is not None
            and current.lease_expires_at > now
        ):
            return None
        leased = current.moved(
            DeliveryStatus.LEASED,
            attempts=current.attempts + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=ttl),
        )
        self._deliveries[delivery_id.int] = leased
        return leased

    def _fenced(self, delivery_id: UUID, attempt: int) -> Delivery:
        current = self._deliveries.get(delivery_id.int)
        if current is None or current.status != DeliveryStatus.LEASED or current.attempts != attempt:
            raise StaleLeaseError(
                f"delivery {delivery_id}: attempt {attempt} does not hold the lease"
                f" (now {current.status if current else 'missing'},"
                f" attempt {current.attempts if current else '-'})"
            )
        return current

    async def complete(
        self,
        delivery_id: UUID,
        attempt: int,
        outputs: Sequence[Artifact],
        *,
        routed: Collection[UUID] = (),
    ) -> None:
        """Check the fence and duplicates first, then apply both changes."""
        current = self._fenced(delivery_id, attempt)
        for artifact in outputs:
            if artifact.id.int in self._artifacts:
                raise ValueError(f"artifact {artifact.id} already exists")
        self._append(outputs, routed)
        for output in outputs:
            self._parents[output.id.int] = current.artifact_ids
        for input_id in current.artifact_ids:
            self._children.setdefault(input_id.int, []).extend(o.id for o in outputs)
        self._deliveries[delivery_id.int] = current.moved(DeliveryStatus.DONE)

    async def release(
        self, delivery_id: UUID, attempt: int, *, dead: bool = False, retry_at: datetime | None = None
    ) -> None:
        """Back to pending, or dead."""
        current = self._fenced(delivery_id, attempt)
        status = DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
        self._deliveries[delivery_id.int] = current.moved(status)

    async def bury(self, delivery_id: UUID, attempt: int | None, letter: DeadLetter) -> None:
        """Check, then mark dead and keep the letter (no await in between: atomic)."""
        current = self._deliveries.get(delivery_id.int)
        if attempt is not None:
            current = self._fenced(delivery_id, attempt)
        elif current is None or current.status != DeliveryStatus.PENDING:
            raise StaleLeaseError(f"delivery {delivery_id} is not pending")
        self._deliveries[delivery_id.int] = current.moved(DeliveryStatus.DEAD)
        self._dead[letter.id] = letter

    async def get_delivery(self, delivery_id: UUID) -> Delivery | None:
        """Dictionary lookup."""
        return self._deliveries.get(delivery_id.int)

    async def deliveries(self, *, status: DeliveryStatus | None = None) -> list[Delivery]:
        """Insertion order is creation order."""
        return [d for d in self._deliveries.values() if status is None or d.status == status]

    async def release_leases(self, owner: str) -> int:
        """Leased by ``owner`` becomes pending."""
        mine = [
            d
            for d in self._deliveries.values()
            if d.status == DeliveryStatus.LEASED and d.lease_owner == owner
        ]
        for d in mine:
            self._deliveries[d.id.int] = d.moved(DeliveryStatus.PENDING)
        return len(mine)

    # -- routing state ---------------------------------------------------------------------------

    async def commit_routing(self, tx: RoutingTx) -> None:
        """Check every claim first, then apply all changes (no await in between: atomic)."""
        for artifact_id, consumer in tx.claims:
            if consumer in self._consumptions.get(artifact_id.int, ()):
                raise ValueError(f"artifact {artifact_id} was already claimed by {consumer}")
        for delivery in tx.deliveries:
            if delivery.id.int in self._deliveries:
                raise ValueError(f"delivery {delivery.id} already exists")
        for artifact_id, consumer in tx.claims:
            self._consumptions.setdefault(artifact_id.int, set()).add(consumer)
        for delivery in tx.deliveries:
            self._deliveries[delivery.id.int] = delivery
        for entry in tx.gate_adds:
            self._gates[(entry.sub_key, entry.artifact_id)] = entry
        for key in tx.gate_removes:
            self._gates.pop(key, None)
        for sub_key in tx.batch_clears:
            self._batches.pop(sub_key, None)
        for batch_entry in tx.batch_adds:
            self._batches.setdefault(batch_entry.sub_key, []).append(batch_entry)
        self._denials.extend(tx.denials)
        for artifact_id in tx.routed:
            self._unrouted.pop(artifact_id.int, None)

    async def unrouted(self, limit: int = 1000) -> list[Artifact]:
        """Oldest first."""
        return [self._artifacts[i] for i in list(self._unrouted)[:limit]]

    async def gate_entries(self) -> list[GateEntry]:
        """Arrival order."""
        return list(self._gates.values())

    async def batch_entries(self) -> list[BatchEntry]:
        """Arrival order within each batch."""
        return [e for entries in self._batches.values() for e in entries]

    # -- runs, lineage ---------------------------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Insert or replace."""
        self._runs[run.id] = run

    async def runs(self) -> list[RunRecord]:
        """Oldest first."""
        return sorted(self._runs.values(), key=lambda r: r.started_at)

    async def _full_lineage(self, artifact_id: UUID) -> Lineage:
        """Walk the parent and child maps."""
        return Lineage(
            artifact_id=artifact_id,
            parents=walk(artifact_id, lambda i: self._parents.get(i.int, ())),
            children=walk(artifact_id, lambda i: self._children.get(i.int, ())),
        )

    # -- dead letters ----------------------------------------------------------------------------

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it."""
        self._dead[letter.id] = letter

    async def dead_letters(self) -> list[DeadLetter]:
        """Oldest first."""
        return list(self._dead.values())

    async def take_dead_letter(self, letter_id: UUID) -> DeadLetter | None:
        """Pop it."""
        return self._dead.pop(letter_id, None)

    # -- audit -----------------------------------------------------------------------------------

    async def record_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        """Append."""
        self._denials.extend(denials)

    async def denials(self) -> list[VisibilityDenial]:
        """A copy."""
        return list(self._denials)
