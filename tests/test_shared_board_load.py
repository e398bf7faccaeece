"""A shared PostgreSQL board under load (what bench/scale_out.py found): routing passes of the
leader that overlap on a slow server, slots freed while a lease is being taken, and a new routing
leader whose own run ends while it rebuilds its gates."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flock_cli.core.membership as membership
from flock_cli import Flock, FunctionEngine
from flock_cli.core.artifact import Artifact
from flock_cli.store import UNRESTRICTED, ArtifactQuery, DeliveryStatus
from flock_cli.store.contract import Delivery
from flock_cli.store.records import RoutingTx
from tests.board_worker import Draft, Final, Pair, Seed

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

from flock_cli.store.postgres import PostgresBlackboardStore


class SlowCommits(PostgresBlackboardStore):
    """A board where routing steps that deliver to ``sink`` are slow to commit: each waits until a
    look for unrouted artifacts has read the board meanwhile. That look is answered late, after
    the step committed and the pass that made it ended, with what it read before (a slow server:
    the answer of a query started before a commit arrives after it)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.commits = asyncio.Event()
        self.held = 0  # routing steps waiting for ``commits``
        self.stale_reads = 0

    async def commit_routing_now(self, tx: RoutingTx, conn: Any = None) -> None:
        if any(d.agent == "sink" for d in tx.deliveries):
            self.held += 1
            await self.commits.wait()
            self.held -= 1
        await super().commit_routing_now(tx, conn)

    async def unrouted(self, limit: int = 1000) -> list[Artifact]:
        found = await super().unrouted(limit)
        if found and self.held:
            self.stale_reads += 1
            self.commits.set()
            while {a.id for a in await super().unrouted(limit)} & {a.id for a in found}:
                await asyncio.sleep(0.02)  # until the held step is on the board...
            await asyncio.sleep(0.3)  # ...and the pass that made it has ended
        return found


async def test_a_poll_that_read_the_board_before_a_routing_step_committed_does_not_route_again(
    postgres_url: str,
) -> None:
    """The routing leader routes its own runs' outputs at once, while its membership's pass routes
    what the board holds unrouted: two passes of one process. The pass that looked at the board
    before the other's step committed must leave that artifact alone (it routed it a second time:
    'an artifact in this routing step was already claimed', a failed routing pass)."""
    store = SlowCommits(postgres_url)

    def agents(flock: Flock) -> Flock:
        flock.agent("echo").consumes(Seed).publishes(Draft).with_engines(
            FunctionEngine(lambda inputs: Draft(n=inputs.first_as(Seed).n))
        )
        flock.agent("sink").consumes(Draft).with_engines(FunctionEngine(lambda inputs: None))
        return flock

    flock = agents(Flock(store=store, traces=False))
    await flock.attach()  # alone on the board: it holds the routing lock
    publisher = agents(Flock(store=PostgresBlackboardStore(postgres_url), role="publisher", traces=False))
    await publisher.publish(Seed(n=1))
    summary = await flock.watch(poll_interval=0.05, idle_exit=1.5)
    assert store.stale_reads >= 1  # a pass did read the Draft while its routing step was held
    assert summary.ok, summary.failures
    assert summary.agent_runs == 2
    assert len(await store.deliveries(status=DeliveryStatus.DONE)) == 2
    await flock.shutdown()
    await store.close()
    await publisher.store.close()


class HeldLease(PostgresBlackboardStore):
    """A board whose next lease that finds work, once ``hold`` is set, answers only when
    ``resume`` is set (``taken`` is set when it has its deliveries)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.hold = False
        self.taken, self.resume = asyncio.Event(), asyncio.Event()

    async def lease_next(self, *args: Any, **kwargs: Any) -> list[Delivery]:
        leased = await super().lease_next(*args, **kwargs)
        if leased and self.hold:
            self.hold = False
            self.taken.set()
            await self.resume.wait()
        return leased


async def test_slots_freed_while_a_lease_is_taken_are_filled_at_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that end while the process takes a lease free their slots; the process leases for them
    right after, not when yet another run ends (or the catch-up poll comes: made an hour here)."""
    monkeypatch.setattr(membership, "CATCH_UP_POLL", 3600.0)
    store = HeldLease(postgres_url)
    started = {n: asyncio.Event() for n in range(4)}
    finish = {n: asyncio.Event() for n in range(4)}

    async def work(inputs: Any) -> None:
        n = inputs.first_as(Seed).n
        started[n].set()
        await finish[n].wait()

    flock = Flock(store=store, max_concurrency=2, traces=False)
    flock.agent("worker").consumes(Seed).with_engines(FunctionEngine(work))
    await flock.attach()
    stop = asyncio.Event()
    watching = asyncio.ensure_future(flock.watch(poll_interval=0.05, stop=stop))
    publisher = Flock(store=PostgresBlackboardStore(postgres_url), role="publisher", traces=False)
    publisher.agent("worker").consumes(Seed).with_engines(FunctionEngine(work))
    await publisher.publish_many([Seed(n=n) for n in range(4)])
    await asyncio.wait_for(asyncio.gather(started[0].wait(), started[1].wait()), 60)
    store.hold = True
    finish[0].set()  # a slot frees: the process leases seed 2, and the lease is held
    await asyncio.wait_for(store.taken.wait(), 60)
    finish[1].set()  # the other slot frees while that lease is being taken
    while flock.status().running:
        await asyncio.sleep(0.01)
    store.resume.set()
    await asyncio.wait_for(started[3].wait(), 60)  # seed 3 runs beside seed 2
    assert flock.status().running == 2
    finish[2].set()
    finish[3].set()
    while sum(flock.status().runs_by_agent.values()) < 4:
        await asyncio.sleep(0.01)
    stop.set()
    assert (await watching).ok
    await flock.shutdown()
    await store.close()
    await publisher.store.close()


BLOCKED = {"on": True}  # while on, ``make_final`` never returns (the first leader's run hangs)


async def make_final(inputs: Any) -> Final:
    if BLOCKED["on"]:
        await asyncio.Event().wait()
    return Final(n=inputs.first_as(Seed).n)


async def make_pair(inputs: Any) -> Pair:
    return Pair(n=inputs.first_as(Final).n)


def joining(flock: Flock) -> Flock:
    """A Draft and a Final of one workflow join into a Pair; a Seed makes the Final."""
    flock.agent("pairer").consumes(Draft, Final, join={"window": 600}).publishes(Pair).with_engines(
        FunctionEngine(make_pair)
    )
    flock.agent("maker").consumes(Seed).publishes(Final).with_engines(FunctionEngine(make_final))
    return flock


class SlowRestore(PostgresBlackboardStore):
    """A board whose join entries, once this process works with others, are read only when
    ``restore`` is set (a new routing leader rebuilding its gates from a slow server)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.restore = asyncio.Event()

    async def gate_entries(self) -> list[Any]:
        if self.coordinated:
            await self.restore.wait()
        return await super().gate_entries()


async def test_a_new_routing_leader_routes_nothing_before_its_gates_are_rebuilt(postgres_url: str) -> None:
    """A member that takes the routing lock over rebuilds the gates from the board first. A run of
    its own that ends meanwhile must not route its output into the empty gate: the output stayed
    in a join of its own beside its partner's entry, both marked routed, and the Pair never came."""
    BLOCKED["on"] = True
    first = joining(Flock(store=PostgresBlackboardStore(postgres_url), traces=False))
    await first.attach()  # the routing leader
    publisher = joining(Flock(store=PostgresBlackboardStore(postgres_url), role="publisher", traces=False))
    draft = await publisher.publish(Draft(n=7))
    await publisher.publish(Seed(n=7), correlation_id=draft.correlation_id)
    while not (first.status().running and await first.store.gate_entries()):
        await asyncio.sleep(0.02)  # the Draft waits in the join; the Seed's run hangs
    await first.shutdown(timeout=0.5, release_interrupted=True)  # its lease is handed back
    await first.store.close()
    BLOCKED["on"] = False
    store = SlowRestore(postgres_url)
    second = joining(Flock(store=store, traces=False))
    await second.attach()  # takes the routing lock over; rebuilding its gates waits for ``restore``
    while not await store.deliveries(status=DeliveryStatus.DONE):
        await asyncio.sleep(0.02)  # its own run of the Seed has ended (the Final is on the board)
    await asyncio.sleep(0.3)  # whatever routing that run's end does, it has done
    store.restore.set()
    summary = await second.watch(poll_interval=0.05, idle_exit=1.5)
    assert summary.ok, summary.failures
    pairs = (await store.query(ArtifactQuery(types=frozenset({"Pair"})), viewer=UNRESTRICTED)).items
    assert [p.payload["n"] for p in pairs] == [7]
    assert await store.gate_entries() == []
    await second.shutdown()
    await store.close()
    await publisher.store.close()
