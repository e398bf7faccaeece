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
        # Keyed by the correlation id's integer: hashing a UUID runs Python code, an int's does
        # not, and this table is touched by every run. An OrderedDict, not a dict: forgetting the
        # oldest pair of a plain dict (next(iter(d))) walks past every slot emptied before it.
        self._counts: OrderedDict[tuple[str, int | None], int] = OrderedDict()
        # agent -> {total: pairs of that agent with that total}: the status display's "most runs
        # in one workflow" without a walk over the whole table (asked for every few hundred ms).
        self._totals: dict[str, dict[int, int]] = {}

    def count(self, agent: str, correlation_id: UUID | None) -> int:
        """Count one more run of ``agent`` in the workflow ``correlation_id``; returns the total."""
        counts = self._counts
        key = (agent, None if correlation_id is None else correlation_id.int)
        before = counts.get(key, 0)
        total = counts[key] = before + 1
        counts.move_to_end(key)  # now the most recently active
        totals = self._totals.get(agent)
        if totals is None:
            totals = self._totals[agent] = {}
        if before:
            _take(totals, before)
        totals[total] = totals.get(total, 0) + 1
        if len(counts) > self.capacity:
            (oldest_agent, _), oldest_total = counts.popitem(last=False)
            _take(self._totals[oldest_agent], oldest_total)
        return total

    def of(self, agent: str, correlation_id: UUID | None) -> int:
        """Runs of ``agent`` counted in the workflow ``correlation_id``."""
        return self._counts.get((agent, None if correlation_id is None else correlation_id.int), 0)

    def highest_by_agent(self) -> dict[str, int]:
        """For each agent, the most runs it started in any one workflow (for status displays)."""
        return {agent: max(totals) for agent, totals in self._totals.items() if totals}

    def __len__(self) -> int:
        return len(self._counts)

    def clear(self) -> None:
        """Forget every count (a new summary period)."""
        self._counts.clear()
        self._totals.clear()


def _take(totals: dict[int, int], total: int) -> None:
    """One pair fewer with ``total`` runs."""
    left = totals[total] - 1
    if left:
        totals[total] = left
    else:
        del totals[total]
