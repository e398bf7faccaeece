"""What bench/scale_out.py reads to measure a shared board from outside: the board's own tables
(read-only SQL on one connection) and processes' CPU time from /proc (Linux).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flock_cli.store.postgres_shared import ROUTING_LOCK

TICK = os.sysconf("SC_CLK_TCK")


class WrongResult(Exception):
    """A measured run did not do the whole job: no figure is reported for it."""


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on; the name may hold spaces


def cpu_of(pid: int, *, waited_children: bool = False) -> float:
    """CPU seconds (user + system) process ``pid`` used so far; with ``waited_children``, plus
    those of its children that ended and were waited for (a server's finished backends)."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def server_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server so far: the postmaster, its live children (backends,
    writers) and the children that already ended."""
    total = cpu_of(postmaster, waited_children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICK
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # it ended while we looked: the postmaster's waited-for count has it
    return total


def postmaster_pid(datadir: Path) -> int:
    """The server's main process, from the first line of its postmaster.pid."""
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])


@dataclass
class BoardFigures:
    """What one pipeline run left on the board."""

    seeds: int
    mids: int
    distinct_mids: int
    outs: int
    distinct_outs: int
    done: int
    dead: int
    open: int
    first_seed: float  # epoch seconds of the first Seed's created_at
    last_artifact: float  # epoch seconds of the newest artifact's created_at

    def check(self, seeds: int) -> None:
        """Every seed has exactly one Mid and one Out, 2 x seeds runs, nothing dead or open."""
        expected = (seeds, seeds, seeds, seeds, seeds, 2 * seeds, 0, 0)
        got = (self.seeds, self.mids, self.distinct_mids, self.outs, self.distinct_outs, self.done,
               self.dead, self.open)  # fmt: skip
        if got != expected:
            raise WrongResult(
                "board is not as a clean run leaves it: (seeds, mids, distinct mids, outs, distinct outs,"
                f" done deliveries, dead letters, open work) = {got}, expected {expected}"
            )


class BoardProbe:
    """One read-only connection to a board for the benchmark's own looks."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements = 0  # this probe's own, each a transaction the server counts

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        self.statements += 1
        return await self._conn.execute(sql, params)

    @classmethod
    async def open(cls, url: str) -> BoardProbe:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, application_name="bench probe")
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        cursor = await self._execute(sql, params)
        row = await cursor.fetchone()
        assert row is not None
        return tuple(row)

    async def open_work(self) -> int:
        """Deliveries pending or leased plus artifacts not routed yet."""
        (count,) = await self._one(
            "SELECT (SELECT count(*) FROM flock.deliveries WHERE status IN ('pending', 'leased'))"
            " + (SELECT count(*) FROM flock.artifacts WHERE NOT routed)"
        )
        return int(count)

    async def count(self, type_name: str) -> int:
        (count,) = await self._one("SELECT count(*) FROM flock.artifacts WHERE type = %s", (type_name,))
        return int(count)

    async def wait_until_done(self, outs: int, timeout: float, every: float = 0.1) -> None:
        """Return once ``outs`` Out artifacts are on the board and nothing is open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (await self.count("Out") >= outs and await self.open_work() == 0):
            if loop.time() > deadline:
                raise WrongResult(f"the board was not idle after {timeout:.0f} s")
            await asyncio.sleep(every)

    async def figures(self) -> BoardFigures:
        row = await self._one(
            "SELECT (SELECT count(*) FROM flock.artifacts WHERE type = 'Seed'),"
            " (SELECT count(*) FROM flock.artifacts WHERE type = 'Mid'),"
            " (SELECT count(DISTINCT payload->>'n') FROM flock.artifacts WHERE type = 'Mid'),"
            " (SELECT count(*) FROM flock.artifacts WHERE type = 'Out'),"
            " (SELECT count(DISTINCT payload->>'n') FROM flock.artifacts WHERE type = 'Out'),"
            " (SELECT count(*) FROM flock.deliveries WHERE status = 'done'),"
            " (SELECT count(*) FROM flock.dead_letters),"
            " (SELECT count(*) FROM flock.deliveries WHERE status IN ('pending', 'leased'))"
            " + (SELECT count(*) FROM flock.artifacts WHERE NOT routed),"
            " (SELECT min(created_at) FROM flock.artifacts WHERE type = 'Seed'),"
            " (SELECT max(created_at) FROM flock.artifacts)"
        )
        *counts, first, last = row
        return BoardFigures(*(int(c) for c in counts), first.timestamp(), last.timestamp())

    async def starts(self) -> dict[str, dict[int, float]]:
        """Per type: n -> the payload's time (Seed: sent; Mid, Out: started), and
        ``Mid@`` -> n -> when each Mid was created (its run's end, by the board's timestamps)."""
        cursor = await self._execute(
            "SELECT type, (payload->>'n')::int, (payload->>'sent')::float8, (payload->>'started')::float8,"
            " extract(epoch FROM created_at)::float8 FROM flock.artifacts"
        )
        found: dict[str, dict[int, float]] = {"Seed": {}, "Mid": {}, "Out": {}, "Mid@": {}}
        for type_name, n, sent, started, created in await cursor.fetchall():
            found[type_name][n] = sent if type_name == "Seed" else started
            if type_name == "Mid":
                found["Mid@"][n] = created
        return found

    async def backend_pids(self, application_name: str) -> list[int]:
        """Server process ids of the connections a client opened under ``application_name``."""
        cursor = await self._execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        )
        return [int(r[0]) for r in await cursor.fetchall()]

    async def leader_pid(self) -> int | None:
        """The client process id (from its connection's application name) holding the routing lock."""
        cursor = await self._execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            (ROUTING_LOCK,),
        )
        row = await cursor.fetchone()
        if row is None or not str(row[0]).startswith("flock-flow pid "):
            return None
        return int(str(row[0]).removeprefix("flock-flow pid ").split()[0])  # "N routing-lock OWNER"


async def board_activity(url: str) -> tuple[int, int]:
    """(transactions committed, connections opened) in the board's database so far, as the
    server's statistics count them, read on a connection of its own. A server process adds its
    counts when it ends (or after a while idle), so read this after the processes measured left.
    The read itself is one transaction and one connection."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
