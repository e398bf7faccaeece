"""A run whose PostgreSQL board stays unreachable past the reconnect limit while it completes:
its work is not a failure of the agent. Nothing is dead-lettered, the delivery's lease lapses
(a live member renews only the leases of runs it is running) and the delivery runs again once
the board is back, exactly once to completion. A real server, stopped and started by the test."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

from flock_cli import Flock, FunctionEngine, flock_type
from flock_cli.store import UNRESTRICTED
from flock_cli.store.postgres import PostgresBlackboardStore
from tests.postgres_server import PostgresServer


@flock_type(name="OutageJob")
class OutageJob(BaseModel):
    n: int


@flock_type(name="OutageDone")
class OutageDone(BaseModel):
    n: int


async def test_a_run_that_cannot_reach_its_board_runs_again_instead_of_a_dead_letter(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    calls: list[int] = []
    restarted = threading.Event()

    def work(inputs: Any) -> OutageDone:
        job = inputs.artifacts[0].payload
        calls.append(job["n"])
        if len(calls) == 1:  # the board goes away while the first run works, for 4 s
            postgres_server.stop()
            timer = threading.Timer(4.0, lambda: (postgres_server.start(), restarted.set()))
            timer.start()
        return OutageDone(n=job["n"] * 10)

    store = PostgresBlackboardStore(postgres_url, reconnect_timeout=1.5)
    flock = Flock(store=store, lease_ttl=3, traces=False)
    flock.agent("worker").consumes(OutageJob).publishes(OutageDone).with_engines(FunctionEngine(work))
    stop = asyncio.Event()
    watching = asyncio.create_task(flock.watch(stop=stop))
    try:
        await flock.publish(OutageJob(n=7))
        outputs = await _outputs_within(postgres_url, 60)
    finally:
        stop.set()
        summary = await watching
        restarted.wait(30)
        postgres_server.start()
    letters = await store.dead_letters()
    await flock.shutdown()
    await store.close()  # its connections, the routing lock's too: none left for the collector
    assert calls == [7, 7]  # once cut off, once again when its lease had lapsed
    assert [a.payload for a in outputs] == [{"n": 70}]
    assert letters == []
    assert summary.dead_letters == [] and summary.failures == [], summary
    assert summary.leases_lost == 1


async def _outputs_within(url: str, seconds: float) -> list[Any]:
    """The OutageDone artifacts on the board, once there are some (read with a store of its own)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        reader = PostgresBlackboardStore(url, reconnect_timeout=0.5)
        try:
            found = [a for a in (await reader.query(viewer=UNRESTRICTED)).items if a.type == "OutageDone"]
        except Exception:  # the board is down: the test stopped it
            found = []
        finally:
            await reader.close()
        if found:
            await asyncio.sleep(1.0)  # a second, wrongly repeated run would land meanwhile
            return found
    raise AssertionError(f"no output within {seconds} s")
