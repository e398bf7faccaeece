"""Routing: artifacts offered to the subscriptions of their type, in atomic store steps.

Each routing step (one artifact, or one timer firing) writes its claims, gate and batch changes,
denials, embargoes and deliveries to the store at once (``RoutingTx``); the runs it made ready start
once the step is durable. Embargoed artifacts wait for a timer (:mod:`flock_cli.core.timers`) and
are offered again when it fires. :class:`Routing` is the routing half of
:class:`~flock_cli.core.scheduler.Scheduler`, which adds the event loop, idle accounting and runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.dispatcher import Job
from flock_cli.core.gathering import Batcher, Gate
from flock_cli.core.router import Router, typed_loader
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import PendingEmbargo, SummaryCollector
from flock_cli.core.timers import Embargo, Timers
from flock_cli.store.contract import Delivery, DeliveryStatus, NotLeaderError, denial
from flock_cli.store.records import RoutingTx

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.runtime import Runtime

__all__ = ["Routing"]

_COUNTED_KEPT = 100_000  # ids Routing._counted keeps (about 10 MB at most)


class Routing:
    """Routing passes, embargoes and the deliveries they plan, for one Flock.

    A subclass starts the jobs whose routing step is durable (:meth:`_start`); the board session
    hands over ``_reload_gathering`` (see ``Scheduler.connect``).
    """

    _reload_gathering: Callable[[], Awaitable[object]]

    def __init__(self, runtime: Runtime, collector: SummaryCollector, timers: Timers) -> None:
        self._runtime = runtime
        self.collector = collector
        self.tracer = runtime.tracer
        self.router = Router(runtime.agents, collector, runtime.tracer)
        self.timers = timers
        self.embargoes: dict[tuple[UUID, str], Embargo] = {}  # by (artifact, claim)
        # Claims written whose commit is not awaited yet, by artifact: consumer -> steps holding it.
        self._unsynced_claims: dict[UUID, Counter[str]] = {}
        self.in_flight: set[UUID] = set()  # appended by this process, not routed yet
        # Published from outside by this process (and counted) while another routed the board:
        # not counted again when this one adopts them later. Bounded: a process that never
        # leads keeps the newest ones only.
        self._counted: dict[UUID, None] = {}
        # delivery -> attempt: leased by this process, its run not started yet (leased when it was
        # created, or taken from a shared board); the runner starts from that lease.
        self.preleased: dict[UUID, int] = {}
        self._settled: set[UUID] = set()  # routed, leaving ``in_flight`` when the pass ends
        # On a shared board: gates and batches were rebuilt since this process took the routing lock.
        self.restored = False
        self._route_lock = asyncio.Lock()

    def _start(self, job: Job) -> None:
        """Start a job whose routing step is committed."""
        raise NotImplementedError

    def _starts_at_once(self, candidates: Iterable[str]) -> bool:
        """True when a run for ``candidates`` will start as soon as its routing step commits (no
        concurrency limit can make it wait): its delivery is then created leased."""
        return False

    def done_routing(self, ids: Iterable[UUID]) -> None:
        """``ids`` leave ``in_flight``: their routing step committed (or they will not be routed
        here). While a routing pass holds the lock they leave when it ends: that pass may be a poll
        whose look at the board began before the step committed, so it saw them unrouted, and it
        must still find them in flight when it sorts out what it saw (else it routes them again)."""
        if self._route_lock.locked():
            self._settled.update(ids)
        else:
            self.in_flight.difference_update(ids)

    def _routing_pass(self) -> _RoutingPass:
        """Hold the routing lock; artifacts settled meanwhile leave ``in_flight`` at its end."""
        return _RoutingPass(self)

    def taken_by_none(self, artifacts: Sequence[Artifact]) -> frozenset[UUID]:
        """The ids of ``artifacts`` whose type no subscription of this flock takes, on a board no
        other process routes: their routing step would only mark them routed, so they are stored
        as routed instead (``BlackboardStore.complete``'s ``routed``). Empty on a shared board."""
        if self._runtime.store.shared:
            return frozenset()
        subscribed = self.router.subscriptions_for
        return frozenset(a.id for a in artifacts if not subscribed(a.type))

    def routes_here(self) -> bool:
        """Whether this flock routes: always, unless it shares its board with other processes;
        then only while it holds the routing lock and has rebuilt its gates and batches since it
        took it (until then what it publishes, and its runs' outputs, wait on the board)."""
        store = self._runtime.store
        return not store.shared or (store.leading and self.restored)

    async def drop_routing_state(self) -> None:
        """Forget gates, batches, embargoes and their timers: another process routes now, and
        this one rebuilds them from the board if it takes the routing lock back."""
        await self.timers.stop()
        self.timers.rebind()
        for gate in self.router.gates.values():
            gate.groups.clear()
        for batcher in self.router.batchers.values():
            batcher.units.clear()
        self.embargoes.clear()

    # -- embargoes and timers --------------------------------------------------------------------

    def rearm_timers(self) -> None:
        """Start the timers of embargoes, join windows and batches (after a restore or a new loop)."""
        now = self._runtime.clock.now()
        for embargo in self.embargoes.values():
            self.timers.after(max(0.0, (embargo.lifts_at - now).total_seconds()), self._lift, embargo)
        for sub, gate in self.router.gates.items():
            if sub.join is not None and sub.join.window is not None:
                for group in gate.groups.values():
                    left = sub.join.window - (now - group.opened_at).total_seconds()
                    self.timers.after(max(0.0, left), self._expire_group, gate, group.key, group.opened_at)
        for sub, batcher in self.router.batchers.items():
            if batcher.units and sub.batch is not None and sub.batch.within is not None:
                self.timers.after(sub.batch.within, self._flush_batch, batcher, batcher.generation)

    def pending_embargoes(self) -> list[PendingEmbargo]:
        """Deliveries waiting for an embargo to lift (one per artifact and agent or group)."""
        return [
            PendingEmbargo(
                agent=e.claim,
                agents=list(dict.fromkeys(s.agent for s in e.subscriptions)),
                artifact_id=e.artifact.id,
                lifts_at=e.lifts_at,
            )
            for e in self.embargoes.values()
        ]

    # -- routing passes --------------------------------------------------------------------------

    async def route(
        self,
        artifacts: Sequence[Artifact],
        only: Sequence[Subscription] | None = None,
        *,
        stored_routed: Collection[UUID] = frozenset(),
    ) -> None:
        """Offer artifacts to every subscription of their type (or only to ``only``), one atomic
        store step per artifact, then start the runs that became ready.

        ``stored_routed`` are outputs no subscription takes, stored routed with their run's
        completion (:meth:`taken_by_none`): they need no step, and are passed over entirely unless
        the routing pass is traced (its ``flock.schedule`` span then counts them as before)."""
        if stored_routed and not self.tracer.enabled:
            self.done_routing(stored_routed)
            artifacts = [a for a in artifacts if a.id not in stored_routed]
            if not artifacts:
                return
        jobs: list[Job] = []
        claims: list[tuple[UUID, str]] = []
        started = time.time_ns()
        if not self.routes_here():
            agents = self._runtime.agents
            self._counted.update((a.id, None) for a in artifacts if a.produced_by not in agents)
            while len(self._counted) > _COUNTED_KEPT:
                del self._counted[next(iter(self._counted))]
            self.done_routing(a.id for a in artifacts)  # the routing leader takes them
            return
        try:
            async with self._routing_pass():
                for artifact in artifacts:
                    fresh = only is None and artifact.id in self.in_flight
                    marked = bool(stored_routed) and artifact.id in stored_routed
                    jobs += await self._route_one(artifact, only, claims, fresh=fresh, marked=marked)
            await self._start_after_sync(jobs, claims)
        except BaseException as exc:
            self.tracer.child("flock.schedule", started, "error", f"{type(exc).__name__}: {exc}")
            raise
        else:
            if self.tracer.enabled:
                attributes: dict[str, Any] = {
                    "flock.artifacts": len(artifacts),
                    "flock.deliveries": len(jobs),
                }
                if jobs:
                    attributes["flock.agents"] = ",".join(sorted({job.queue for job in jobs}))
                self.tracer.child("flock.schedule", started, attributes=attributes)
        finally:
            # Only now are the routing steps committed: until then a poll of the board would
            # still see these artifacts as unrouted and must leave them alone.
            self.done_routing(a.id for a in artifacts)

    async def poll_board(self) -> int:
        """Route artifacts other processes (or a crashed run) left unrouted; returns how many."""
        jobs: list[Job] = []
        claims: list[tuple[UUID, str]] = []
        found: list[Artifact] = []
        if not self.routes_here():
            return 0
        try:
            async with self._routing_pass():
                found = [a for a in await self._runtime.store.unrouted() if a.id not in self.in_flight]
                self.in_flight.update(a.id for a in found)
                if found:
                    with self.tracer.publishing(found, "flock.adopt"):
                        for artifact in found:
                            jobs += await self._route_one(artifact, None, claims, fresh=True)
            if await self._start_after_sync(jobs, claims):
                # Counted once routed (a step that failed is adopted again): what was published
                # from outside (`flock publish`), unless this process published and counted it.
                # An agent's output was counted by the process whose run made it.
                for artifact in found:
                    if artifact.produced_by in self._runtime.agents:
                        continue
                    if artifact.id in self._counted:
                        del self._counted[artifact.id]
                    else:
                        self.collector.published += 1
        finally:
            self.done_routing(a.id for a in found)
        return len(found)

    async def _start_after_sync(self, jobs: list[Job], claims: Sequence[tuple[UUID, str]] = ()) -> bool:
        """Wait for the routing steps' commit and start their jobs; False when the steps were
        refused (another process routes the board now)."""
        # Routing steps are written in order under the lock; their one shared commit happens
        # outside it, so concurrent routing (many runs finishing at once) shares a commit.
        try:
            await self._runtime.store.sync()
        except NotLeaderError:
            # Another process took the shared board's routing lock over: the steps were refused,
            # the artifacts stay unrouted on the board, and that process routes them.
            await self.drop_routing_state()
            return False
        except Exception:
            # The store rolled the steps back, but gates and batches in memory already moved on:
            # rebuild them from what the store actually holds, then let the caller see the error.
            for job in jobs:
                self.preleased.pop(job.payload[0].id, None)  # the delivery was never written
            await self._reload_gathering()
            raise
        finally:
            self._forget_claims(claims)  # committed (or rolled back): the store knows
        shared = self._runtime.store.shared
        for job in jobs:
            # On a shared board every process leases its work from the board; only a direct run
            # (``arun``) belongs to the process that asked for it.
            if not shared or job.payload[0].trigger == "direct":
                self._start(job)
        return True

    async def _route_one(
        self,
        artifact: Artifact,
        only: Sequence[Subscription] | None,
        claims: list[tuple[UUID, str]],
        *,
        fresh: bool = False,
        marked: bool = False,
    ) -> list[Job]:
        """Write one artifact's routing step; returns the jobs to start once it is durable (the
        step's claims are added to ``claims``).

        ``marked`` means it was stored routed already (``route``'s ``stored_routed``): the step
        does not mark it again. ``fresh`` means the artifact was never routed, so nobody can have
        claimed it yet (claims are only written by routing steps, in the same commit that marks
        the artifact routed) and the store need not be asked. Otherwise the store's claims are
        read, together with the claims this scheduler wrote whose commit is still pending (a store
        may group commits, and an earlier step of this loop turn must count).
        """
        router, store = self.router, self._runtime.store
        now = self._runtime.clock.now()
        tx = RoutingTx(routed=[artifact.id] if only is None and not marked else [])
        jobs: list[Job] = []
        subs = list(only) if only is not None else router.subscriptions_for(artifact.type)
        consumers: set[str] | None = set() if fresh else None
        taken: set[str] = set()  # agents that get this artifact in this pass, by any subscription
        group_runs: dict[str, tuple[Subscription, dict[str, Subscription]]] = {}
        loaders: dict[type[BaseModel], Callable[[], BaseModel]] = {}  # one validation per model
        for sub in subs:
            if not sub.accepts_events or sub.agent in taken:
                continue
            agent = self._runtime.agents[sub.agent]
            if not artifact.visibility.allows(agent.identity, now=now):
                self._deny(artifact, sub, agent, now, tx)
                continue
            typed = _unread_payload
            if sub.where or sub.gathers:  # only predicates and join keys read the typed payload
                model = sub.models[artifact.type]
                typed = loaders.get(model) or loaders.setdefault(model, typed_loader(artifact, model))
            reason = router.screen(artifact, sub, typed, now)
            if reason is not None:
                self.collector.filtered[reason] += 1
                self.tracer.event(
                    "subscription.filtered", agent=sub.agent, artifact_id=artifact.id, reason=reason
                )
                continue
            if consumers is None:
                consumers = await store.consumers_of(artifact.id)
                consumers.update(self._unsynced_claims.get(artifact.id, ()))
            claim = router.claim_key(sub)
            if claim != sub.agent:  # an exclusive group shared by several agents
                if claim in group_runs:
                    group_runs[claim][1][sub.agent] = sub
                    taken.add(sub.agent)
                elif claim not in consumers:
                    tx.claims.append((artifact.id, claim))
                    group_runs[claim] = (sub, {sub.agent: sub})
                    taken.add(sub.agent)
                continue
            if sub.agent in consumers:
                continue  # the agent took this artifact before (idempotency)
            tx.claims.append((artifact.id, sub.agent))
            taken.add(sub.agent)
            runs, opened, started = router.gather(artifact, sub, typed, now, tx)
            for gate, group in opened:
                assert sub.join is not None and sub.join.window is not None
                self.timers.after(sub.join.window, self._expire_group, gate, group.key, group.opened_at)
            for batcher, generation in started:
                assert sub.batch is not None and sub.batch.within is not None
                self.timers.after(sub.batch.within, self._flush_batch, batcher, generation)
            for run in runs:
                jobs.append(self.plan(run, tx, now=now))
        for claim, (sub, members) in group_runs.items():
            jobs.append(self.plan(ReadyRun(sub, [artifact]), tx, queue=claim, members=members, now=now))
        if tx:
            await store.commit_routing(tx)
            claims.extend(tx.claims)
            unsynced = self._unsynced_claims
            for artifact_id, consumer in tx.claims:
                unsynced.setdefault(artifact_id, Counter())[consumer] += 1
        return jobs

    def _forget_claims(self, claims: Sequence[tuple[UUID, str]]) -> None:
        """``claims`` are committed or rolled back; only they are touched (the map may be large
        while many routing steps wait for one commit)."""
        unsynced = self._unsynced_claims
        for artifact_id, consumer in claims:
            counts = unsynced.get(artifact_id)
            if counts is None:
                continue
            counts[consumer] -= 1
            if counts[consumer] <= 0:
                del counts[consumer]
                if not counts:
                    del unsynced[artifact_id]

    def _deny(
        self, artifact: Artifact, sub: Subscription, agent: Agent, now: datetime, tx: RoutingTx
    ) -> None:
        tx.denials.append(denial(artifact, agent.identity, now, "schedule"))  # audit keeps both kinds
        lifts = self.router.embargo_lift(artifact, agent, now)
        if lifts is None:  # an embargo is work waiting, counted in ``embargoed``, not a denial
            self.collector.denials += 1
        self.tracer.event(
            "visibility.denied", agent=agent.name, artifact_id=artifact.id,
            visibility=artifact.visibility.describe(), embargoed_until=lifts.isoformat() if lifts else None,
        )  # fmt: skip
        if lifts is None:
            return
        claim = self.router.claim_key(sub)
        embargo = self.embargoes.get((artifact.id, claim))
        if embargo is None:
            self.collector.embargoed += 1
            embargo = self.embargoes[(artifact.id, claim)] = Embargo(artifact, claim, [sub], lifts)
            self.timers.after((lifts - now).total_seconds(), self._lift, embargo)
        elif sub not in embargo.subscriptions:
            embargo.subscriptions.append(sub)

    async def _lift(self, embargo: Embargo) -> None:
        # Every subscription the embargo held is offered in one routing step: the artifact is
        # claimed once for the agent or group, and a group offers it to all its members.
        if self.embargoes.pop((embargo.artifact.id, embargo.claim), None) is not None:
            await self.route([embargo.artifact], embargo.subscriptions)

    async def _expire_group(self, gate: Gate, key: Any, opened_at: datetime) -> None:
        group = gate.expire(key, opened_at)
        if group is not None:
            tx = RoutingTx()
            self.router.record_expired(gate.sub, group, "window", tx)
            await self.commit(tx, [])

    async def _flush_batch(self, batcher: Batcher, generation: int) -> None:
        if batcher.generation == generation and batcher.units:
            tx = RoutingTx()
            job = self.plan(self.router.batch_run(batcher, batcher.take(), "timeout", tx), tx)
            await self.commit(tx, [job])

    async def flush_all(self, trigger: str) -> None:
        """Flush every partial batch now (at idle and at shutdown)."""
        tx = RoutingTx()
        jobs = [self.plan(run, tx) for run in self.router.flush_all(trigger, tx)]
        await self.commit(tx, jobs)

    # -- deliveries ------------------------------------------------------------------------------

    def plan(
        self,
        run: ReadyRun,
        tx: RoutingTx,
        *,
        queue: str | None = None,
        members: dict[str, Subscription] | None = None,
        trigger: Literal["event", "direct", "redelivery"] = "event",
        now: datetime | None = None,
    ) -> Job:
        """Add a delivery for ``run`` to ``tx`` and return the job that will run it after the commit
        (created at ``now``: the routing step's time, else the clock's)."""
        sub = run.subscription
        runtime = self._runtime
        if now is None:
            now = runtime.clock.now()
        if members is None:
            members = {sub.agent: sub}
            priority = sub.priority
        else:
            priority = max([s.priority for s in members.values()])
        # Leased in the routing step that creates it, rather than by one more write when the run
        # starts, when the run starts as soon as the step commits. (On a shared board every
        # process leases its work from the board.)
        leased = not runtime.store.shared and self._starts_at_once(members)
        delivery = Delivery(
            runtime.new_id(),
            queue or sub.agent,
            tuple([a.id for a in run.artifacts]),
            now,
            DeliveryStatus.LEASED if leased else DeliveryStatus.PENDING,
            1 if leased else 0,
            runtime.owner if leased else None,
            now + timedelta(seconds=runtime.lease_ttl) if leased else None,
            priority,
            trigger,
            run.batch_trigger,
            tuple([len(g) for g in run.groups]),
            sub.index,
        )
        if leased:
            self.preleased[delivery.id] = 1
        tx.deliveries.append(delivery)
        return self._job(delivery, run, members)

    def _job(self, delivery: Delivery, run: ReadyRun, members: dict[str, Subscription]) -> Job:
        return Job(
            queue=delivery.agent,
            priority=delivery.priority,
            candidates={name: s.priority for name, s in members.items()},
            payload=(delivery, run, members),
        )

    async def commit(self, tx: RoutingTx, jobs: list[Job]) -> None:
        """Commit a routing step, then start its runs (a failed commit starts nothing)."""
        if tx:
            await self._runtime.store.commit_routing(tx)
        await self._start_after_sync(jobs)


def _unread_payload() -> BaseModel:
    raise AssertionError("a subscription without predicates or a join read its typed payload")


class _RoutingPass:
    """``async with`` a routing pass (see ``Routing._routing_pass``): a class rather than an
    ``asynccontextmanager``, which costs a generator and two extra awaits on every run."""

    __slots__ = ("_lock", "_routing")

    def __init__(self, routing: Routing) -> None:
        self._routing = routing
        self._lock = routing._route_lock  # the one acquired is the one released

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        routing = self._routing
        try:
            settled, routing._settled = routing._settled, set()
            routing.in_flight.difference_update(settled)
        finally:
            self._lock.release()
