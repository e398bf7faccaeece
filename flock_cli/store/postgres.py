"""The PostgreSQL board: one database that many orchestrator processes, on many machines, share.

It implements the same contract as the in-memory and SQLite boards (the contract suite runs on
all three), plus what processes sharing a board need (:mod:`flock_cli.store.postgres_shared`).
Every operation is one transaction on a pooled autocommit connection. A write that was cut off by
a lost connection is repeated once the server is back, and recognises its own earlier work (a
completion already made by the same attempt, artifacts already appended), so a server restart
neither loses nor doubles anything.

Needs the optional extra ``flock-flow[postgres]`` (psycopg 3), imported when a board is opened.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.core.artifact import Artifact
from flock_cli.errors import UsageError
from flock_cli.store.board_url import redact
from flock_cli.store.contract import (
    EXTERNAL,
    ArtifactQuery,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Page,
    StaleLeaseError,
    Viewer,
    VisibilityDenial,
)
from flock_cli.store.postgres_codec import (
    ARTIFACT_COLUMNS,
    CLAIM,
    DELIVERY_COLUMNS,
    INSERT_ARTIFACT,
    artifact_from_row,
    artifact_params,
    delivery_from_row,
    where_clause,
)
from flock_cli.store.postgres_connections import ConnectionPool, is_connection_error
from flock_cli.store.postgres_routing import RoutingStateMixin
from flock_cli.store.records import Lineage, RunRecord, walk

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["PostgresBlackboardStore"]


class PostgresBlackboardStore(RoutingStateMixin):
    """A durable board in a PostgreSQL database, shared by every process given its URL.

    Args:
        url: a libpq connection URL, ``postgresql://user@host:5432/db``. A password is better
            kept in ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both) than in the URL.
        pool_size: connections this process opens at most (plus one for routing and one that
            listens for wake-ups when the board is shared).
        reconnect_timeout: seconds a lost server is waited for before operations fail.

    The schema is created, or migrated forward, on first use; nothing connects before that.
    """

    durable = True

    def __init__(
        self, url: str, *, pool_size: int = 10, connect_timeout: float = 10.0, reconnect_timeout: float = 60.0
    ) -> None:
        if pool_size < 1:
            raise UsageError("pool_size must be at least 1")
        self.url = url
        self.where = redact(url)
        self.pool = ConnectionPool(
            url,
            self.where,
            size=pool_size,
            connect_timeout=connect_timeout,
            reconnect_timeout=reconnect_timeout,
        )
        self.schema_version_before: int | None = None
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        self._ready_loop: asyncio.AbstractEventLoop | None = None
        super().__init__()

    def __repr__(self) -> str:
        return f"PostgresBlackboardStore({self.where!r})"

    async def ensure_ready(self) -> None:
        """Connect once and create or migrate the schema (BoardUnavailableError at once if the
        server cannot be reached: a wrong URL should not wait for a reconnect timeout)."""
        if self._ready:
            return
        loop = asyncio.get_running_loop()
        if self._ready_lock is None or self._ready_loop is not loop:
            self._ready_lock, self._ready_loop = asyncio.Lock(), loop
        async with self._ready_lock:
            await self._migrate_once()

    async def _migrate_once(self) -> None:
        if self._ready:  # another task did it while this one waited for the lock
            return
        from flock_cli.store.postgres_schema import migrate

        conn = await self.pool.connect()  # refused: BoardUnavailableError at once
        try:
            self.schema_version_before = await migrate(conn, self.where)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # Cut off after the server was reached (a restart, a terminated backend): the
            # migration is one transaction that reads the version first, so it runs again safely.
            self.schema_version_before = await self.pool.run(lambda again, _: migrate(again, self.where))
        finally:
            self.pool.discard(conn)
        self._ready = True

    async def _run(self, operation: Any) -> Any:
        await self.ensure_ready()
        return await self.pool.run(operation)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        async def read(conn: AsyncConnection[Any], _: bool) -> builtins.list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

        rows: builtins.list[tuple[Any, ...]] = await self._run(read)
        return rows

    async def close(self) -> None:
        """Wait for queued routing steps, leave the board if shared, close the connections."""
        await self._close_shared()
        await self.pool.close()

    # -- artifacts -------------------------------------------------------------------------------

    @staticmethod
    async def insert_artifacts(
        conn: AsyncConnection[Any], artifacts: Sequence[Artifact], produced_in: UUID | None, repeat: bool
    ) -> None:
        """Insert artifacts in the open transaction; an id already there is an error, unless this
        is the repeat of a write cut off at its commit (then it is this write's own artifact)."""
        if not artifacts:
            return
        async with conn.cursor() as cursor:
            await cursor.executemany(INSERT_ARTIFACT, [artifact_params(a, produced_in) for a in artifacts])
            inserted = cursor.rowcount
        if inserted != len(artifacts) and not repeat:
            ids = [a.id for a in artifacts]
            found = await (
                await conn.execute("SELECT id FROM flock.artifacts WHERE id = ANY(%s)", (ids,))
            ).fetchall()
            raise ValueError(f"artifact {found[0][0] if found else ids[0]} already exists")

    async def append(self, artifacts: Sequence[Artifact]) -> None:
        """Insert all artifacts in one transaction (and wake the processes sharing the board)."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            async with conn.transaction():
                await self.insert_artifacts(conn, artifacts, None, repeat)
                await self.notify_artifacts(conn)

        await self._run(write)

    async def query(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Page:
        """SQL filters, then visibility in Python, then the page (so ``total`` counts visible rows)."""
        query = query or ArtifactQuery()
        where, params = where_clause(query)
        order = "DESC" if query.newest_first else "ASC"
        rows = await self._rows(
            f"SELECT {ARTIFACT_COLUMNS} FROM flock.artifacts {where} ORDER BY seq {order}", params
        )
        shown = await self._readable([artifact_from_row(r) for r in rows], viewer, self.now(now))
        end = None if query.limit is None else query.offset + query.limit
        return Page(items=shown[query.offset : end], total=len(shown))

    async def head(self) -> int:
        """The newest position."""
        rows = await self._rows("SELECT COALESCE(MAX(seq), 0) FROM flock.artifacts")
        return int(rows[0][0])

    async def feed(
        self,
        after: int,
        query: ArtifactQuery | None = None,
        *,
        limit: int = 500,
        also: Sequence[int] = (),
    ) -> builtins.list[tuple[int, Artifact]]:
        """``seq`` is the position. Many processes insert at once, and a transaction that took a
        lower ``seq`` may commit after one that took a higher: followers pass such gaps in ``also``."""
        where, params = where_clause(query or ArtifactQuery())
        where_seq = "(seq > %s OR seq = ANY(%s))"
        where = f"{where} AND {where_seq}" if where else f"WHERE {where_seq}"
        rows = await self._rows(
            f"SELECT seq, {ARTIFACT_COLUMNS} FROM flock.artifacts {where} ORDER BY seq LIMIT %s",
            [*params, after, list(also), limit],
        )
        return [(row[0], artifact_from_row(row[1:])) for row in rows]

    async def get_many(
        self, artifact_ids: Sequence[UUID], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> builtins.list[Artifact]:
        """Look up by id (in the order asked), then filter by visibility."""
        if not artifact_ids:
            return []
        rows = await self._rows(
            f"SELECT {ARTIFACT_COLUMNS} FROM flock.artifacts WHERE id = ANY(%s)", (list(artifact_ids),)
        )
        by_id = {row[0]: row for row in rows}
        found = [artifact_from_row(by_id[i]) for i in artifact_ids if i in by_id]
        return await self._readable(found, viewer, self.now(now))

    # -- consumptions ----------------------------------------------------------------------------

    async def claim_consumption(self, artifact_id: UUID, consumer: str) -> bool:
        """``INSERT … ON CONFLICT DO NOTHING``: one row means the claim is ours. (A claim cut off
        at its commit reads as taken when repeated: never twice, at worst not at all.)"""

        async def write(conn: AsyncConnection[Any], _: bool) -> bool:
            cursor = await conn.execute(
                CLAIM,
                (artifact_id, consumer),
            )
            return cursor.rowcount == 1

        taken: bool = await self._run(write)
        return taken

    async def consumers_of(self, artifact_id: UUID) -> set[str]:
        """Every consumer recorded for the artifact."""
        rows = await self._rows(
            "SELECT consumer FROM flock.consumptions WHERE artifact_id = %s", (artifact_id,)
        )
        return {r[0] for r in rows}

    # -- deliveries ------------------------------------------------------------------------------

    async def add_delivery(self, delivery: Delivery) -> None:
        """Insert one delivery row (and wake the processes that run its agent)."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            async with conn.transaction():
                await self.insert_delivery(conn, delivery, repeat)
                await self.notify_work(conn)

        await self._run(write)

    async def lease(self, delivery_id: UUID, owner: str, *, now: datetime, ttl: float) -> Delivery | None:
        """One conditional UPDATE … RETURNING: pending, or leased with an expired lease."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> Delivery | None:
            cursor = await conn.execute(
                "UPDATE flock.deliveries SET status = 'leased', attempts = attempts + 1, lease_owner = %s,"
                " lease_expires_at = %s WHERE id = %s AND (status = 'pending'"
                " OR (status = 'leased' AND lease_expires_at <= %s))"
                f" RETURNING {DELIVERY_COLUMNS}",
                (owner, now + timedelta(seconds=ttl), delivery_id, now),
            )
            row = await cursor.fetchone()
            if row is None and repeat:  # the first try may have taken it for us
                mine = await self.get_delivery_on(conn, delivery_id)
                if mine is not None and mine.status == DeliveryStatus.LEASED and mine.lease_owner == owner:
                    return mine
            return delivery_from_row(row) if row else None

        leased: Delivery | None = await self._run(write)
        return leased

    @staticmethod
    async def get_delivery_on(conn: AsyncConnection[Any], delivery_id: UUID) -> Delivery | None:
        """One delivery, read on ``conn``."""
        cursor = await conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM flock.deliveries WHERE id = %s", (delivery_id,)
        )
        row = await cursor.fetchone()
        return delivery_from_row(row) if row else None

    async def _fenced_update(
        self, conn: AsyncConnection[Any], delivery_id: UUID, attempt: int, status: str, repeat: bool
    ) -> bool:
        """Move a leased delivery held by ``attempt`` to ``status``. False when this is a repeat
        and the first try already did it; StaleLeaseError when ``attempt`` lost the lease."""
        cursor = await conn.execute(
            "UPDATE flock.deliveries SET status = %s, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = %s AND status = 'leased' AND attempts = %s",
            (status, delivery_id, attempt),
        )
        if cursor.rowcount == 1:
            return True
        now = await self.get_delivery_on(conn, delivery_id)
        if repeat and now is not None and now.status.value == status and now.attempts == attempt:
            return False
        raise StaleLeaseError(
            f"delivery {delivery_id}: attempt {attempt} does not hold the lease"
            f" (now {now.status.value if now else 'missing'}, attempt {now.attempts if now else '-'})"
        )

    async def complete(
        self,
        delivery_id: UUID,
        attempt: int,
        outputs: Sequence[Artifact],
        *,
        routed: Collection[UUID] = (),
    ) -> None:
        """Fenced completion and the outputs (``routed`` ones marked so), in one transaction."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            async with conn.transaction():
                if await self._fenced_update(conn, delivery_id, attempt, "done", repeat):
                    await self.insert_artifacts(conn, outputs, delivery_id, False)
                    if routed:
                        await conn.execute(
                            "UPDATE flock.artifacts SET routed = true WHERE id = ANY(%s)", (list(routed),)
                        )
                    if outputs:
                        await self.notify_artifacts(conn)

        await self._run(write)

    async def release(
        self, delivery_id: UUID, attempt: int, *, dead: bool = False, retry_at: datetime | None = None
    ) -> None:
        """Fenced: back to pending (for a retry, which no process leases before ``retry_at``) or dead."""
        status = "dead" if dead else "pending"

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            async with conn.transaction():
                if await self._fenced_update(conn, delivery_id, attempt, status, repeat) and not dead:
                    if retry_at is not None:
                        await conn.execute(
                            "UPDATE flock.deliveries SET not_before = %s WHERE id = %s",
                            (retry_at, delivery_id),
                        )
                    await self.notify_work(conn)

        await self._run(write)

    async def bury(self, delivery_id: UUID, attempt: int | None, letter: DeadLetter) -> None:
        """The fenced (or pending-only) UPDATE to dead and the letter's INSERT, in one transaction."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            async with conn.transaction():
                if attempt is not None:
                    await self._fenced_update(conn, delivery_id, attempt, "dead", repeat)
                else:
                    cursor = await conn.execute(
                        "UPDATE flock.deliveries SET status = 'dead' WHERE id = %s AND status = 'pending'",
                        (delivery_id,),
                    )
                    if cursor.rowcount != 1 and not repeat:
                        raise StaleLeaseError(f"delivery {delivery_id} is not pending")
                await self._insert_letter(conn, letter, repeat)

        await self._run(write)

    async def get_delivery(self, delivery_id: UUID) -> Delivery | None:
        """One delivery row."""

        async def read(conn: AsyncConnection[Any], _: bool) -> Delivery | None:
            return await self.get_delivery_on(conn, delivery_id)

        found: Delivery | None = await self._run(read)
        return found

    async def deliveries(self, *, status: DeliveryStatus | None = None) -> builtins.list[Delivery]:
        """Oldest first."""
        if status is None:
            rows = await self._rows(f"SELECT {DELIVERY_COLUMNS} FROM flock.deliveries ORDER BY seq")
        else:
            rows = await self._rows(
                f"SELECT {DELIVERY_COLUMNS} FROM flock.deliveries WHERE status = %s ORDER BY seq",
                (status.value,),
            )
        return [delivery_from_row(r) for r in rows]

    async def release_leases(self, owner: str) -> int:
        """One UPDATE: the owner's leases become pending (attempts kept for fencing)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> int:
            async with conn.transaction():
                cursor = await conn.execute(
                    "UPDATE flock.deliveries SET status = 'pending', lease_owner = NULL,"
                    " lease_expires_at = NULL WHERE status = 'leased' AND lease_owner = %s",
                    (owner,),
                )
                if cursor.rowcount:
                    await self.notify_work(conn)
                return cursor.rowcount

        released: int = await self._run(write)
        return released

    # -- runs, lineage ---------------------------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Upsert the record."""

        async def write(conn: AsyncConnection[Any], _: bool) -> None:
            await conn.execute(
                "INSERT INTO flock.runs(id, started_at, body) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (run.id, run.started_at, run.model_dump_json()),
            )

        await self._run(write)

    async def runs(self) -> builtins.list[RunRecord]:
        """Oldest first."""
        rows = await self._rows("SELECT body FROM flock.runs ORDER BY started_at, id")
        return [RunRecord.model_validate(r[0]) for r in rows]

    async def _full_lineage(self, artifact_id: UUID) -> Lineage:
        """Walk produced_in / delivery_inputs in both directions (one query per step)."""
        parents: dict[UUID, builtins.list[UUID]] = {}
        children: dict[UUID, builtins.list[UUID]] = {}

        async def load(start: UUID, table: dict[UUID, builtins.list[UUID]], sql: str) -> None:
            frontier = [start]
            while frontier:
                rows = await self._rows(sql, (frontier,))
                for node in frontier:
                    table.setdefault(node, [])
                for node, found in rows:
                    table[node].append(found)
                frontier = list({found for _, found in rows if found not in table})

        await load(
            artifact_id,
            parents,
            "SELECT a.id, u.input FROM flock.artifacts a JOIN flock.deliveries d ON d.id = a.produced_in,"
            " unnest(d.artifact_ids) WITH ORDINALITY AS u(input, n) WHERE a.id = ANY(%s) ORDER BY a.id, u.n",
        )
        await load(
            artifact_id,
            children,
            "SELECT i.artifact_id, a.id FROM flock.delivery_inputs i JOIN flock.artifacts a"
            " ON a.produced_in = i.delivery_id WHERE i.artifact_id = ANY(%s) ORDER BY a.seq",
        )
        return Lineage(
            artifact_id=artifact_id,
            parents=walk(artifact_id, lambda i: parents.get(i, [])),
            children=walk(artifact_id, lambda i: children.get(i, [])),
        )

    # -- dead letters ----------------------------------------------------------------------------

    @staticmethod
    async def _insert_letter(conn: AsyncConnection[Any], letter: DeadLetter, repeat: bool) -> None:
        cursor = await conn.execute(
            "INSERT INTO flock.dead_letters(id, body) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (letter.id, letter.model_dump_json()),
        )
        if cursor.rowcount != 1 and not repeat:
            raise ValueError(f"dead letter {letter.id} already exists")

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it as JSON."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            await self._insert_letter(conn, letter, repeat)

        await self._run(write)

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Oldest first."""
        rows = await self._rows("SELECT body FROM flock.dead_letters ORDER BY seq")
        return [DeadLetter.model_validate(r[0]) for r in rows]

    async def take_dead_letter(self, letter_id: UUID) -> DeadLetter | None:
        """Delete and return it (``DELETE … RETURNING``)."""

        async def write(conn: AsyncConnection[Any], _: bool) -> DeadLetter | None:
            cursor = await conn.execute(
                "DELETE FROM flock.dead_letters WHERE id = %s RETURNING body", (letter_id,)
            )
            row = await cursor.fetchone()
            return DeadLetter.model_validate(row[0]) if row else None

        taken: DeadLetter | None = await self._run(write)
        return taken

    # -- audit -----------------------------------------------------------------------------------

    async def record_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        """Append them."""
        if not denials:
            return
        rows = [(d.artifact_id, d.model_dump_json()) for d in denials]

        async def write(conn: AsyncConnection[Any], _: bool) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany("INSERT INTO flock.denials(artifact_id, body) VALUES (%s, %s)", rows)

        await self._run(write)

    async def denials(self) -> builtins.list[VisibilityDenial]:
        """Oldest first."""
        rows = await self._rows("SELECT body FROM flock.denials ORDER BY seq")
        return [VisibilityDenial.model_validate(r[0]) for r in rows]
