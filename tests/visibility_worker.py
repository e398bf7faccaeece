"""A multi-tenant flock on a SQLite board that can be made to crash, for the visibility tests.

python -m tests.visibility_worker BOARD LOG [--publish K --seed S] [--crash-at N] [--hold SECS]
    [--visibility I]

Every engine run first appends one JSON line to LOG (who ran, on which artifacts, when): the
witness of what each agent consumed, whatever path handed the delivery over (routing, resume,
lease takeover, retry, dead-letter re-delivery, embargo release, group re-offer). The test then
checks every line against the artifacts' visibility.

``--crash-at N`` kills the process with SIGKILL at its N-th board commit (``--crash-after`` just
after it), so a crash lands at a chosen point of the write sequence; ``--hold`` makes the desk
agents sleep that long (a run in flight when the parent sends SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flock_cli import (
    AfterVisibility,
    Flock,
    FunctionEngine,
    LabelledVisibility,
    PublicVisibility,
    RetryPolicy,
    TenantVisibility,
    flock_type,
    only_for,
)
from flock_cli.store import SQLiteBlackboardStore
from flock_cli.store.sqlite_commit import GroupCommit


@flock_type(name="Ticket")
class Ticket(BaseModel):
    n: int
    fails: int = 0  # the first `fails` attempts of every run on this ticket raise


@flock_type(name="Note")
class Note(BaseModel):
    n: int
    by: str


@flock_type(name="Pair")
class Pair(BaseModel):
    n: int


class CrashingCommit(GroupCommit):
    """The real group commit, killed with SIGKILL at its N-th commit (before or after it)."""

    def __init__(self, conn: sqlite3.Connection, where: Path, crash_at: int | None, after: bool) -> None:
        super().__init__(conn, where)
        self._crash_at = crash_at
        self._after = after
        self._commits = 0

    def flush(self) -> None:
        if self.queued:
            self._commits += 1
            if self._commits == self._crash_at and not self._after:
                os.kill(os.getpid(), signal.SIGKILL)
        super().flush()
        if self._commits == self._crash_at and self._after:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashingBoard(SQLiteBlackboardStore):
    """The real SQLite board, killed with SIGKILL at its N-th group commit (fault injection)."""

    def __init__(self, path: str, crash_at: int | None, after: bool) -> None:
        self._crash_at = crash_at
        self._after = after
        super().__init__(path)

    def _group_commit(self) -> GroupCommit:
        return CrashingCommit(self._conn, self.path, self._crash_at, self._after)


def build(store: SQLiteBlackboardStore, log: str, hold: float = 0.0) -> Flock:
    """Three desks of different tenants share one exclusive group; readers per tenant; an
    auditor with a label; a per-correlation AND gate; every run retried once."""
    flock = Flock(store=store, lease_ttl=30.0)
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)

    def witness(inputs: Any, ctx: Any) -> None:
        line = {
            "agent": ctx.agent,
            "inputs": [str(a.id) for a in inputs.artifacts],
            "at": time.time(),
            "attempt": ctx.attempt,
        }
        with open(log, "a") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def desk(tenant: str | None, delay: float) -> FunctionEngine:
        async def handle(inputs: Any, ctx: Any) -> Note:
            witness(inputs, ctx)
            ticket = inputs.first_as(Ticket)
            if delay:
                await asyncio.sleep(delay)
            if ctx.attempt <= ticket.fails:
                raise RuntimeError(f"ticket {ticket.n} fails attempt {ctx.attempt}")
            return Note(n=ticket.n, by=ctx.agent)

        return FunctionEngine(handle)

    # The globex desk is declared first, so a careless dispatcher would prefer it.
    for name, tenant in [("globex_desk", "globex"), ("acme_desk", "acme"), ("open_desk", None)]:
        builder = flock.agent(name).consumes(Ticket, group="desk").with_retry_policy(retry)
        builder.with_engines(desk(tenant, hold))
        if tenant is not None:
            builder.tenant(tenant).publishes(Note, visibility=TenantVisibility(tenant_id=tenant))
        else:
            builder.publishes(Note)

    def reader(inputs: Any, ctx: Any) -> None:
        witness(inputs, ctx)

    for name, tenant in [("acme_reader", "acme"), ("globex_reader", "globex")]:
        flock.agent(name).tenant(tenant).consumes(Note).with_engines(FunctionEngine(reader))
    auditor = flock.agent("auditor").labels("audit").consumes(Ticket).with_retry_policy(retry)
    auditor.with_engines(desk(None, 0.0)).publishes(Note, visibility=only_for("auditor"))

    def pair(inputs: Any, ctx: Any) -> Pair:
        witness(inputs, ctx)
        return Pair(n=inputs.first_as(Ticket).n)

    flock.agent("pairer").tenant("acme").consumes(Ticket, Note).publishes(Pair).with_engines(
        FunctionEngine(pair)
    )
    return flock


VISIBILITIES = [
    lambda: TenantVisibility(tenant_id="acme"),
    lambda: TenantVisibility(tenant_id="globex"),
    lambda: PublicVisibility(),
    lambda: only_for("auditor", "acme_desk"),
    lambda: LabelledVisibility(required_labels=frozenset({"audit"})),
    lambda: AfterVisibility(ttl=timedelta(seconds=0.3), then=TenantVisibility(tenant_id="acme")),
]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("board")
    parser.add_argument("log")
    parser.add_argument("--publish", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crash-at", type=int, default=None)
    parser.add_argument("--crash-after", action="store_true")
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--visibility", type=int, default=None, help="index into VISIBILITIES for all")
    args = parser.parse_args(argv)
    store = CrashingBoard(args.board, args.crash_at, args.crash_after)
    flock = build(store, args.log, args.hold)
    rng = random.Random(args.seed)
    for n in range(args.publish):
        choice = rng.choice(VISIBILITIES) if args.visibility is None else VISIBILITIES[args.visibility]
        visibility = choice()
        await flock.publish(Ticket(n=n, fails=rng.choice([0, 0, 1, 5])), visibility=visibility)
        print(f"published {n}", flush=True)
    await flock.run_until_idle()
    await asyncio.sleep(0.35)  # embargoes lift
    await flock.run_until_idle()
    for letter in await flock.dead_letters():  # re-deliver every dead letter once
        await flock.retry_dead_letter(letter.id)
    await flock.run_until_idle()
    await flock.shutdown()
    await store.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
