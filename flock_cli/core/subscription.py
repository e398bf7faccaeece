"""A subscription: which artifacts wake an agent, and how they are grouped into one run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from flock_cli.core.artifact import Artifact
from flock_cli.core.specs import BatchSpec, JoinSpec

__all__ = ["Mode", "ReadyRun", "Subscription"]

Mode = Literal["events", "direct", "both"]
DeliveryMode = Literal["shared", "exclusive"]
Predicate = Callable[[Any], Any]


@dataclass(eq=False)
class Subscription:
    """One ``consumes(...)`` call of one agent.

    Several types form an AND gate (a repeated type a count gate); ``join`` correlates the gate's
    artifacts into groups; ``batch`` collects runs into batches. ``group`` is the exclusive-delivery
    group (the agent's own name unless given); it is None for shared delivery.
    """

    agent: str
    index: int
    type_names: tuple[str, ...]
    models: dict[str, type[BaseModel]]
    where: tuple[Predicate, ...] = ()
    from_agents: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    join: JoinSpec | None = None
    batch: BatchSpec | None = None
    delivery: DeliveryMode = "exclusive"
    group: str | None = None
    mode: Mode = "both"
    priority: int = 0
    required: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.required = Counter(self.type_names)

    @property
    def accepts_events(self) -> bool:
        """Reacts to published artifacts."""
        return self.mode in ("events", "both")

    @property
    def accepts_direct(self) -> bool:
        """Serves direct invocations (``Flock.arun``)."""
        return self.mode in ("direct", "both")

    @property
    def is_simple(self) -> bool:
        """One artifact makes one run: a single type, no join, no batch."""
        return len(self.type_names) == 1 and self.join is None and self.batch is None

    @property
    def gathers(self) -> bool:
        """Needs several artifacts per run (an AND/count gate or a join)."""
        return len(self.type_names) > 1 or self.join is not None

    def header_rejection(self, artifact: Artifact) -> str | None:
        """Why the artifact's metadata rules it out (producer, channels), or None if it passes."""
        if self.from_agents is not None and artifact.produced_by not in self.from_agents:
            return "from_agents"
        if self.channels is not None and not (artifact.tags & self.channels):
            return "channels"
        return None


@dataclass(eq=False)
class ReadyRun:
    """Artifacts ready for one run of one agent, before they become a stored delivery."""

    subscription: Subscription
    artifacts: Sequence[Artifact]
    groups: list[list[Artifact]] = field(default_factory=list)
    batch_trigger: str | None = None
