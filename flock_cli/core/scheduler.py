"""The scheduler: routes artifacts to subscriptions, turns ready runs into deliveries, runs them,
and knows when the flock is idle.

It owns everything bound to an event loop (the idle event, the routing lock, timers and run
tasks). ``bind()`` re-creates those when the flock is used from a new loop, as ``Flock.run()``
does on every call, and re-arms the timers that were lost with the old loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.breaker import BreakerCounts
from flock_cli.core.dispatcher import Dispatcher, Job
from flock_cli.core.gathering import Batcher, Gate
from flock_cli.core.router import Router, typed_loader
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import Failure, LiveStatus, PendingEmbargo, SummaryCollector
from flock_cli.store.contract import Delivery, denial
from flock_cli.store.records import RoutingTx

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.runtime import Runtime

__all__ = ["Embargo", "Runs", "Scheduler"]


@dataclass(eq=False)
class Embargo:
    """An artifact that will be offered to ``claim`` (an agent, or an exclusive group shared by
    several agents) when its embargo lifts, through ``subscriptions`` (every subscription of the
    agent or its group's members that the embargo held back; they are offered together, in one
    routing step, so the artifact is claimed once)."""

    artifact: Artifact
    claim: str
    subscriptions: list[Subscription]
    lifts_at: datetime


class Runs(Protocol):
    """What the scheduler asks of the runner (:class:`~flock_cli.core.runner.RunExecutor`)."""

    async def attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool
    ) -> float | None:
        """One attempt at a delivery; the back-off delay when it should be retried."""
        ...

    async def abandon(self, agent: Agent, delivery: Delivery, run: ReadyRun, why: str) -> None:
        """Keep a run that was cancelled mid-flight."""
        ...

    async def leave(self, agent: str, delivery: Delivery, run: ReadyRun) -> None:
        """Keep a run the flock stopped before it started."""
        ...


class Scheduler:
    """Routing, dispatching and idle detection for one Flock.

    Built in two steps, since the runner and the board session need the scheduler too:
    ``connect`` hands it the runs it starts and how to rebuild gates and batches from the store.
    """

    _runs: Runs
    _reload_gathering: Callable[[], Awaitable[object]]

    def __init__(self, runtime: Runtime, max_concurrency: int | None) -> None:
        self._runtime = runtime
        self.collector = SummaryCollector()
        self.tracer = runtime.tracer
        self.router = Router(runtime.agents, self.collector, runtime.tracer)
        self.dispatcher = Dispatcher(self._start_job, max_concurrency)
        self.iterations = BreakerCounts()  # runs per (agent, workflow), for the circuit breaker
        self.budget_stop: tuple[str, str] | None = None  # set when a budget with on_exhausted="stop" ran out
        self.embargoes: dict[tuple[UUID, str], Embargo] = {}  # by (artifact, claim)
        self._unsynced_claims: Counter[tuple[UUID, str]] = Counter()  # written, commit not awaited
        self.direct: dict[UUID, asyncio.Future[list[Artifact]]] = {}
        self.in_flight: set[UUID] = set()  # appended by this process, not routed yet
        self.active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever a unit of work ends or waits in a queue
        self._stopping = asyncio.Event()  # set when the flock starts no new runs
        self._route_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.Task[Any]] = set()

    def connect(self, runs: Runs, reload_gathering: Callable[[], Awaitable[object]]) -> None:
        """Hand the scheduler the runner of its jobs and the board session's ``reload_gathering``
        (called when a routing step failed to commit and memory may be ahead of the store)."""
        self._runs = runs
        self._reload_gathering = reload_gathering

    # -- the event loop --------------------------------------------------------------------------

    def bind(self) -> None:
        """Attach to the running event loop (re-creating loop-bound state after a loop change)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        first = self._loop is None
        self._loop = loop
        self._idle = asyncio.Event()
        self._progress, self._stopping = asyncio.Event(), asyncio.Event()
        self._route_lock = asyncio.Lock()
        self._tasks, self._timers = set(), set()
        if self.active:
            # Runs of a closed loop were cancelled with it; their work is reported, not pretended.
            self.report_crash(RuntimeError(f"{self.active} runs were abandoned when their event loop closed"))
            self.active = 0
        self._idle.set()
        if not first:
            self.rearm_timers()

    def rearm_timers(self) -> None:
        """Start the timers of embargoes, join windows and batches (after a restore or a new loop)."""
        now = self._runtime.clock.now()
        for embargo in self.embargoes.values():
            self.after(max(0.0, (embargo.lifts_at - now).total_seconds()), self._lift, embargo)
        for sub, gate in self.router.gates.items():
            if sub.join is not None and sub.join.window is not None:
                for group in gate.groups.values():
                    left = sub.join.window - (now - group.opened_at).total_seconds()
                    self.after(max(0.0, left), self._expire_group, gate, group.key, group.opened_at)
        for sub, batcher in self.router.batchers.items():
            if batcher.units and sub.batch is not None and sub.batch.within is not None:
                self.after(sub.batch.within, self._flush_batch, batcher, batcher.generation)

    # -- idle accounting -------------------------------------------------------------------------

    def hold(self) -> None:
        """One more unit of work in flight."""
        self.active += 1
        self._idle.clear()

    def release(self) -> None:
        """One unit of work finished."""
        self.active -= 1
        self._progress.set()
        if self.active == 0:
            self._idle.set()

    async def stop_starting(self, flush_trigger: str) -> None:
        """Start no new runs: flush partial batches (their runs wait like the others), wait until
        every run in flight is over, then leave the waiting runs (``RunExecutor.leave``)."""
        self.dispatcher.paused = True
        self._stopping.set()
        while True:
            if any(b.units for b in self.router.batchers.values()):
                await self.flush_all(flush_trigger)
            if self.active <= self.dispatcher.queued:  # everything left is waiting for a slot
                break
            self._progress.clear()
            await self._progress.wait()
        await self.leave_queued()

    async def abort_runs(self) -> None:
        """Cancel every run in flight and leave the waiting ones (a shutdown that timed out)."""
        self.dispatcher.paused = True  # cancelled runs free slots: nothing may take them
        self._stopping.set()
        await self.cancel_runs()
        await self.leave_queued()

    async def leave_queued(self) -> None:
        """Hand every queued run to ``RunExecutor.leave``: kept on a durable board, else a dead letter."""
        runs = self._runs
        for job in self.dispatcher.take_queued():
            delivery, run, _ = job.payload
            try:
                await runs.leave(job.agent or run.subscription.agent, delivery, run)
            finally:
                self.release()

    async def backoff(self, seconds: float) -> None:
        """Sleep before a retry, cut short when the flock stops (the retry then waits in the queue)."""
        if self._stopping.is_set():
            return
        sleeper = asyncio.ensure_future(self._runtime.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def settle(self, flush_trigger: str) -> None:
        """Wait until nothing is queued, running or backing off; flush partial batches on the way."""
        while True:
            await self._idle.wait()
            if any(b.units for b in self.router.batchers.values()):
                await self.flush_all(flush_trigger)
                continue
            if self.active == 0:
                return

    def spawn(self, coro: Coroutine[Any, Any, Any], bucket: set[asyncio.Task[Any]] | None = None) -> None:
        """Run ``coro`` as a tracked background task."""
        tasks = self._tasks if bucket is None else bucket
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def report_crash(self, error: BaseException) -> None:
        """Record an exception that escaped a background task (a runtime bug or a broken store)."""
        self.collector.failures.append(
            Failure(
                agent="<runtime>",
                error_type=type(error).__name__,
                error=str(error),
                stage="runtime",
                attempts=0,
                artifact_ids=[],
            )
        )

    def after(self, delay: float, action: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``action(*args)`` after ``delay`` seconds of the flock's clock; timers do not hold idle."""

        async def timer() -> None:
            await self._runtime.clock.sleep(delay)
            if self._runtime.state.closed:
                return
            try:
                await action(*args)
            except Exception as error:
                self.report_crash(error)

        self.spawn(timer(), self._timers)

    async def stop_timers(self) -> None:
        """Cancel every pending timer (at shutdown)."""
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)

    async def cancel_runs(self) -> None:
        """Cancel every run task (a shutdown that timed out)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> LiveStatus:
        """What runs and waits now, and the counters of the current summary period."""
        by_queue = self.dispatcher.queued_by_queue()
        queued = {name: by_queue.pop(name, 0) for name in self._runtime.agents}
        # what is left waits for any member of an exclusive group
        queued.update((f"group {name}", count) for name, count in by_queue.items())
        return self.collector.live(dict(self.dispatcher.running_by_agent), queued)

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

    # -- routing ---------------------------------------------------------------------------------

    async def route(self, artifacts: Sequence[Artifact], only: Sequence[Subscription] | None = None) -> None:
        """Offer artifacts to every subscription of their type (or only to ``only``), one atomic
        store step per artifact, then start the runs that became ready."""
        jobs: list[Job] = []
        claims: list[tuple[UUID, str]] = []
        started = time.time_ns()
        try:
            async with self._route_lock:
                for artifact in artifacts:
                    fresh = only is None and artifact.id in self.in_flight
                    jobs += await self._route_one(artifact, only, claims, fresh=fresh)
            await self._start_after_sync(jobs, claims)
        except BaseException as exc:
            self.tracer.child("flock.schedule", started, "error", f"{type(exc).__name__}: {exc}")
            raise
        else:
            attributes: dict[str, Any] = {"flock.artifacts": len(artifacts), "flock.deliveries": len(jobs)}
            if jobs:
                attributes["flock.agents"] = ",".join(sorted({job.queue for job in jobs}))
            self.tracer.child("flock.schedule", started, attributes=attributes)
        finally:
            # Only now are the routing steps committed: until then a poll of the board would
            # still see these artifacts as unrouted and must leave them alone.
            self.in_flight.difference_update(a.id for a in artifacts)

    async def poll_board(self) -> int:
        """Route artifacts other processes (or a crashed run) left unrouted; returns how many."""
        jobs: list[Job] = []
        claims: list[tuple[UUID, str]] = []
        found: list[Artifact] = []
        try:
            async with self._route_lock:
                found = [a for a in await self._runtime.store.unrouted() if a.id not in self.in_flight]
                self.in_flight.update(a.id for a in found)
                if found:
                    with self.tracer.publishing(found, "flock.adopt"):
                        for artifact in found:
                            self.collector.published += 1
                            jobs += await self._route_one(artifact, None, claims, fresh=True)
            await self._start_after_sync(jobs, claims)
        finally:
            self.in_flight.difference_update(a.id for a in found)
        return len(found)

    async def _start_after_sync(self, jobs: list[Job], claims: Sequence[tuple[UUID, str]] = ()) -> None:
        # Routing steps are written in order under the lock; their one shared commit happens
        # outside it, so concurrent routing (many runs finishing at once) shares a commit.
        try:
            await self._runtime.store.sync()
        except Exception:
            # The store rolled the steps back, but gates and batches in memory already moved on:
            # rebuild them from what the store actually holds, then let the caller see the error.
            await self._reload_gathering()
            raise
        finally:
            self._unsynced_claims.subtract(claims)  # committed (or rolled back): the store knows
            self._unsynced_claims += Counter()  # drops the zero counts
        for job in jobs:
            self._start(job)

    def _start(self, job: Job) -> None:
        self.hold()  # released once, when the job's run is over
        self.dispatcher.submit(job)

    async def _route_one(
        self,
        artifact: Artifact,
        only: Sequence[Subscription] | None,
        claims: list[tuple[UUID, str]],
        *,
        fresh: bool = False,
    ) -> list[Job]:
        """Write one artifact's routing step; returns the jobs to start once it is durable (the
        step's claims are added to ``claims``).

        ``fresh`` means the artifact was never routed, so nobody can have claimed it yet (claims are
        only written by routing steps, in the same commit that marks the artifact routed) and the
        store need not be asked. Otherwise the store's claims are read, together with the claims
        this scheduler wrote whose commit is still pending (a store may group commits, and an
        earlier step of this loop turn must count).
        """
        router, store = self.router, self._runtime.store
        now = self._runtime.clock.now()
        tx = RoutingTx(routed=[artifact.id] if only is None else [])
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
                consumers.update(c for (a, c) in self._unsynced_claims if a == artifact.id)
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
                self.after(sub.join.window, self._expire_group, gate, group.key, group.opened_at)
            for batcher, generation in started:
                assert sub.batch is not None and sub.batch.within is not None
                self.after(sub.batch.within, self._flush_batch, batcher, generation)
            jobs.extend(self.plan(run, tx) for run in runs)
        for claim, (sub, members) in group_runs.items():
            jobs.append(self.plan(ReadyRun(sub, [artifact]), tx, queue=claim, members=members))
        if tx:
            await store.commit_routing(tx)
            claims.extend(tx.claims)
            self._unsynced_claims.update(tx.claims)
        return jobs

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
            self.after((lifts - now).total_seconds(), self._lift, embargo)
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

    # -- running ---------------------------------------------------------------------------------

    def plan(
        self,
        run: ReadyRun,
        tx: RoutingTx,
        *,
        queue: str | None = None,
        members: dict[str, Subscription] | None = None,
        trigger: Literal["event", "direct", "redelivery"] = "event",
    ) -> Job:
        """Add a delivery for ``run`` to ``tx`` and return the job that will run it after the commit."""
        sub = run.subscription
        members = members or {sub.agent: sub}
        delivery = Delivery(
            id=self._runtime.new_id(),
            agent=queue or sub.agent,
            artifact_ids=tuple(a.id for a in run.artifacts),
            created_at=self._runtime.clock.now(),
            priority=max(s.priority for s in members.values()),
            trigger=trigger,
            batch_trigger=run.batch_trigger,
            group_sizes=tuple(len(g) for g in run.groups),
            subscription=sub.index,
        )
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

    def resume_delivery(self, delivery: Delivery, artifacts: list[Artifact]) -> bool:
        """Dispatch a delivery found pending in the store (after a restart) to the agents that may
        take it: for an exclusive group, only the members that can see its artifacts and accept
        them, as when it was routed. False when no agent may take it (nothing is dispatched)."""
        agent_subs: dict[str, Subscription] = {}
        if delivery.agent.startswith("group:"):
            agent_subs = dict(self.router.group_members(delivery.agent.removeprefix("group:")))
        else:
            agent = self._runtime.agent(delivery.agent)
            agent_subs = {agent.name: agent.subscriptions[delivery.subscription]}
        agent_subs = self.router.eligible(artifacts, agent_subs, self._runtime.clock.now())
        if not agent_subs:
            return False
        first = next(iter(agent_subs.values()))
        groups, at = [], 0
        for size in delivery.group_sizes:
            groups.append(artifacts[at : at + size])
            at += size
        run = ReadyRun(first, artifacts, groups, delivery.batch_trigger)
        self._start(self._job(delivery, run, agent_subs))
        return True

    def _start_job(self, job: Job) -> None:
        self.spawn(self._run_job(job))

    async def _run_job(self, job: Job) -> None:
        assert job.agent is not None
        agent = self._runtime.agents[job.agent]
        delivery, run, members = job.payload
        sub = members[agent.name]
        if sub is not run.subscription:  # a group member took a run another member claimed
            run = ReadyRun(sub, run.artifacts, run.groups, run.batch_trigger)
        first_try = not job.started
        job.started = True
        resubmitted = False
        runs = self._runs
        try:
            try:
                retry_in = await runs.attempt(agent, delivery, run, count_run=first_try)
            finally:
                self.dispatcher.finished(agent.name)
            if retry_in is not None:
                await self.backoff(retry_in)  # without holding a slot
                self.dispatcher.submit(job)
                resubmitted = True  # the job stays counted as active work
                self._progress.set()
        except asyncio.CancelledError:
            await runs.abandon(agent, delivery, run, "cancelled at shutdown")
            raise
        except Exception as error:
            self.report_crash(error)
            self.resolve_direct(delivery.id, error=error)
        finally:
            if not resubmitted:
                self.release()  # exactly once per job, whatever happened

    def resolve_direct(
        self, delivery_id: UUID, outputs: list[Artifact] | None = None, error: BaseException | None = None
    ) -> None:
        """Settle the future of a direct (``arun``) delivery, if there is one."""
        future = self.direct.get(delivery_id)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outputs or [])
