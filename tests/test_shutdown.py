"""Stopping a flock: drain everything, or start nothing new and keep what waits."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from flock_cli import Flock, FunctionEngine, flock_type


@flock_type(name="StopJob")
class Job(BaseModel):
    n: int


@flock_type(name="StopDone")
class Done(BaseModel):
    n: int


def build(gate: asyncio.Event, started: list[int]) -> Flock:
    async def work(inputs):  # type: ignore[no-untyped-def]
        job = inputs.first_as(Job)
        started.append(job.n)
        await gate.wait()
        return Done(n=job.n)

    flock = Flock(max_concurrency=1)
    flock.agent("worker").consumes(Job).publishes(Done).with_engines(FunctionEngine(work))
    return flock


async def test_stopping_without_drain_starts_nothing_new_and_keeps_the_rest() -> None:
    gate, started = asyncio.Event(), []
    flock = build(gate, started)
    for n in range(3):
        await flock.publish(Job(n=n))
    await asyncio.sleep(0.05)
    assert started == [0]  # one slot: one run in flight, two waiting
    stopping = asyncio.create_task(flock.shutdown(drain=False))
    await asyncio.sleep(0.05)
    gate.set()  # the run in flight finishes
    summary = await stopping
    assert started == [0]
    assert summary.runs_by_agent == {"worker": 1}
    assert summary.not_started == 2
    assert sorted(d.reason for d in summary.dead_letters) == [
        "stopped",
        "stopped",
    ]  # in memory: kept as letters


async def test_an_aborted_shutdown_starts_none_of_the_queued_runs() -> None:
    gate, started = asyncio.Event(), []
    flock = build(gate, started)
    for n in range(3):
        await flock.publish(Job(n=n))
    await asyncio.sleep(0.05)
    summary = await flock.shutdown(timeout=0.05)  # the run in flight never ends: cancel it
    await asyncio.sleep(0.05)
    assert started == [0]  # the cancelled run's slot went to nobody
    assert summary.not_started == 2
    assert sorted(d.reason for d in summary.dead_letters) == ["failed", "stopped", "stopped"]


async def test_draining_runs_everything_queued() -> None:
    gate, started = asyncio.Event(), []
    gate.set()
    flock = build(gate, started)
    for n in range(3):
        await flock.publish(Job(n=n))
    summary = await flock.shutdown()
    assert started == [0, 1, 2] and summary.not_started == 0 and summary.ok
