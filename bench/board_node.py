"""One orchestrator process on a shared PostgreSQL board, for bench/scale_out.py.

    python bench/board_node.py URL --latency 0.2 --concurrency 8

Builds the two-stage pipeline (Seed -> stage_a -> Mid -> stage_b -> Out; each engine records
``time.time()`` when it starts, then awaits ``asyncio.sleep(latency)``, standing for a model call),
attaches to the board, prints ``ready`` once it is a member, and serves the board as ``flock run
--watch`` does (``Flock.watch`` with its default poll interval) until SIGTERM. Then it shuts down
(draining what it holds) and prints one JSON line: its runs, whether they were clean, and the CPU
seconds it used between ``ready`` and the end.

scale_out.py imports the payload types and :func:`build` from here for its publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from pydantic import BaseModel

from flock_cli import Flock, FunctionEngine, flock_type


@flock_type(name="Seed")
class Seed(BaseModel):
    n: int
    sent: float = 0.0  # time.time() just before the publisher published it (latency runs)


@flock_type(name="Mid")
class Mid(BaseModel):
    n: int
    started: float  # time.time() when stage_a's engine started


@flock_type(name="Out")
class Out(BaseModel):
    n: int
    started: float  # time.time() when stage_b's engine started


def build(
    url: str, *, latency: float = 0.0, concurrency: int | None = None, role: str = "orchestrator"
) -> Flock:
    """The two-stage pipeline on the PostgreSQL board at ``url``."""
    from flock_cli.store.postgres import PostgresBlackboardStore

    # Tracing off, as in bench/pipeline.py: this measures the board, not the trace writer.
    flock = Flock(
        store=PostgresBlackboardStore(url),
        max_concurrency=concurrency,
        role=role,
        traces=False,  # type: ignore[arg-type]
    )

    async def stage_a(inputs: Any) -> Mid:
        started = time.time()
        if latency:
            await asyncio.sleep(latency)  # a simulated model call
        return Mid(n=inputs.first_as(Seed).n, started=started)

    async def stage_b(inputs: Any) -> Out:
        started = time.time()
        if latency:
            await asyncio.sleep(latency)
        return Out(n=inputs.first_as(Mid).n, started=started)

    flock.agent("stage_a").consumes(Seed).publishes(Mid).with_engines(FunctionEngine(stage_a))
    flock.agent("stage_b").consumes(Mid).publishes(Out).with_engines(FunctionEngine(stage_b))
    return flock


def cpu_seconds() -> float:
    """User + system CPU seconds this process used so far."""
    times = os.times()
    return times.user + times.system


async def serve(url: str, latency: float, concurrency: int | None) -> dict[str, Any]:
    flock = build(url, latency=latency, concurrency=concurrency)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await flock.attach()
    leading = bool(getattr(flock.store, "leading", False))
    print("ready", flush=True)
    cpu_at_ready = cpu_seconds()
    watched = await flock.watch(stop=stop)
    final = await flock.shutdown()
    await flock.store.close()
    failures = [
        f"{f.agent} {f.stage}: {f.error_type}: {f.error}" for f in [*watched.failures, *final.failures]
    ]
    return {
        "pid": os.getpid(),
        "runs": watched.agent_runs + final.agent_runs,
        "ok": watched.ok and final.ok,
        "failures": failures[:5],
        "cpu_seconds": cpu_seconds() - cpu_at_ready,
        "led_at_start": leading,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each engine call sleeps")
    parser.add_argument("--concurrency", type=int, default=None, help="max_concurrency of this process")
    args = parser.parse_args(argv)
    report = asyncio.run(serve(args.url, args.latency, args.concurrency))
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
