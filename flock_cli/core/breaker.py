"""The circuit breaker's counts: runs each agent started within each workflow.

The breaker exists to stop runaway loops (a writer and a critic that never agree), and a loop
lives inside one workflow: everything derived from one input shares its correlation id. So runs
are counted per (agent, correlation id), never per process: a ``flock run --watch`` server that
serves a million independent inputs never trips, while one input's loop trips after
``max_agent_iterations`` runs of one agent.

The table is bounded: it keeps the most recently active pairs (a loop that is running is always
recent) and forgets the least recently active ones, so a long-lived server's memory stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

__all__ = ["BreakerCounts"]

DEFAULT_CAPACITY = 10_000


class BreakerCounts:
    """Runs started per (agent, correlation id), the least recently active forgotten first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._counts: OrderedDict[tuple[str, UUID | None], int] = OrderedDict()

    def count(self, agent: str, correlation_id: UUID | None) -> int:
        """Count one more run of ``agent`` in the workflow ``correlation_id``; returns the total."""
        key = (agent, correlation_id)
        total = self._counts.pop(key, 0) + 1
        self._counts[key] = total  # now the most recently active
        if len(self._counts) > self.capacity:
            self._counts.popitem(last=False)
        return total

    def of(self, agent: str, correlation_id: UUID | None) -> int:
        """Runs of ``agent`` counted in the workflow ``correlation_id``."""
        return self._counts.get((agent, correlation_id), 0)

    def highest_by_agent(self) -> dict[str, int]:
        """For each agent, the most runs it started in any one workflow (for status displays)."""
        highest: dict[str, int] = {}
        for (agent, _), total in self._counts.items():
            if total > highest.get(agent, 0):
                highest[agent] = total
        return highest

    def __len__(self) -> int:
        return len(self._counts)

    def clear(self) -> None:
        """Forget every count (a new summary period)."""
        self._counts.clear()
