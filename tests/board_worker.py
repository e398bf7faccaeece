"""A process that works on a shared SQLite board, for the multi-process and crash tests.

python -m tests.board_worker run BOARD          # orchestrate until idle, then shut down
python -m tests.board_worker watch BOARD SECS   # serve the board until SECS seconds of quiet
python -m tests.board_worker publish BOARD N    # publish N seeds (publisher role), paced
python -m tests.board_worker read BOARD SECS    # query the board in a loop for SECS seconds
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

from pydantic import BaseModel

from flock_cli import Flock, FunctionEngine, flock_type
from flock_cli.store import UNRESTRICTED, ArtifactQuery, BlackboardStore, SQLiteBlackboardStore


@flock_type(name="Seed")
class Seed(BaseModel):
    n: int


@flock_type(name="Draft")
class Draft(BaseModel):
    n: int


@flock_type(name="Final")
class Final(BaseModel):
    n: int


@flock_type(name="Pair")
class Pair(BaseModel):
    n: int


@flock_type(name="Digest")
class Digest(BaseModel):
    total: int
    count: int


# Seconds an engine call takes on average; the crash test raises it so that kills land mid-run.
DELAY = float(os.environ.get("BOARD_WORKER_DELAY", "0.007"))


async def slow(n: int) -> None:
    await asyncio.sleep(random.uniform(0.3 * DELAY, 1.7 * DELAY))


def open_store(board: str) -> BlackboardStore:
    """A PostgreSQL board for a postgresql:// URL, else the SQLite file at ``board``."""
    if board.startswith("postgresql://"):
        from flock_cli.store.postgres import PostgresBlackboardStore

        return PostgresBlackboardStore(board)
    return SQLiteBlackboardStore(board)


def build(board: str, role: str = "orchestrator") -> Flock:
    """Seed -> drafter -> Draft -> finisher -> Final; Finals are summed in batches of 5, and each
    Draft is joined with its Final (by correlation id) into a Pair."""
    ttl = os.environ.get("BOARD_WORKER_LEASE_TTL")
    flock = Flock(
        store=open_store(board),
        max_concurrency=4,
        role=role,  # type: ignore[arg-type]
        lease_ttl=float(ttl) if ttl else None,
    )

    async def draft(inputs):
        seed = inputs.first_as(Seed)
        await slow(seed.n)
        return Draft(n=seed.n)

    async def finish(inputs):
        d = inputs.first_as(Draft)
        await slow(d.n)
        return Final(n=d.n)

    async def digest(inputs):
        finals = inputs.all_as(Final)
        return Digest(total=sum(f.n for f in finals), count=len(finals))

    flock.agent("drafter").consumes(Seed).publishes(Draft).with_engines(FunctionEngine(draft))
    flock.agent("finisher").consumes(Draft).publishes(Final).with_engines(FunctionEngine(finish))

    async def pair(inputs):
        return Pair(n=inputs.first_as(Final).n)

    flock.agent("pairer").consumes(Draft, Final, join={"window": 600}).publishes(Pair).with_engines(
        FunctionEngine(pair)
    )
    flock.agent("digester").consumes(Final, batch={"size": 5}).publishes(Digest).with_engines(
        FunctionEngine(digest)
    )
    return flock


async def main(argv: list[str]) -> int:
    command, board = argv[0], argv[1]
    if command == "run":
        flock = build(board)
        summary = await flock.run_until_idle()
        await flock.shutdown()
        await flock.store.close()
        print(f"runs={summary.agent_runs} ok={summary.ok}")
        for failure in summary.failures:
            print(f"failure: {failure.agent} {failure.stage}: {failure.error_type}: {failure.error}")
        return 0 if summary.ok else 1
    if command == "watch":
        flock = build(board)
        summary = await flock.watch(poll_interval=0.05, idle_exit=float(argv[2]))
        await flock.shutdown()
        await flock.store.close()
        print(f"runs={summary.agent_runs} ok={summary.ok}")
        for failure in summary.failures:
            print(f"failure: {failure.agent} {failure.stage}: {failure.error_type}: {failure.error}")
        return 0 if summary.ok else 1
    if command == "publish":
        flock = build(board, role="publisher")
        for n in range(int(argv[2])):
            await flock.publish(Seed(n=n))
            await asyncio.sleep(0.01)
        await flock.store.close()
        print("published")
        return 0
    if command == "read":
        store = open_store(board)
        deadline, reads = time.monotonic() + float(argv[2]), 0
        while time.monotonic() < deadline:
            page = await store.query(ArtifactQuery(types=frozenset({"Final"}), limit=5), viewer=UNRESTRICTED)
            await store.summarize(viewer=UNRESTRICTED)
            reads += 1 + page.total * 0
            await asyncio.sleep(0.01)
        await store.close()
        print(f"reads={reads}")
        return 0
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
