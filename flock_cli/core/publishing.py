"""Publishing: where every publish of a Flock ends (appending artifacts to the board, routing them),
and replays (copies of chosen artifacts published as new work).

A publisher flock (``role="publisher"``) only appends: the orchestrator watching that board routes
what it finds. An orchestrator attaches to its board first, then appends and routes the artifacts
as one unit of work, so the flock is not idle in between.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING
from uuid import UUID

from flock_cli.core.artifact import Artifact
from flock_cli.errors import FlockClosedError, UsageError
from flock_cli.store.contract import UNRESTRICTED
from flock_cli.tracing.records import Span

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler

__all__ = ["Publisher"]


class Publisher:
    """Appends built artifacts to the board and, in an orchestrator, routes them.

    ``ready`` attaches the flock to its board (a no-op once attached).
    """

    def __init__(
        self, runtime: Runtime, scheduler: Scheduler, role: str, ready: Callable[[], Awaitable[object]]
    ) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self._role = role
        self._ready = ready

    async def publish(self, artifacts: list[Artifact]) -> None:
        """Append ``artifacts`` (already validated and built) and route them."""
        if self._role == "publisher":
            if self._runtime.state.closed:
                raise FlockClosedError("This flock was shut down; it takes no new work.")
            with self._runtime.tracer.publishing(artifacts) as span:
                await self.append(artifacts, span)  # the orchestrator watching the board routes them
            self._scheduler.collector.published += len(artifacts)
            return
        await self._ready()
        scheduler = self._scheduler
        scheduler.hold()
        # Only ids this call marks: a publish refused for an id being routed already (the same
        # artifact id published twice at once) must not unmark the other's.
        mine = [a.id for a in artifacts if a.id not in scheduler.in_flight]
        try:
            scheduler.in_flight.update(mine)
            with self._runtime.tracer.publishing(artifacts) as span:
                await self.append(artifacts, span)
                scheduler.collector.published += len(artifacts)
                await scheduler.route(artifacts)
        finally:
            scheduler.done_routing(mine)
            scheduler.release()

    async def replay(self, artifact_ids: Iterable[UUID]) -> list[Artifact]:
        """Publish copies of chosen artifacts as new work (see ``Flock.replay``)."""
        ids = list(artifact_ids)
        originals = await self._runtime.store.get_many(ids, viewer=UNRESTRICTED)
        missing = set(ids) - {a.id for a in originals}
        if missing:
            raise UsageError(f"Cannot replay unknown artifacts: {', '.join(sorted(map(str, missing)))}")
        copies = []
        for original in originals:
            model = self._runtime.registry.get(original.type)
            if model is None:
                raise UsageError(
                    f"Cannot replay {original.id}: type '{original.type}' is unknown to this flock"
                )
            copies.append(
                self._runtime.build(
                    model,
                    original.payload,
                    produced_by=original.produced_by,
                    correlation_id=original.correlation_id,
                    partition_key=original.partition_key,
                    tags=[*original.tags, f"replay-of:{original.id}"],
                    visibility=original.visibility,
                )
            )
        await self.publish(copies)
        return copies

    async def append(self, artifacts: list[Artifact], span: Span) -> None:
        """Append ``artifacts`` to the store, traced as ``store.append`` inside ``span``."""
        tracer = self._runtime.tracer
        started = time.time_ns()
        try:
            await self._runtime.store.append(artifacts)
        except BaseException as exc:
            tracer.record(span, "store.append", started, time.time_ns(), "error", str(exc))
            raise
        tracer.record(span, "store.append", started, time.time_ns())
