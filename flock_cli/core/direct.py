"""Work the flock is handed directly: ``Flock.arun`` on chosen inputs, and dead letters offered
again with ``Flock.retry_dead_letter``. Both bypass normal routing (one run, one agent)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.errors import UsageError
from flock_cli.store.contract import UNRESTRICTED
from flock_cli.store.records import RoutingTx

if TYPE_CHECKING:
    from flock_cli.core.orchestrator import Flock

__all__ = ["retry_letter", "run_direct"]


async def run_direct(flock: Flock, target: Agent, sub: Subscription, built: list[Artifact]) -> list[Artifact]:
    """Store ``built`` and run ``target`` on them in one delivery; return its outputs once the
    flock is idle again."""
    await flock._ready()
    scheduler = flock._scheduler
    done: asyncio.Future[list[Artifact]] = asyncio.get_running_loop().create_future()
    scheduler.hold()
    try:
        scheduler.in_flight.update(a.id for a in built)
        with flock.tracer.publishing(built) as span:
            await flock._append(built, span)
            scheduler.collector.published += len(built)
            tx = RoutingTx(routed=[a.id for a in built], claims=[(a.id, target.name) for a in built])
            job = scheduler.plan(ReadyRun(sub, built, [built] if sub.gathers else []), tx, trigger="direct")
            delivery = job.payload[0]
            scheduler.direct[delivery.id] = done
            await scheduler.commit(tx, [job])
    finally:
        scheduler.in_flight.difference_update(a.id for a in built)
        scheduler.release()
    try:
        outputs = await done
    finally:
        scheduler.direct.pop(delivery.id, None)
    await scheduler.settle("idle")
    return outputs


async def retry_letter(flock: Flock, letter_id: UUID) -> None:
    """Offer a dead letter's artifacts to its agent again; the letter is removed.

    Visibility is checked as routing checks it: a letter of an exclusive group shared by several
    agents goes back to the members that may see (and accept) its artifacts; a letter of one
    agent is refused, and kept, if that agent may not see them now. Embargoed letters are routed
    again, so they wait for their embargo once more.
    """
    letters = {letter.id: letter for letter in await flock.store.dead_letters()}
    letter = letters.get(letter_id)
    if letter is None:
        raise UsageError(f"No dead letter with id {letter_id}")
    scheduler = flock._scheduler
    router = scheduler.router
    index = letter.subscription if letter.subscription is not None else 0
    if letter.agent.startswith("group:"):
        members = router.group_members(letter.agent.removeprefix("group:"))
        if not members:
            raise UsageError(f"Dead letter {letter_id} names {letter.agent}, which this flock does not have")
    else:
        agent = flock.get_agent(letter.agent)
        if index >= len(agent.subscriptions):
            raise UsageError(
                f"Dead letter {letter_id} names subscription #{index} that '{agent.name}' no longer has"
            )
        own = agent.subscriptions[index]
        claim = router.claim_key(own)
        members = router.group_members(own.group or "") if claim != agent.name else {agent.name: own}
    artifacts = await flock.store.get_many(letter.artifact_ids, viewer=UNRESTRICTED)
    if len(artifacts) != len(letter.artifact_ids):
        raise UsageError(f"Dead letter {letter_id} refers to artifacts that are no longer on the board")
    await flock._ready()
    sub = next(iter(members.values()))
    if letter.reason != "embargoed":
        allowed = router.eligible(artifacts, members, flock.clock.now())
        if not allowed:
            hidden = {a.id: a.visibility.describe() for a in artifacts}
            raise UsageError(
                f"Dead letter {letter_id}: no agent of {', '.join(members)} may see its artifacts now"
                f" ({', '.join(f'{i} {v}' for i, v in hidden.items())}); it is kept"
            )
        members, sub = allowed, next(iter(allowed.values()))
    if await flock.store.take_dead_letter(letter_id) is None:
        raise UsageError(f"Dead letter {letter_id} was taken by someone else")
    scheduler.hold()
    try:
        if letter.reason == "embargoed":
            await scheduler.route(artifacts, list(members.values()))
        else:
            tx = RoutingTx()
            run = ReadyRun(sub, artifacts, [artifacts] if sub.gathers else [])
            job = scheduler.plan(run, tx, trigger="redelivery", queue=router.claim_key(sub), members=members)
            await scheduler.commit(tx, [job])
    finally:
        scheduler.release()
