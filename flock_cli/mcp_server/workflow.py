"""How far one workflow (one correlation id) got, read from the board.

The flock keeps no per-workflow counters, but the board holds everything needed: a workflow is
*settled* when none of its artifacts waits to be routed, no delivery of its artifacts is pending,
leased (running, or backing off before a retry) or held in a partial batch. What may still wait
then is a gate (an AND gate or join missing an artifact from outside) and what failed is in the
dead letters. The same answer holds on a board other processes share, since it is the board's.

The board moves while it is read, so one reading can miss a step (a run that finished and whose
output was routed between two reads). :func:`read_workflow` reads in the order work flows
backwards (unrouted artifacts, then batches, then deliveries) between two looks at the board's
head, and a caller trusts ``settled`` only when two readings agree and the head did not move
(:func:`settled_twice`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery, DeliveryStatus

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.store.contract import BlackboardStore, DeadLetter

__all__ = ["WorkflowState", "read_workflow", "settled_twice"]


@dataclass
class WorkflowState:
    """One workflow's artifacts (every one, oldest first: the caller filters what it may show)
    and the work still open on them."""

    correlation_id: UUID
    artifacts: list[Artifact]
    running: int = 0
    """Deliveries of its artifacts pending or leased: runs queued, going or backing off."""
    unrouted: int = 0
    """Its artifacts not routed to their consumers yet."""
    batched: int = 0
    """Units of it waiting in partial batches (they run at the batch's size or timeout)."""
    gated: dict[str, int] = field(default_factory=dict)
    """Agents with its artifacts waiting in a gate for the rest: agent -> artifacts waiting."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    """Runs of it that failed for good or were held (breaker, budget, visibility)."""
    head: tuple[int, int] = (0, 0)
    """The board's head before and after the reading (equal: nothing was appended meanwhile)."""

    @property
    def settled(self) -> bool:
        """Nothing of this workflow is queued, running, unrouted or batched."""
        return not (self.running or self.unrouted or self.batched) and self.head[0] == self.head[1]


def settled_twice(first: WorkflowState, second: WorkflowState) -> bool:
    """Two readings, one after the other, both settled with nothing appended in between."""
    return first.settled and second.settled and first.head[1] == second.head[0]


async def read_workflow(store: BlackboardStore, correlation_id: UUID) -> WorkflowState:
    """The state of the workflow ``correlation_id`` on ``store`` now."""
    before = await store.head()
    page = await store.query(ArtifactQuery(correlation_id=correlation_id), viewer=UNRESTRICTED)
    ids = {a.id for a in page.items}
    state = WorkflowState(correlation_id, page.items)
    if not ids:
        state.head = (before, await store.head())
        return state
    # Upstream first: an artifact leaves "unrouted" for a batch or a delivery, a batch for a
    # delivery, so whatever moves during the reading is met again further down.
    state.unrouted = sum(1 for a in await store.unrouted() if a.id in ids)
    state.batched = sum(1 for b in await store.batch_entries() if not ids.isdisjoint(b.artifact_ids))
    for status in (DeliveryStatus.PENDING, DeliveryStatus.LEASED):
        state.running += sum(
            1 for d in await store.deliveries(status=status) if not ids.isdisjoint(d.artifact_ids)
        )
    for entry in await store.gate_entries():
        if entry.artifact_id in ids:
            agent = entry.sub_key.rpartition("#")[0]
            state.gated[agent] = state.gated.get(agent, 0) + 1
    state.dead_letters = [
        letter for letter in await store.dead_letters() if not ids.isdisjoint(letter.artifact_ids)
    ]
    state.head = (before, await store.head())
    return state
