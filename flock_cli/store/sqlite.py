"""The SQLite board: one WAL-mode file that several processes on one machine share.

Every write is one short ``BEGIN IMMEDIATE`` transaction (no lock upgrade, so no SQLITE_BUSY
mid-transaction); readers never block in WAL mode; ``busy_timeout`` absorbs the brief waits for
another process's write lock. Calls run on the event loop's thread: each is a few hundred
microseconds at most, far cheaper than handing it to a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from flock_cli.core.artifact import Artifact
from flock_cli.core.visibility import AgentIdentity, VisibilitySpec
from flock_cli.store.contract import (
    EXTERNAL,
    ArtifactQuery,
    BlackboardStore,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Page,
    StaleLeaseError,
    Viewer,
    VisibilityDenial,
    denial,
    visible,
)
from flock_cli.store.records import BatchEntry, GateEntry, Lineage, RoutingTx, RunRecord, walk
from flock_cli.store.sqlite_schema import migrate

__all__ = ["DEFAULT_BOARD", "SQLiteBlackboardStore"]

DEFAULT_BOARD = Path(".flock") / "board.db"
_VISIBILITY: TypeAdapter[Any] = TypeAdapter(VisibilitySpec)
_ARTIFACT_COLUMNS = (
    "id, type, payload, produced_by, correlation_id, partition_key, tags, visibility, created_at, version"
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(value: datetime) -> int:
    # Integer microseconds since the epoch: compact, exact, and SQL compares and orders them.
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _ids(blob: bytes) -> tuple[UUID, ...]:
    """UUIDs packed as consecutive 16-byte values (ids are stored as 16-byte blobs)."""
    return tuple(UUID(bytes=blob[i : i + 16]) for i in range(0, len(blob), 16))


def _pack(ids: Sequence[UUID]) -> bytes:
    return b"".join(i.bytes for i in ids)


class SQLiteBlackboardStore(BlackboardStore):
    """A durable board in one SQLite file (created with its folder if missing)."""

    durable = True

    def __init__(self, path: str | Path = DEFAULT_BOARD, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        self.schema_version_before = migrate(self._conn, os.fspath(self.path))
        self._batch: asyncio.Future[None] | None = None

    @contextmanager
    def _write(self, *, single: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic write inside the current group-commit transaction.

        Writes made during one event-loop turn share a single ``BEGIN IMMEDIATE … COMMIT``
        (group commit): each write is a savepoint, so a failing one rolls back alone, and the
        commit runs at the end of the turn. Every writer then awaits :meth:`_committed`, so no
        caller learns of a write before it is durable. ``single=True`` marks a write of one
        statement, which SQLite already makes atomic, so it needs no savepoint.
        """
        if self._batch is None:
            self._conn.execute("BEGIN IMMEDIATE")
            self._batch = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit_batch)
        if single:
            yield self._conn
            return
        self._conn.execute("SAVEPOINT write")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK TO write")
            self._conn.execute("RELEASE write")
            raise
        self._conn.execute("RELEASE write")

    def _commit_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if not batch.done():
                batch.set_exception(exc)
            return
        if not batch.done():
            batch.set_result(None)

    async def _committed(self) -> None:
        """Wait until the group commit holding this turn's writes has committed."""
        batch = self._batch
        if batch is not None:
            await asyncio.shield(batch)

    async def sync(self) -> None:
        """Wait until every write made so far is committed."""
        await self._committed()

    async def close(self) -> None:
        """Commit what is pending and close the connection (SQLite checkpoints the WAL)."""
        await self._committed()
        self._conn.close()

    # -- artifacts -------------------------------------------------------------------------------

    @staticmethod
    def _artifact_row(a: Artifact) -> tuple[Any, ...]:
        return (
            a.id.bytes,
            a.type,
            json.dumps(a.payload, separators=(",", ":")),
            a.produced_by,
            a.correlation_id.bytes if a.correlation_id else None,
            a.partition_key,
            json.dumps(sorted(a.tags)),
            a.visibility.model_dump_json(),
            _ts(a.created_at),
            a.version,
        )

    @staticmethod
    def _artifact(row: Sequence[Any]) -> Artifact:
        return Artifact.trusted(
            id=UUID(bytes=row[0]),
            type=row[1],
            payload=json.loads(row[2]),
            produced_by=row[3],
            correlation_id=UUID(bytes=row[4]) if row[4] else None,
            partition_key=row[5],
            tags=frozenset(json.loads(row[6])),
            visibility=_VISIBILITY.validate_json(row[7]),
            created_at=_dt(row[8]),
            version=row[9],
        )

    def _insert_artifacts(
        self, conn: sqlite3.Connection, artifacts: Sequence[Artifact], produced_in: UUID | None = None
    ) -> None:
        for artifact in artifacts:
            try:
                cursor = conn.execute(
                    f"INSERT INTO artifacts ({_ARTIFACT_COLUMNS}, produced_in)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (*self._artifact_row(artifact), produced_in.bytes if produced_in else None),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"artifact {artifact.id} already exists") from None
            if artifact.tags:
                conn.executemany(
                    "INSERT INTO artifact_tags(tag, artifact_seq) VALUES (?, ?)",
                    [(tag, cursor.lastrowid) for tag in artifact.tags],
                )

    async def append(self, artifacts: Sequence[Artifact]) -> None:
        """Insert all artifacts in one transaction."""
        with self._write() as conn:
            self._insert_artifacts(conn, artifacts)
        await self._committed()

    async def _filter_visible(
        self, artifacts: builtins.list[Artifact], viewer: Viewer, now: datetime
    ) -> builtins.list[Artifact]:
        if not isinstance(viewer, AgentIdentity):
            return artifacts
        shown, denied = [], []
        for artifact in artifacts:
            if visible(artifact, viewer, now):
                shown.append(artifact)
            else:
                denied.append(denial(artifact, viewer, now, "read"))
        if denied:
            await self._insert_denials(denied)
        return shown

    async def query(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Page:
        """SQL filters, then visibility in Python, then the page (so ``total`` counts visible rows)."""
        query = query or ArtifactQuery()
        where, params = self._where(query)
        order = "DESC" if query.newest_first else "ASC"
        rows = self._conn.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts {where} ORDER BY seq {order}", params
        ).fetchall()
        shown = await self._filter_visible([self._artifact(r) for r in rows], viewer, self.now(now))
        end = None if query.limit is None else query.offset + query.limit
        return Page(items=shown[query.offset : end], total=len(shown))

    @staticmethod
    def _where(query: ArtifactQuery) -> tuple[str, builtins.list[Any]]:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []

        def among(column: str, values: frozenset[str]) -> None:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(sorted(values))

        if query.types is not None:
            among("type", query.types)
        if query.produced_by is not None:
            among("produced_by", query.produced_by)
        if query.correlation_id is not None:
            clauses.append("correlation_id = ?")
            params.append(query.correlation_id.bytes)
        if query.since is not None:
            clauses.append("created_at >= ?")
            params.append(_ts(query.since))
        if query.until is not None:
            clauses.append("created_at < ?")
            params.append(_ts(query.until))
        for tag in sorted(query.tags or ()):
            clauses.append("seq IN (SELECT artifact_seq FROM artifact_tags WHERE tag = ?)")
            params.append(tag)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    async def get_many(
        self, artifact_ids: Sequence[UUID], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> builtins.list[Artifact]:
        """Look up by id (in the order asked), then filter by visibility."""
        if not artifact_ids:
            return []
        keys = [i.bytes for i in artifact_ids]
        rows = self._conn.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE id IN ({','.join('?' * len(keys))})", keys
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        found = [self._artifact(by_id[k]) for k in keys if k in by_id]
        return await self._filter_visible(found, viewer, self.now(now))

    # -- consumptions ----------------------------------------------------------------------------

    async def claim_consumption(self, artifact_id: UUID, consumer: str) -> bool:
        """``INSERT … ON CONFLICT DO NOTHING``: one row means the claim is ours."""
        with self._write(single=True) as conn:
            cursor = conn.execute(
                "INSERT INTO consumptions(artifact_id, consumer) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (artifact_id.bytes, consumer),
            )
        await self._committed()
        return cursor.rowcount == 1

    async def consumers_of(self, artifact_id: UUID) -> set[str]:
        """Every consumer recorded for the artifact."""
        rows = self._conn.execute(
            "SELECT consumer FROM consumptions WHERE artifact_id = ?", (artifact_id.bytes,)
        ).fetchall()
        return {r[0] for r in rows}

    # -- deliveries ------------------------------------------------------------------------------

    _DELIVERY_COLUMNS = (
        "id, agent, artifact_ids, created_at, status, attempts, lease_owner, lease_expires_at,"
        " priority, trigger, batch_trigger, group_sizes, subscription"
    )

    @staticmethod
    def _delivery(row: Sequence[Any]) -> Delivery:
        return Delivery(
            id=UUID(bytes=row[0]),
            agent=row[1],
            artifact_ids=_ids(row[2]),
            created_at=_dt(row[3]),
            status=DeliveryStatus(row[4]),
            attempts=row[5],
            lease_owner=row[6],
            lease_expires_at=_dt(row[7]) if row[7] else None,
            priority=row[8],
            trigger=row[9],
            batch_trigger=row[10],
            group_sizes=tuple(json.loads(row[11])),
            subscription=row[12],
        )

    def _insert_delivery(self, conn: sqlite3.Connection, d: Delivery) -> None:
        try:
            conn.execute(
                f"INSERT INTO deliveries ({self._DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    d.id.bytes,
                    d.agent,
                    _pack(d.artifact_ids),
                    _ts(d.created_at),
                    d.status.value,
                    d.attempts,
                    d.lease_owner,
                    _ts(d.lease_expires_at) if d.lease_expires_at else None,
                    d.priority,
                    d.trigger,
                    d.batch_trigger,
                    json.dumps(list(d.group_sizes)),
                    d.subscription,
                ),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"delivery {d.id} already exists") from None
        conn.executemany(
            "INSERT OR IGNORE INTO delivery_inputs(artifact_id, delivery_id) VALUES (?, ?)",
            [(i.bytes, d.id.bytes) for i in d.artifact_ids],
        )

    async def add_delivery(self, delivery: Delivery) -> None:
        """Insert one delivery row."""
        with self._write() as conn:
            self._insert_delivery(conn, delivery)
        await self._committed()

    async def lease(self, delivery_id: UUID, owner: str, *, now: datetime, ttl: float) -> Delivery | None:
        """One conditional UPDATE … RETURNING: pending, or leased with an expired lease."""
        with self._write(single=True) as conn:
            row = conn.execute(
                "UPDATE deliveries SET status = 'leased', attempts = attempts + 1, lease_owner = ?,"
                " lease_expires_at = ? WHERE id = ? AND (status = 'pending'"
                " OR (status = 'leased' AND lease_expires_at <= ?))"
                f" RETURNING {self._DELIVERY_COLUMNS}",
                (owner, _ts(now + timedelta(seconds=ttl)), delivery_id.bytes, _ts(now)),
            ).fetchone()
        await self._committed()
        return self._delivery(row) if row else None

    def _fenced_update(self, conn: sqlite3.Connection, delivery_id: UUID, attempt: int, status: str) -> None:
        cursor = conn.execute(
            "UPDATE deliveries SET status = ?, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = ? AND status = 'leased' AND attempts = ?",
            (status, delivery_id.bytes, attempt),
        )
        if cursor.rowcount != 1:
            row = conn.execute(
                "SELECT status, attempts FROM deliveries WHERE id = ?", (delivery_id.bytes,)
            ).fetchone()
            raise StaleLeaseError(
                f"delivery {delivery_id}: attempt {attempt} does not hold the lease"
                f" (now {row[0] if row else 'missing'}, attempt {row[1] if row else '-'})"
            )

    async def complete(self, delivery_id: UUID, attempt: int, outputs: Sequence[Artifact]) -> None:
        """Fenced completion and the outputs, in one transaction."""
        with self._write() as conn:
            self._fenced_update(conn, delivery_id, attempt, DeliveryStatus.DONE.value)
            self._insert_artifacts(conn, outputs, produced_in=delivery_id)
        await self._committed()

    async def release(self, delivery_id: UUID, attempt: int, *, dead: bool = False) -> None:
        """Fenced: back to pending (for a retry) or dead."""
        status = DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
        with self._write(single=True) as conn:
            self._fenced_update(conn, delivery_id, attempt, status.value)
        await self._committed()

    async def get_delivery(self, delivery_id: UUID) -> Delivery | None:
        """One delivery row."""
        row = self._conn.execute(
            f"SELECT {self._DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id.bytes,)
        ).fetchone()
        return self._delivery(row) if row else None

    async def deliveries(self, *, status: DeliveryStatus | None = None) -> builtins.list[Delivery]:
        """Oldest first."""
        sql = f"SELECT {self._DELIVERY_COLUMNS} FROM deliveries"
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status.value,)
        return [self._delivery(r) for r in self._conn.execute(sql + " ORDER BY seq", params)]

    async def release_leases(self, owner: str) -> int:
        """One UPDATE: the dead owner's leases become pending (attempts kept for fencing)."""
        with self._write(single=True) as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL"
                " WHERE status = 'leased' AND lease_owner = ?",
                (owner,),
            )
        await self._committed()
        return cursor.rowcount

    # -- routing state ---------------------------------------------------------------------------

    @staticmethod
    def _many(conn: sqlite3.Connection, sql: str, rows: builtins.list[tuple[Any, ...]]) -> None:
        if rows:  # an empty executemany still costs a statement preparation
            conn.executemany(sql, rows)

    async def commit_routing(self, tx: RoutingTx) -> None:
        """One savepoint in the current group commit; a claim that already exists rolls the step
        back. Returns once the step is written; :meth:`sync` waits until it is durable."""
        with self._write() as conn:
            try:
                self._many(
                    conn,
                    "INSERT INTO consumptions(artifact_id, consumer) VALUES (?, ?)",
                    [(a.bytes, c) for a, c in tx.claims],
                )
            except sqlite3.IntegrityError:
                raise ValueError("an artifact in this routing step was already claimed") from None
            for delivery in tx.deliveries:
                self._insert_delivery(conn, delivery)
            self._many(
                conn,
                "INSERT INTO gate_entries(sub_key, artifact_id, arrived_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(e.sub_key, e.artifact_id.bytes, _ts(e.arrived_at)) for e in tx.gate_adds],
            )
            self._many(
                conn,
                "DELETE FROM gate_entries WHERE sub_key = ? AND artifact_id = ?",
                [(k, a.bytes) for k, a in tx.gate_removes],
            )
            self._many(conn, "DELETE FROM batch_entries WHERE sub_key = ?", [(k,) for k in tx.batch_clears])
            self._many(
                conn,
                "INSERT INTO batch_entries(sub_key, artifact_ids, arrived_at) VALUES (?, ?, ?)",
                [(e.sub_key, _pack(e.artifact_ids), _ts(e.arrived_at)) for e in tx.batch_adds],
            )
            self._many(
                conn,
                "INSERT INTO denials(artifact_id, body) VALUES (?, ?)",
                [(d.artifact_id.bytes, d.model_dump_json()) for d in tx.denials],
            )
            self._many(conn, "UPDATE artifacts SET routed = 1 WHERE id = ?", [(i.bytes,) for i in tx.routed])

    async def unrouted(self, limit: int = 1000) -> builtins.list[Artifact]:
        """Uses the partial index of unrouted artifacts."""
        rows = self._conn.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE routed = 0 ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [self._artifact(r) for r in rows]

    async def gate_entries(self) -> builtins.list[GateEntry]:
        """Arrival order."""
        rows = self._conn.execute("SELECT sub_key, artifact_id, arrived_at FROM gate_entries ORDER BY seq")
        return [GateEntry(sub_key=r[0], artifact_id=UUID(bytes=r[1]), arrived_at=_dt(r[2])) for r in rows]

    async def batch_entries(self) -> builtins.list[BatchEntry]:
        """Arrival order."""
        rows = self._conn.execute("SELECT sub_key, artifact_ids, arrived_at FROM batch_entries ORDER BY seq")
        return [BatchEntry(sub_key=r[0], artifact_ids=_ids(r[1]), arrived_at=_dt(r[2])) for r in rows]

    # -- runs, lineage ---------------------------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Upsert the record."""
        with self._write(single=True) as conn:
            conn.execute(
                "INSERT INTO runs(id, started_at, body) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (run.id.bytes, _ts(run.started_at), run.model_dump_json()),
            )
        await self._committed()

    async def runs(self) -> builtins.list[RunRecord]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM runs ORDER BY started_at, id").fetchall()
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def _parents_of(self, artifact_id: UUID) -> builtins.list[UUID]:
        row = self._conn.execute(
            "SELECT d.artifact_ids FROM artifacts a JOIN deliveries d ON d.id = a.produced_in WHERE a.id = ?",
            (artifact_id.bytes,),
        ).fetchone()
        return list(_ids(row[0])) if row else []

    def _children_of(self, artifact_id: UUID) -> builtins.list[UUID]:
        rows = self._conn.execute(
            "SELECT a.id FROM delivery_inputs i JOIN artifacts a ON a.produced_in = i.delivery_id"
            " WHERE i.artifact_id = ? ORDER BY a.seq",
            (artifact_id.bytes,),
        ).fetchall()
        return [UUID(bytes=r[0]) for r in rows]

    async def lineage(self, artifact_id: UUID) -> Lineage:
        """Walk produced_in / delivery_inputs in both directions."""
        return Lineage(
            artifact_id=artifact_id,
            parents=walk(artifact_id, self._parents_of),
            children=walk(artifact_id, self._children_of),
        )

    # -- dead letters ----------------------------------------------------------------------------

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it as JSON."""
        with self._write(single=True) as conn:
            conn.execute(
                "INSERT INTO dead_letters(id, body) VALUES (?, ?)",
                (letter.id.bytes, letter.model_dump_json()),
            )
        await self._committed()

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM dead_letters ORDER BY seq").fetchall()
        return [DeadLetter.model_validate_json(r[0]) for r in rows]

    async def take_dead_letter(self, letter_id: UUID) -> DeadLetter | None:
        """Delete and return it (``DELETE … RETURNING``)."""
        with self._write(single=True) as conn:
            row = conn.execute(
                "DELETE FROM dead_letters WHERE id = ? RETURNING body", (letter_id.bytes,)
            ).fetchone()
        await self._committed()
        return DeadLetter.model_validate_json(row[0]) if row else None

    # -- audit -----------------------------------------------------------------------------------

    async def _insert_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        with self._write(single=True) as conn:
            conn.executemany(
                "INSERT INTO denials(artifact_id, body) VALUES (?, ?)",
                [(d.artifact_id.bytes, d.model_dump_json()) for d in denials],
            )
        await self._committed()

    async def record_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        """Append them."""
        await self._insert_denials(denials)

    async def denials(self) -> builtins.list[VisibilityDenial]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM denials ORDER BY seq").fetchall()
        return [VisibilityDenial.model_validate_json(r[0]) for r in rows]
