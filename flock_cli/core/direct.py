"""Work the flock is handed directly: ``Flock.arun`` on chosen inputs, and dead letters offered
again with ``Flock.retry_dead_letter``. Both bypass normal routing (one run, one agent)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import BaseModel

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.envelope import model_payload
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.errors import InvalidDeclarationError, UsageError
from flock_cli.store.contract import UNRESTRICTED
from flock_cli.store.records import RoutingTx

if TYPE_CHECKING:
    from flock_cli.core.publishing import Publisher
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler

__all__ = ["DirectRuns"]


class DirectRuns:
    """``Flock.arun`` and ``Flock.retry_dead_letter`` of one flock. ``ready`` attaches the flock
    to its board (a no-op once attached)."""

    def __init__(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        publisher: Publisher,
        ready: Callable[[], Awaitable[object]],
    ) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self._publisher = publisher
        self._ready = ready

    async def run(self, target: Agent, inputs: tuple[BaseModel, ...]) -> list[Artifact]:
        """Run ``target`` directly on ``inputs`` (all in one run) and return its outputs (see
        ``Flock.arun``)."""
        runtime = self._runtime
        if not inputs:
            raise UsageError(f"arun('{target.name}') needs at least one input")
        correlation = runtime.new_id()
        built = [
            runtime.build(
                type(obj), model_payload(obj, "arun"), produced_by="external", correlation_id=correlation
            )
            for obj in inputs
        ]
        types = {a.type for a in built}
        sub = next((s for s in target.subscriptions if s.accepts_direct and types <= set(s.type_names)), None)
        if sub is None:
            raise InvalidDeclarationError(
                f"agent '{target.name}' has no subscription with mode 'direct' or 'both' consuming"
                f" {', '.join(sorted(types))}"
            )
        return await self._run_direct(target, sub, built)

    async def _run_direct(self, target: Agent, sub: Subscription, built: list[Artifact]) -> list[Artifact]:
        """Store ``built`` and run ``target`` on them in one delivery; return its outputs once the
        flock is idle again."""
        await self._ready()
        scheduler = self._scheduler
        done: asyncio.Future[list[Artifact]] = asyncio.get_running_loop().create_future()
        scheduler.hold()
        try:
            scheduler.in_flight.update(a.id for a in built)
            with self._runtime.tracer.publishing(built) as span:
                await self._publisher.append(built, span)
                scheduler.collector.published += len(built)
                tx = RoutingTx(routed=[a.id for a in built], claims=[(a.id, target.name) for a in built])
                job = scheduler.plan(
                    ReadyRun(sub, built, [built] if sub.gathers else []), tx, trigger="direct"
                )
                delivery = job.payload[0]
                scheduler.direct[delivery.id] = done
                await scheduler.commit(tx, [job])
        finally:
            scheduler.done_routing(a.id for a in built)
            scheduler.release()
        try:
            outputs = await done
        finally:
            scheduler.direct.pop(delivery.id, None)
        await scheduler.settle("idle")
        return outputs

    async def retry(self, letter_id: UUID) -> None:
        """Offer a dead letter's artifacts to its agent again; the letter is removed.

        Visibility is checked as routing checks it: a letter of an exclusive group shared by several
        agents goes back to the members that may see (and accept) its artifacts; a letter of one
        agent is refused, and kept, if that agent may not see them now. Embargoed letters are routed
        again, so they wait for their embargo once more.
        """
        runtime = self._runtime
        letters = {letter.id: letter for letter in await runtime.store.dead_letters()}
        letter = letters.get(letter_id)
        if letter is None:
            raise UsageError(f"No dead letter with id {letter_id}")
        scheduler = self._scheduler
        router = scheduler.router
        index = letter.subscription if letter.subscription is not None else 0
        if letter.agent.startswith("group:"):
            members = router.group_members(letter.agent.removeprefix("group:"))
            if not members:
                raise UsageError(
                    f"Dead letter {letter_id} names {letter.agent}, which this flock does not have"
                )
        else:
            agent = runtime.agent(letter.agent)
            if index >= len(agent.subscriptions):
                raise UsageError(
                    f"Dead letter {letter_id} names subscription #{index} that '{agent.name}' no longer has"
                )
            own = agent.subscriptions[index]
            claim = router.claim_key(own)
            members = router.group_members(own.group or "") if claim != agent.name else {agent.name: own}
        artifacts = await runtime.store.get_many(letter.artifact_ids, viewer=UNRESTRICTED)
        if len(artifacts) != len(letter.artifact_ids):
            raise UsageError(f"Dead letter {letter_id} refers to artifacts that are no longer on the board")
        await self._ready()
        sub = next(iter(members.values()))
        if letter.reason != "embargoed":
            allowed = router.eligible(artifacts, members, runtime.clock.now())
            if not allowed:
                hidden = {a.id: a.visibility.describe() for a in artifacts}
                raise UsageError(
                    f"Dead letter {letter_id}: no agent of {', '.join(members)} may see its artifacts now"
                    f" ({', '.join(f'{i} {v}' for i, v in hidden.items())}); it is kept"
                )
            members, sub = allowed, next(iter(allowed.values()))
        if await runtime.store.take_dead_letter(letter_id) is None:
            raise UsageError(f"Dead letter {letter_id} was taken by someone else")
        scheduler.hold()
        try:
            if letter.reason == "embargoed":
                await scheduler.route(artifacts, list(members.values()))
            else:
                tx = RoutingTx()
                run = ReadyRun(sub, artifacts, [artifacts] if sub.gathers else [])
                job = scheduler.plan(
                    run, tx, trigger="redelivery", queue=router.claim_key(sub), members=members
                )
                await scheduler.commit(tx, [job])
        finally:
            scheduler.release()
