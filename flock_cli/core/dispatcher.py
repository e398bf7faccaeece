"""Starts runs when concurrency allows, highest priority first.

Every run waits in a queue: the agent's own queue, or the queue of the exclusive group it was
delivered to (then any member of the group may take it). When a slot frees up (per-agent
``max_concurrency`` or the flock's global limit), the dispatcher starts the highest-priority
waiting run that some free agent can take; inside a group the highest-priority free member claims
it. Without limits every run starts immediately.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dispatcher", "Job"]


@dataclass(eq=False)
class Job:
    """A run waiting for a slot. ``candidates`` maps agent name to its subscription priority."""

    queue: str
    priority: int
    candidates: dict[str, int]
    payload: Any
    agent: str | None = None
    seq: int = field(default=0)
    started: bool = False


class Dispatcher:
    """Priority queues plus slot accounting; ``start(job)`` is called once the job holds a slot."""

    def __init__(self, start: Callable[[Job], None], global_limit: int | None = None) -> None:
        self._start = start
        self.global_limit = global_limit
        self.paused = False  # set when the flock stops: jobs still queue, none starts
        self.running = 0
        self.running_by_agent: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._queues: dict[str, list[tuple[int, int, Job]]] = {}
        self._seq = itertools.count()

    def set_agent_limit(self, agent: str, limit: int | None) -> None:
        """Per-agent concurrency (None: unlimited)."""
        if limit is None:
            self._limits.pop(agent, None)
        else:
            self._limits[agent] = limit

    def starts_at_once(self, candidates: Iterable[str]) -> bool:
        """True when a job for ``candidates`` cannot wait for a slot: no limit applies to it and
        the dispatcher is not paused."""
        if self.paused or self.global_limit is not None:
            return False
        limits = self._limits
        return not limits or not any(agent in limits for agent in candidates)

    @property
    def queued(self) -> int:
        """Runs waiting for a slot."""
        return sum(len(q) for q in self._queues.values())

    def queued_by_queue(self) -> dict[str, int]:
        """Waiting runs per queue (an agent's name, or an exclusive group's)."""
        return {name: len(queue) for name, queue in self._queues.items() if queue}

    def _free(self, agent: str) -> bool:
        limit = self._limits.get(agent)
        return limit is None or self.running_by_agent.get(agent, 0) < limit

    def _pick_agent(self, job: Job) -> str | None:
        best: tuple[int, int] | None = None
        chosen = None
        for agent, priority in job.candidates.items():
            if self._free(agent):
                rank = (priority, -self.running_by_agent.get(agent, 0))
                if best is None or rank > best:
                    best, chosen = rank, agent
        return chosen

    def submit(self, job: Job) -> None:
        """Queue a job and start whatever can start."""
        job.seq = next(self._seq)
        queue = self._queues.get(job.queue)
        if not self.paused and not queue and (self.global_limit is None or self.running < self.global_limit):
            agent = self._pick_agent(job)
            if agent is not None:  # fast path: nothing waits ahead of it
                self._launch(job, agent)
                return
        heapq.heappush(self._queues.setdefault(job.queue, []), (-job.priority, job.seq, job))
        self.pump()

    def _launch(self, job: Job, agent: str) -> None:
        job.agent = agent
        self.running += 1
        self.running_by_agent[agent] = self.running_by_agent.get(agent, 0) + 1
        self._start(job)

    def finished(self, agent: str) -> None:
        """A run of ``agent`` released its slot."""
        self.running -= 1
        self.running_by_agent[agent] -= 1
        self.pump()

    def pump(self) -> None:
        """Start waiting runs, highest priority first, while slots allow."""
        while not self.paused and (self.global_limit is None or self.running < self.global_limit):
            best: tuple[int, int] | None = None
            best_queue = None
            best_agent = None
            for name, queue in self._queues.items():
                if not queue:
                    continue
                _, _, job = queue[0]
                rank = (job.priority, -job.seq)
                if best is not None and rank <= best:
                    continue
                agent = self._pick_agent(job)
                if agent is not None:
                    best, best_queue, best_agent = rank, name, agent
            if best_queue is None or best_agent is None:
                return
            _, _, job = heapq.heappop(self._queues[best_queue])
            if not self._queues[best_queue]:
                del self._queues[best_queue]
            self._launch(job, best_agent)

    def take_queued(self) -> list[Job]:
        """Remove and return every waiting job, oldest first (when the flock stops starting work)."""
        jobs = sorted((job for queue in self._queues.values() for _, _, job in queue), key=lambda j: j.seq)
        self._queues.clear()
        return jobs
