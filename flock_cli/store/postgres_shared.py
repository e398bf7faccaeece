"""What processes sharing one PostgreSQL board coordinate through it: routing steps in order on
one connection, routing leadership, the live processes and their heartbeats, competing leases
(``FOR UPDATE SKIP LOCKED``), board-wide counters and wake-ups (``LISTEN/NOTIFY``).

**Routing leadership.** Gates, joins and batches are state machines that a process keeps in
memory and mirrors to the board step by step; two processes routing at once would each complete
a join from its own stale copy. So one process at a time routes: the one holding the board's
routing lock, a session-level advisory lock on a dedicated connection. Its routing steps are
committed *on that connection*: if the connection dies, PostgreSQL drops the lock with it, and
the commit fails instead of landing after another process took over. The next leader rebuilds
the gathering state from the board's entries before it routes anything.

**Competing leases.** Every process, the leader too, takes work with one statement that leases
the next pending deliveries of its agents, highest priority first, skipping rows other processes
are locking (``FOR UPDATE SKIP LOCKED``). The attempt number it increments is the fencing token:
a completion by a process whose lease was taken over is refused.

**Wake-ups.** Appends and completions notify ``flock_artifacts`` (the leader routes them);
routing steps with new deliveries and released leases notify ``flock_work`` (every process looks
for work). Notifications are sent on commit. A slow catch-up poll covers any that are missed
(a process that was reconnecting).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flock_cli.errors import BoardUnavailableError
from flock_cli.store.contract import BlackboardStore, Delivery, NotLeaderError
from flock_cli.store.records import RoutingTx

if TYPE_CHECKING:
    from uuid import UUID

    from psycopg import AsyncConnection

    from flock_cli.store.postgres_connections import ConnectionPool

__all__ = ["NotLeaderError", "ProcessRecord", "SharedBoardMixin", "routing_lock_name"]

ROUTING_LOCK = 0x666C6F636B2D726F  # "flock-ro": the advisory lock of routing leadership
WORK, ARTIFACTS = "flock_work", "flock_artifacts"


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """An orchestrator process working on a shared board, as ``flock top`` lists it."""

    owner: str
    host: str
    pid: int
    fingerprint: str
    started_at: datetime
    heartbeat_at: datetime
    draining: bool = False
    leases: int = 0
    leader: bool = False


class SharedBoardMixin(BlackboardStore):
    """The coordination half of :class:`~flock_cli.store.postgres.PostgresBlackboardStore`."""

    shared = True
    pool: ConnectionPool
    where: str

    def __init__(self) -> None:
        self._routing_tail: asyncio.Future[None] | None = None
        self._unsynced: builtins.list[asyncio.Future[None]] = []
        self._leader_conn: AsyncConnection[Any] | None = None
        self._listen_conn: AsyncConnection[Any] | None = None
        self._wakes: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self.leader_owner: str | None = None
        # Set once this process works the board with others (core/membership.py): from then on
        # a routing step commits only on the routing lock's connection, never without the lock.
        self.coordinated = False

    # -- hooks of the store half -----------------------------------------------------------------

    async def _run(self, operation: Any) -> Any:
        raise NotImplementedError

    async def commit_routing_now(self, tx: RoutingTx, conn: AsyncConnection[Any] | None = None) -> None:
        raise NotImplementedError

    @staticmethod
    async def notify_work(conn: AsyncConnection[Any]) -> None:
        """Tell every process that deliveries are waiting (sent when the transaction commits)."""
        await conn.execute("SELECT pg_notify(%s, '')", (WORK,))

    @staticmethod
    async def notify_artifacts(conn: AsyncConnection[Any]) -> None:
        """Tell the routing leader that artifacts wait to be routed (sent on commit)."""
        await conn.execute("SELECT pg_notify(%s, '')", (ARTIFACTS,))

    # -- routing steps, in call order ------------------------------------------------------------

    async def commit_routing(self, tx: RoutingTx) -> None:
        """Queue one routing step; steps are committed in call order, each in its own transaction
        (on the leader's connection while this process leads). :meth:`sync` waits for them."""
        previous = self._routing_tail
        step = asyncio.ensure_future(self._commit_after(previous, tx, self._leader_conn))
        self._routing_tail = step
        self._unsynced.append(step)

    async def _commit_after(
        self, previous: asyncio.Future[None] | None, tx: RoutingTx, leader: AsyncConnection[Any] | None
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # its failure is its own caller's (sync raises it)
                await asyncio.shield(previous)
        if not self.coordinated:  # a process on its own (tools, tests): no lock to hold
            await self.commit_routing_now(tx)
            return
        conn = self._leader_conn
        # A step decided under one holding of the lock commits under that one only: after a loss
        # and a new holding, the board may have been routed by another member in between.
        if conn is None or conn is not leader or conn.closed or conn.broken:
            raise NotLeaderError("this process lost the board's routing lock")
        try:
            await self.commit_routing_now(tx, conn)
        except Exception as exc:
            from flock_cli.store.postgres_connections import is_connection_error

            if is_connection_error(exc):
                await self.resign()
                raise NotLeaderError(f"the routing connection to {self.where} was lost: {exc}") from None
            raise

    async def sync(self) -> None:
        """Wait until every routing step queued so far has committed (raising the first failure)."""
        pending, self._unsynced = self._unsynced, []
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    # -- routing leadership ----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this process holds the routing lock (as far as it knows)."""
        conn = self._leader_conn
        return self.leader_owner is not None and conn is not None and not conn.closed and not conn.broken

    async def resign(self) -> None:
        """Give the routing lock up (closing its connection releases it)."""
        conn, self._leader_conn, self.leader_owner = self._leader_conn, None, None
        if conn is not None:
            self.pool.discard(conn)

    # -- processes and heartbeats ----------------------------------------------------------------

    async def register_process(self, record: ProcessRecord) -> None:
        """Add (or refresh) this process in the board's list of live processes."""

        async def write(conn: AsyncConnection[Any], _: bool) -> None:
            await conn.execute(
                "INSERT INTO flock.processes(owner, host, pid, fingerprint, started_at, heartbeat_at,"
                " draining) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (owner) DO UPDATE SET"
                " heartbeat_at = excluded.heartbeat_at, draining = excluded.draining",
                (
                    record.owner,
                    record.host,
                    record.pid,
                    record.fingerprint,
                    record.started_at,
                    record.heartbeat_at,
                    record.draining,
                ),
            )

        await self._run(write)

    async def heartbeat(
        self,
        owner: str,
        *,
        now: datetime,
        ttl: float,
        held: Sequence[UUID],
        draining: bool = False,
    ) -> int | None:
        """Renew the leases ``owner`` holds on the deliveries of ``held`` (those it still works
        on: a lease whose run gave up, say when the board could not be reached to store its
        outputs, must lapse so that the delivery runs again) until ``now + ttl``, and stamp its
        heartbeat, in one transaction. Returns how many leases it renewed, or None when the
        board no longer lists the process (another process found it dead and released its
        leases: it must register again, and its runs in flight will be fenced)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> int | None:
            async with conn.transaction():
                cursor = await conn.execute(
                    "UPDATE flock.processes SET heartbeat_at = %s, draining = %s WHERE owner = %s",
                    (now, draining, owner),
                )
                if cursor.rowcount != 1:
                    return None
                cursor = await conn.execute(
                    "UPDATE flock.deliveries SET lease_expires_at = %s"
                    " WHERE status = 'leased' AND lease_owner = %s AND id = ANY(%s)",
                    (now + timedelta(seconds=ttl), owner, list(held)),
                )
                return cursor.rowcount

        renewed: int | None = await self._run(write)
        return renewed

    async def reap(self, *, now: datetime, stale_after: float) -> builtins.list[ProcessRecord]:
        """Forget processes whose heartbeat is older than ``stale_after`` seconds and make their
        leases pending again (attempt numbers kept: their late completions are refused). Returns
        the processes reaped, each with the number of leases taken back. Safe to call from every
        process at once (row locks decide)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> builtins.list[ProcessRecord]:
            async with conn.transaction():
                cursor = await conn.execute(
                    "DELETE FROM flock.processes WHERE owner IN (SELECT owner FROM flock.processes"
                    " WHERE heartbeat_at < %s FOR UPDATE SKIP LOCKED)"
                    " RETURNING owner, host, pid, fingerprint, started_at, heartbeat_at, draining",
                    (now - timedelta(seconds=stale_after),),
                )
                gone = [ProcessRecord(*row) for row in await cursor.fetchall()]
                if not gone:
                    return []
                cursor = await conn.execute(
                    "WITH held AS (SELECT id, lease_owner FROM flock.deliveries"
                    " WHERE status = 'leased' AND lease_owner = ANY(%s) FOR UPDATE)"
                    " UPDATE flock.deliveries d SET status = 'pending', lease_owner = NULL,"
                    " lease_expires_at = NULL FROM held WHERE d.id = held.id RETURNING held.lease_owner",
                    ([p.owner for p in gone],),
                )
                taken = Counter(row[0] for row in await cursor.fetchall())
                await self.notify_work(conn)
                return [replace(p, leases=taken[p.owner]) for p in gone]

        reaped: builtins.list[ProcessRecord] = await self._run(write)
        return reaped

    async def unregister_process(self, owner: str) -> None:
        """Remove ``owner`` from the live processes (it drained and stops)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> None:
            await conn.execute("DELETE FROM flock.processes WHERE owner = %s", (owner,))

        await self._run(write)

    async def processes(self) -> builtins.list[ProcessRecord]:
        """Every live process of the board with the leases it holds, oldest first; ``leader`` marks
        the one whose connection holds the routing lock now (see :func:`routing_lock_name`)."""
        rows = await self._rows(
            "SELECT p.owner, p.host, p.pid, p.fingerprint, p.started_at, p.heartbeat_at, p.draining,"
            " (SELECT count(*) FROM flock.deliveries d"
            "  WHERE d.status = 'leased' AND d.lease_owner = p.owner),"
            # the name of the connection holding this database's routing lock (one value for all rows)
            " (SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            "  WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
            "  (SELECT oid FROM pg_database WHERE datname = current_database())"
            "  AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1)"
            " FROM flock.processes p ORDER BY p.started_at, p.owner",
            (ROUTING_LOCK,),
        )
        return [
            ProcessRecord(
                owner=r[0], host=r[1], pid=r[2], fingerprint=r[3], started_at=r[4], heartbeat_at=r[5],
                draining=r[6], leases=r[7], leader=r[8] == routing_lock_name(r[2], r[0]),
            )
            for r in rows
        ]  # fmt: skip

    # -- competing leases ------------------------------------------------------------------------

    async def lease_next(
        self, owner: str, agents: Sequence[str], *, limit: int, now: datetime, ttl: float
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` deliveries for ``agents`` (names, or ``group:NAME``): pending
        ones, or leased ones whose lease expired (their owner died), highest priority first,
        then oldest, skipping rows another process is leasing at this moment. Direct runs
        (``arun``) belong to the process that asked for them and are never taken here."""
        if limit <= 0 or not agents:
            return []
        from flock_cli.store.postgres_codec import DELIVERY_COLUMNS, delivery_from_row

        returning = ", ".join("d." + c.strip() for c in DELIVERY_COLUMNS.split(","))

        async def write(conn: AsyncConnection[Any], _: bool) -> builtins.list[Delivery]:
            cursor = await conn.execute(
                "UPDATE flock.deliveries d SET status = 'leased', attempts = d.attempts + 1,"
                " lease_owner = %s, lease_expires_at = %s"
                " FROM (SELECT id FROM flock.deliveries WHERE agent = ANY(%s) AND trigger <> 'direct'"
                " AND ((status = 'pending' AND (not_before IS NULL OR not_before <= %s))"
                " OR (status = 'leased' AND lease_expires_at <= %s))"
                " ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED) AS next"
                f" WHERE d.id = next.id RETURNING {returning}",
                (owner, now + timedelta(seconds=ttl), list(agents), now, now, limit),
            )
            return [delivery_from_row(r) for r in await cursor.fetchall()]

        leased: builtins.list[Delivery] = await self._run(write)
        leased.sort(key=lambda d: (-d.priority, d.created_at))
        return leased

    async def open_work(self) -> tuple[int, int, int]:
        """(pending, leased, unrouted) counts on the board: nothing open means the board is idle."""
        rows = await self._rows(
            "SELECT (SELECT count(*) FROM flock.deliveries WHERE status = 'pending'),"
            " (SELECT count(*) FROM flock.deliveries WHERE status = 'leased'),"
            " (SELECT count(*) FROM flock.artifacts WHERE NOT routed)"
        )
        pending, leased, unrouted = rows[0]
        return pending, leased, unrouted

    # -- board-wide counters ---------------------------------------------------------------------

    async def add_to_counter(self, key: str, amount: float, *, limit: float | None = None) -> float | None:
        """Add ``amount`` to the counter ``key`` atomically and return the new value; with
        ``limit``, only if the new value stays within it (None when it would not)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> float | None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO flock.counters(key, value) VALUES (%s, 0) ON CONFLICT DO NOTHING", (key,)
                )
                cursor = await conn.execute(
                    "UPDATE flock.counters SET value = value + %s WHERE key = %s"
                    " AND (%s::double precision IS NULL OR value + %s <= %s) RETURNING value",
                    (amount, key, limit, amount, limit),
                )
                row = await cursor.fetchone()
                return float(row[0]) if row else None

        # Not repeated after a lost connection: a count must not be added twice.
        value: float | None = await self._run(write)
        return value

    async def counters(self, prefix: str = "") -> dict[str, float]:
        """Every counter whose key starts with ``prefix``."""
        rows = await self._rows(
            "SELECT key, value FROM flock.counters WHERE starts_with(key, %s) ORDER BY key", (prefix,)
        )
        return {k: float(v) for k, v in rows}

    # -- wake-ups --------------------------------------------------------------------------------

    async def listen(self) -> None:
        """Start listening for work and artifacts on a dedicated connection (idempotent)."""
        self.coordinated = True
        if self._listener is not None and not self._listener.done():
            return
        self._listener = asyncio.ensure_future(self._listen_loop())

    def wake_token(self, channel: str) -> asyncio.Event:
        """Take this before looking at the board, then :meth:`wait_for_wakeup` on it: a
        notification that arrives in between is not missed (the token is already set)."""
        return self._wakes.setdefault(channel, asyncio.Event())

    def _signal(self, channel: str) -> None:
        fired = self._wakes.get(channel)
        self._wakes[channel] = asyncio.Event()
        if fired is not None:
            fired.set()

    async def wait_for_wakeup(self, token: asyncio.Event, timeout: float) -> bool:
        """Wait until a notification on the token's channel arrives, or ``timeout`` passes."""
        try:
            await asyncio.wait_for(token.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _listen_loop(self) -> None:
        from flock_cli.store.postgres_connections import is_connection_error

        while True:
            try:
                conn = await self.pool.connect()
            except Exception:
                await asyncio.sleep(1.0)  # the catch-up polls keep work moving meanwhile
                continue
            self._listen_conn = conn
            try:
                await conn.execute(f"LISTEN {WORK}")
                await conn.execute(f"LISTEN {ARTIFACTS}")
                for channel in (WORK, ARTIFACTS):  # whatever was sent while not listening: look once
                    self._signal(channel)
                async for notice in conn.notifies():
                    self._signal(notice.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
            finally:
                self._listen_conn = None
                self.pool.discard(conn)
            await asyncio.sleep(0.2)

    async def wait_to_lead(self, owner: str) -> None:
        """Wait, on a connection of its own, until this process holds the routing lock. The wait
        is PostgreSQL's (``pg_advisory_lock``): no polling, and the lock passes on the moment
        its holder's connection ends. Cancelling the wait closes that connection."""
        from flock_cli.store.postgres_connections import is_connection_error

        await self.ensure_ready()
        while not self.leading:
            try:
                conn = await self.pool.connect()
            except BoardUnavailableError:
                await asyncio.sleep(1.0)
                continue
            try:
                # Named after its owner first, so that processes() can tell who holds the lock.
                await conn.execute(
                    "SELECT set_config('application_name', %s, false), pg_advisory_lock(%s)",
                    (routing_lock_name(os.getpid(), owner), ROUTING_LOCK),
                )
            except BaseException as exc:
                self.pool.discard(conn)  # no await: this may be a cancellation
                if isinstance(exc, Exception) and is_connection_error(exc):
                    await asyncio.sleep(0.5)
                    continue
                raise
            self._leader_conn, self.leader_owner = conn, owner

    async def _close_shared(self) -> None:
        with contextlib.suppress(Exception):
            await self.sync()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        await self.resign()

    async def ensure_ready(self) -> None:
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        raise NotImplementedError


def routing_lock_name(pid: int, owner: str) -> str:
    """The ``application_name`` of the connection on which ``owner`` (an orchestrator process,
    ``pid`` on its host) holds, or waits for, the routing lock, as pg_stat_activity shows it.
    Every connection is ``flock-flow pid <pid>`` (postgres_connections.py); this one names its
    owner too, because processes on different hosts, or flocks in one process, can share a pid.
    PostgreSQL keeps 63 bytes of it: owners are ``flock-`` and 8 hex digits."""
    return f"flock-flow pid {pid} routing-lock {owner}"


def this_host() -> str:
    """The host name a process registers with."""
    return socket.gethostname()
