"""The SQLite board: one WAL-mode file that several processes on one machine share.

Writes are queued and committed together at the end of each event-loop turn
(:mod:`flock_cli.store.sqlite_commit`); each caller resumes once its write is committed. Readers
never block in WAL mode, and ``busy_timeout`` absorbs the brief waits for another process's write
lock.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from flock_cli.core.artifact import Artifact
from flock_cli.private_files import create_private_file, make_private_dirs
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
)
from flock_cli.store.records import BatchEntry, GateEntry, Lineage, RoutingTx, RunRecord, walk
from flock_cli.store.sqlite_codec import (
    ARTIFACT_COLUMNS,
    DELIVERY_COLUMNS,
    artifact_from_row,
    artifact_row,
    delivery_from_row,
    delivery_row,
    from_micros,
    pack_ids,
    to_micros,
    unpack_ids,
    where_clause,
)
from flock_cli.store.sqlite_commit import GroupCommit
from flock_cli.store.sqlite_schema import migrate

__all__ = ["DEFAULT_BOARD", "SQLiteBlackboardStore"]

DEFAULT_BOARD = Path(".flock") / "board.db"


class SQLiteBlackboardStore(BlackboardStore):
    """A durable board in one SQLite file (created owner-only with its folder if missing)."""

    durable = True

    def __init__(self, path: str | Path = DEFAULT_BOARD, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        if os.fspath(path) != ":memory:":
            # The board holds every payload, private and tenant ones too: a new board (and its
            # folder) is owner-only, and SQLite gives its -wal and -shm files the board's mode.
            make_private_dirs(self.path.parent)
            create_private_file(self.path)
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        try:
            self.schema_version_before = migrate(self._conn, os.fspath(self.path))
        except BaseException:
            self._conn.close()
            raise
        self._group = self._group_commit()
        # Queue a write; its future resolves to its result once committed (see ``GroupCommit``).
        self._write = self._group.write

    def _group_commit(self) -> GroupCommit:
        """The group commit of this board's connection (a fault-injecting test makes its own)."""
        return GroupCommit(self._conn, self.path)

    async def sync(self) -> None:
        """Wait until every routing step queued so far has committed (raising the first failure).

        Other writes are awaited by their callers, so only routing steps are tracked here.
        """
        await self._group.sync()

    async def close(self) -> None:
        """Commit what is queued and close the connection (SQLite checkpoints the WAL)."""
        with contextlib.suppress(Exception):
            await self.sync()
        self._group.close()
        self._conn.close()

    # -- artifacts -------------------------------------------------------------------------------

    def _insert_artifacts(
        self,
        conn: sqlite3.Connection,
        artifacts: Sequence[Artifact],
        produced_in: UUID | None = None,
        routed: Collection[UUID] = (),
    ) -> None:
        for artifact in artifacts:
            try:
                cursor = conn.execute(
                    _INSERT_ARTIFACT,
                    (
                        *artifact_row(artifact),
                        produced_in.bytes if produced_in else None,
                        1 if artifact.id in routed else 0,
                    ),
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
        await self._write(lambda conn: self._insert_artifacts(conn, artifacts))

    async def query(
        self, query: ArtifactQuery | None = None, *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> Page:
        """SQL filters, then visibility in Python, then the page (so ``total`` counts visible rows)."""
        query = query or ArtifactQuery()
        where, params = where_clause(query)
        order = "DESC" if query.newest_first else "ASC"
        rows = self._conn.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts {where} ORDER BY seq {order}", params
        ).fetchall()
        shown = await self._readable([artifact_from_row(r) for r in rows], viewer, self.now(now))
        end = None if query.limit is None else query.offset + query.limit
        return Page(items=shown[query.offset : end], total=len(shown))

    async def open_work(self) -> tuple[int, int, int]:
        """(pending, leased, unrouted), counted in SQL (the service asks often)."""
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'),"
            " (SELECT count(*) FROM deliveries WHERE status = 'leased'),"
            " (SELECT count(*) FROM artifacts WHERE routed = 0)"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def head(self) -> int:
        """The newest position."""
        row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM artifacts").fetchone()
        return int(row[0])

    async def feed(
        self,
        after: int,
        query: ArtifactQuery | None = None,
        *,
        limit: int = 500,
        also: Sequence[int] = (),
    ) -> builtins.list[tuple[int, Artifact]]:
        """``seq`` is the position: one writer at a time, so positions appear in order."""
        where, params = where_clause(query or ArtifactQuery())
        holes = list(also)
        where_seq = f"(seq > ? OR seq IN ({','.join('?' * len(holes))}))" if holes else "seq > ?"
        where = f"{where} AND {where_seq}" if where else f"WHERE {where_seq}"
        rows = self._conn.execute(
            f"SELECT seq, {ARTIFACT_COLUMNS} FROM artifacts {where} ORDER BY seq LIMIT ?",
            [*params, after, *holes, limit],
        ).fetchall()
        return [(row[0], artifact_from_row(row[1:])) for row in rows]

    async def get_many(
        self, artifact_ids: Sequence[UUID], *, viewer: Viewer = EXTERNAL, now: datetime | None = None
    ) -> builtins.list[Artifact]:
        """Look up by id (in the order asked), then filter by visibility."""
        if not artifact_ids:
            return []
        keys = [i.bytes for i in artifact_ids]
        rows = self._conn.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id IN ({','.join('?' * len(keys))})", keys
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        found = [artifact_from_row(by_id[k]) for k in keys if k in by_id]
        return await self._readable(found, viewer, self.now(now))

    # -- consumptions ----------------------------------------------------------------------------

    async def claim_consumption(self, artifact_id: UUID, consumer: str) -> bool:
        """``INSERT … ON CONFLICT DO NOTHING``: one row means the claim is ours."""
        inserted: int = await self._write(
            lambda conn: (
                conn.execute(
                    "INSERT INTO consumptions(artifact_id, consumer) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (artifact_id.bytes, consumer),
                ).rowcount
            ),
            single=True,
        )
        return inserted == 1

    async def consumers_of(self, artifact_id: UUID) -> set[str]:
        """Every consumer recorded for the artifact."""
        rows = self._conn.execute(
            "SELECT consumer FROM consumptions WHERE artifact_id = ?", (artifact_id.bytes,)
        ).fetchall()
        return {r[0] for r in rows}

    # -- deliveries ------------------------------------------------------------------------------

    def _insert_delivery(self, conn: sqlite3.Connection, d: Delivery) -> None:
        try:
            conn.execute(_INSERT_DELIVERY, delivery_row(d))
        except sqlite3.IntegrityError:
            raise ValueError(f"delivery {d.id} already exists") from None
        conn.executemany(
            "INSERT OR IGNORE INTO delivery_inputs(artifact_id, delivery_id) VALUES (?, ?)",
            [(i.bytes, d.id.bytes) for i in d.artifact_ids],
        )

    async def add_delivery(self, delivery: Delivery) -> None:
        """Insert one delivery row."""
        await self._write(lambda conn: self._insert_delivery(conn, delivery))

    async def lease(self, delivery_id: UUID, owner: str, *, now: datetime, ttl: float) -> Delivery | None:
        """One conditional UPDATE … RETURNING: pending, or leased with an expired lease."""
        row = await self._write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET status = 'leased', attempts = attempts + 1, lease_owner = ?,"
                " lease_expires_at = ? WHERE id = ? AND (status = 'pending'"
                " OR (status = 'leased' AND lease_expires_at <= ?))"
                f" RETURNING {DELIVERY_COLUMNS}",
                (owner, to_micros(now + timedelta(seconds=ttl)), delivery_id.bytes, to_micros(now)),
            ).fetchone(),
            single=True,
        )
        return delivery_from_row(row) if row else None

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

    async def complete(
        self,
        delivery_id: UUID,
        attempt: int,
        outputs: Sequence[Artifact],
        *,
        routed: Collection[UUID] = (),
    ) -> None:
        """Fenced completion and the outputs (``routed`` ones marked so), in one transaction."""

        def write(conn: sqlite3.Connection) -> None:
            self._fenced_update(conn, delivery_id, attempt, DeliveryStatus.DONE.value)
            self._insert_artifacts(conn, outputs, produced_in=delivery_id, routed=routed)

        await self._write(write)

    async def release(
        self, delivery_id: UUID, attempt: int, *, dead: bool = False, retry_at: datetime | None = None
    ) -> None:
        """Fenced: back to pending (for a retry) or dead."""
        status = DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
        await self._write(
            lambda conn: self._fenced_update(conn, delivery_id, attempt, status.value), single=True
        )

    async def bury(self, delivery_id: UUID, attempt: int | None, letter: DeadLetter) -> None:
        """The fenced (or pending-only) UPDATE to dead and the letter's INSERT, in one write."""

        def write(conn: sqlite3.Connection) -> None:
            if attempt is not None:
                self._fenced_update(conn, delivery_id, attempt, DeliveryStatus.DEAD.value)
            elif (
                conn.execute(
                    "UPDATE deliveries SET status = 'dead' WHERE id = ? AND status = 'pending'",
                    (delivery_id.bytes,),
                ).rowcount
                != 1
            ):
                raise StaleLeaseError(f"delivery {delivery_id} is not pending")
            conn.execute(
                "INSERT INTO dead_letters(id, body) VALUES (?, ?)",
                (letter.id.bytes, letter.model_dump_json()),
            )

        await self._write(write)

    async def get_delivery(self, delivery_id: UUID) -> Delivery | None:
        """One delivery row."""
        row = self._conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id.bytes,)
        ).fetchone()
        return delivery_from_row(row) if row else None

    async def deliveries(self, *, status: DeliveryStatus | None = None) -> builtins.list[Delivery]:
        """Oldest first."""
        sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status.value,)
        return [delivery_from_row(r) for r in self._conn.execute(sql + " ORDER BY seq", params)]

    async def release_leases(self, owner: str) -> int:
        """One UPDATE: the dead owner's leases become pending (attempts kept for fencing)."""
        released: int = await self._write(
            lambda conn: (
                conn.execute(
                    "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE status = 'leased' AND lease_owner = ?",
                    (owner,),
                ).rowcount
            ),
            single=True,
        )
        return released

    # -- routing state ---------------------------------------------------------------------------

    async def commit_routing(self, tx: RoutingTx) -> None:
        """One savepoint in the current group commit; a claim that already exists rolls the step
        back. Returns once the step is written; :meth:`sync` waits until it is durable."""
        self._group.write_step(lambda conn: self._apply_routing(conn, tx))

    def _apply_routing(self, conn: sqlite3.Connection, tx: RoutingTx) -> None:
        # Most steps claim, deliver and mark routed, nothing else: the other parts are skipped
        # without building their (empty) rows, once per routing step.
        if tx.claims:
            try:
                conn.executemany(
                    "INSERT INTO consumptions(artifact_id, consumer) VALUES (?, ?)",
                    [(a.bytes, c) for a, c in tx.claims],
                )
            except sqlite3.IntegrityError:
                raise ValueError("an artifact in this routing step was already claimed") from None
        for delivery in tx.deliveries:
            self._insert_delivery(conn, delivery)
        if tx.gate_adds:
            conn.executemany(
                "INSERT INTO gate_entries(sub_key, artifact_id, arrived_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(e.sub_key, e.artifact_id.bytes, to_micros(e.arrived_at)) for e in tx.gate_adds],
            )
        if tx.gate_removes:
            conn.executemany(
                "DELETE FROM gate_entries WHERE sub_key = ? AND artifact_id = ?",
                [(k, a.bytes) for k, a in tx.gate_removes],
            )
        if tx.batch_clears:
            conn.executemany("DELETE FROM batch_entries WHERE sub_key = ?", [(k,) for k in tx.batch_clears])
        if tx.batch_adds:
            conn.executemany(
                "INSERT INTO batch_entries(sub_key, artifact_ids, arrived_at) VALUES (?, ?, ?)",
                [(e.sub_key, pack_ids(e.artifact_ids), to_micros(e.arrived_at)) for e in tx.batch_adds],
            )
        if tx.denials:
            conn.executemany(
                "INSERT INTO denials(artifact_id, body) VALUES (?, ?)",
                [(d.artifact_id.bytes, d.model_dump_json()) for d in tx.denials],
            )
        if tx.routed:
            conn.executemany("UPDATE artifacts SET routed = 1 WHERE id = ?", [(i.bytes,) for i in tx.routed])

    async def unrouted(self, limit: int = 1000) -> builtins.list[Artifact]:
        """Uses the partial index of unrouted artifacts."""
        rows = self._conn.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE routed = 0 ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [artifact_from_row(r) for r in rows]

    async def gate_entries(self) -> builtins.list[GateEntry]:
        """Arrival order."""
        rows = self._conn.execute("SELECT sub_key, artifact_id, arrived_at FROM gate_entries ORDER BY seq")
        return [
            GateEntry(sub_key=r[0], artifact_id=UUID(bytes=r[1]), arrived_at=from_micros(r[2])) for r in rows
        ]

    async def batch_entries(self) -> builtins.list[BatchEntry]:
        """Arrival order."""
        rows = self._conn.execute("SELECT sub_key, artifact_ids, arrived_at FROM batch_entries ORDER BY seq")
        return [
            BatchEntry(sub_key=r[0], artifact_ids=unpack_ids(r[1]), arrived_at=from_micros(r[2]))
            for r in rows
        ]

    # -- runs, lineage ---------------------------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Upsert the record."""
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO runs(id, started_at, body) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (run.id.bytes, to_micros(run.started_at), run.model_dump_json()),
            ),
            single=True,
        )

    async def runs(self) -> builtins.list[RunRecord]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM runs ORDER BY started_at, id").fetchall()
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def _parents_of(self, artifact_id: UUID) -> builtins.list[UUID]:
        row = self._conn.execute(
            "SELECT d.artifact_ids FROM artifacts a JOIN deliveries d ON d.id = a.produced_in WHERE a.id = ?",
            (artifact_id.bytes,),
        ).fetchone()
        return list(unpack_ids(row[0])) if row else []

    def _children_of(self, artifact_id: UUID) -> builtins.list[UUID]:
        rows = self._conn.execute(
            "SELECT a.id FROM delivery_inputs i JOIN artifacts a ON a.produced_in = i.delivery_id"
            " WHERE i.artifact_id = ? ORDER BY a.seq",
            (artifact_id.bytes,),
        ).fetchall()
        return [UUID(bytes=r[0]) for r in rows]

    async def _full_lineage(self, artifact_id: UUID) -> Lineage:
        """Walk produced_in / delivery_inputs in both directions."""
        return Lineage(
            artifact_id=artifact_id,
            parents=walk(artifact_id, self._parents_of),
            children=walk(artifact_id, self._children_of),
        )

    # -- dead letters ----------------------------------------------------------------------------

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it as JSON."""
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO dead_letters(id, body) VALUES (?, ?)",
                (letter.id.bytes, letter.model_dump_json()),
            ),
            single=True,
        )

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM dead_letters ORDER BY seq").fetchall()
        return [DeadLetter.model_validate_json(r[0]) for r in rows]

    async def take_dead_letter(self, letter_id: UUID) -> DeadLetter | None:
        """Delete and return it (``DELETE … RETURNING``)."""
        row = await self._write(
            lambda conn: conn.execute(
                "DELETE FROM dead_letters WHERE id = ? RETURNING body", (letter_id.bytes,)
            ).fetchone(),
            single=True,
        )
        return DeadLetter.model_validate_json(row[0]) if row else None

    # -- audit -----------------------------------------------------------------------------------

    async def _insert_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        rows = [(d.artifact_id.bytes, d.model_dump_json()) for d in denials]
        await self._write(
            lambda conn: conn.executemany("INSERT INTO denials(artifact_id, body) VALUES (?, ?)", rows),
            single=True,
        )

    async def record_denials(self, denials: Sequence[VisibilityDenial]) -> None:
        """Append them."""
        await self._insert_denials(denials)

    async def denials(self) -> builtins.list[VisibilityDenial]:
        """Oldest first."""
        rows = self._conn.execute("SELECT body FROM denials ORDER BY seq").fetchall()
        return [VisibilityDenial.model_validate_json(r[0]) for r in rows]


# Built once: the statement cache finds them by their text, and every seed writes them.
_INSERT_ARTIFACT = (
    f"INSERT INTO artifacts ({ARTIFACT_COLUMNS}, produced_in, routed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_DELIVERY = f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
