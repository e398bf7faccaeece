"""State machines that turn single artifacts into runs: AND/count gates, joins and batches.

They are synchronous and hold no timers: the orchestrator feeds them artifacts, starts a timer
when they report a new window, and asks them to expire or flush when a timer fires.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime

from flock_cli.core.artifact import Artifact
from flock_cli.core.subscription import Subscription

__all__ = ["Batcher", "Gate", "OpenGroup"]


@dataclass(eq=False)
class OpenGroup:
    """Artifacts gathered for one key, waiting for the rest."""

    key: Hashable
    opened_at: datetime
    opened_seq: int
    buckets: dict[str, deque[Artifact]] = field(default_factory=dict)

    def artifacts(self) -> list[Artifact]:
        """Everything held, bucket by bucket."""
        return [a for bucket in self.buckets.values() for a in bucket]

    def missing(self, sub: Subscription) -> list[str]:
        """Type names still short, one entry per missing artifact."""
        return [t for t, n in sub.required.items() for _ in range(n - len(self.buckets.get(t, ())))]


class Gate:
    """An AND gate (several types), a count gate (a repeated type) or a join (with a key).

    Artifacts are grouped by the key the router gives them (the correlation id unless the
    subscription's join says otherwise; one group, key None, for ``by="arrival"``) and each group
    fires on its own whenever each type has its count, using its oldest waiting artifacts first;
    used artifacts never count again.
    """

    def __init__(self, subscription: Subscription) -> None:
        self.sub = subscription
        self.groups: OrderedDict[Hashable, OpenGroup] = OrderedDict()
        self._seq = 0

    def add(
        self, artifact: Artifact, key: Hashable, now: datetime
    ) -> tuple[list[Artifact] | None, OpenGroup | None]:
        """Add an artifact. Returns (completed group or None, newly opened group or None)."""
        self._seq += 1
        group = self.groups.get(key)
        opened = None
        if group is None:
            group = OpenGroup(key=key, opened_at=now, opened_seq=self._seq)
            self.groups[key] = group
            opened = group
        group.buckets.setdefault(artifact.type, deque()).append(artifact)
        if group.missing(self.sub):
            return None, opened
        completed = [group.buckets[t].popleft() for t in self.sub.type_names]
        if not any(group.buckets.values()):
            del self.groups[key]
        elif self.sub.join is not None:
            # Leftovers start a fresh window from now.
            group.opened_at, group.opened_seq = now, self._seq
            self.groups.move_to_end(key)
            opened = group
        return completed, opened

    def expire_by_count(self) -> list[OpenGroup]:
        """Groups that ``count_window`` later arrivals have outlived (joins only)."""
        join = self.sub.join
        if join is None or join.count_window is None:
            return []
        expired: list[OpenGroup] = []
        while self.groups:
            key, group = next(iter(self.groups.items()))
            if self._seq - group.opened_seq < join.count_window:
                break
            expired.append(self.groups.pop(key))
        return expired

    def expire(self, key: Hashable, opened_at: datetime) -> OpenGroup | None:
        """Remove the group ``key`` if it is still the one opened at ``opened_at`` (a window timer)."""
        group = self.groups.get(key)
        if group is None or group.opened_at != opened_at:
            return None
        return self.groups.pop(key)


class Batcher:
    """Collects runs (single artifacts or completed groups) until ``size`` or a flush."""

    def __init__(self, subscription: Subscription) -> None:
        self.sub = subscription
        self.units: list[list[Artifact]] = []
        self.generation = 0

    def add(self, unit: list[Artifact]) -> tuple[list[list[Artifact]] | None, bool]:
        """Add a unit. Returns (full batch or None, whether this unit started a new batch)."""
        started = not self.units
        self.units.append(unit)
        size = self.sub.batch.size if self.sub.batch else None
        if size is not None and len(self.units) >= size:
            return self.take(), started
        return None, started

    def take(self) -> list[list[Artifact]]:
        """Remove and return the buffered units (a new generation starts)."""
        units, self.units = self.units, []
        self.generation += 1
        return units
