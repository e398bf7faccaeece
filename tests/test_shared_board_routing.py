"""The routing leader of a shared PostgreSQL board under a slow server: two routing passes of one
process overlap (the membership's pass woken by a notification, and the watch loop's poll), and
neither may route an artifact the other is routing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flock_cli import Flock, FunctionEngine
from flock_cli.core.artifact import Artifact
from flock_cli.store import DeliveryStatus
from flock_cli.store.records import RoutingTx
from tests.board_worker import Seed

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

from flock_cli.store.postgres import PostgresBlackboardStore


class SlowCommits(PostgresBlackboardStore):
    """A board whose routing steps commit only once ``commits`` is set; a look for unrouted
    artifacts made while a commit is held is answered late, after that commit landed, with what it
    read before (a slow server: the answer of a query started before a commit arrives after it)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.commits = asyncio.Event()
        self.commits.set()
        self.held = 0  # routing steps waiting for ``commits``
        self.stale_reads = 0

    async def commit_routing_now(self, tx: RoutingTx, conn: Any = None) -> None:
        self.held += 1
        await self.commits.wait()
        self.held -= 1
        await super().commit_routing_now(tx, conn)

    async def unrouted(self, limit: int = 1000) -> list[Artifact]:
        found = await super().unrouted(limit)
        if found and self.held:
            self.stale_reads += 1
            await self.commits.wait()
            while {a.id for a in await super().unrouted(limit)} & {a.id for a in found}:
                await asyncio.sleep(0.02)  # until the held commit is on the board...
            await asyncio.sleep(0.3)  # ...and the pass that made it has finished
        return found


async def test_a_poll_that_read_the_board_before_a_routing_step_committed_does_not_route_again(
    postgres_url: str,
) -> None:
    store = SlowCommits(postgres_url)
    flock = Flock(store=store, traces=False)
    flock.agent("echo").consumes(Seed).with_engines(FunctionEngine(lambda inputs: None))
    await flock.attach()  # alone on the board: it holds the routing lock
    publisher = Flock(store=PostgresBlackboardStore(postgres_url), role="publisher", traces=False)
    publisher.agent("echo").consumes(Seed).with_engines(FunctionEngine(lambda inputs: None))
    store.commits.clear()
    asyncio.get_running_loop().call_later(0.6, store.commits.set)
    await publisher.publish(Seed(n=1))
    summary = await flock.watch(poll_interval=0.05, idle_exit=1.5)
    assert store.stale_reads >= 1  # a second pass did read the artifact while its step was held
    assert summary.ok, summary.failures
    assert summary.agent_runs == 1
    assert len(await store.deliveries(status=DeliveryStatus.DONE)) == 1
    await flock.shutdown()
    await store.close()
    await publisher.store.close()
