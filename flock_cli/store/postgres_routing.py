"""The PostgreSQL board's routing state: routing steps (claims, deliveries, gate and batch entries,
denials, ``routed`` marks) applied in one transaction, and the entries a new routing leader (or a
resumed one) rebuilds its gates and batches from."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from flock_cli.core.artifact import Artifact
from flock_cli.store.contract import Delivery
from flock_cli.store.postgres_codec import (
    ARTIFACT_COLUMNS,
    CLAIM,
    INSERT_DELIVERY,
    artifact_from_row,
    delivery_params,
)
from flock_cli.store.postgres_shared import SharedBoardMixin
from flock_cli.store.records import BatchEntry, GateEntry, RoutingTx

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["RoutingStateMixin"]


class RoutingStateMixin(SharedBoardMixin):
    """Routing steps and gathering entries of :class:`~flock_cli.store.postgres.PostgresBlackboardStore`."""

    @staticmethod
    async def insert_delivery(conn: AsyncConnection[Any], d: Delivery, repeat: bool) -> None:
        """Insert one delivery and its inputs in the open transaction (ids are unique)."""
        cursor = await conn.execute(INSERT_DELIVERY, delivery_params(d))
        if cursor.rowcount != 1:
            if repeat:
                return
            raise ValueError(f"delivery {d.id} already exists")
        async with conn.cursor() as many:
            await many.executemany(
                "INSERT INTO flock.delivery_inputs(artifact_id, delivery_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                [(i, d.id) for i in dict.fromkeys(d.artifact_ids)],
            )

    async def apply_routing(self, conn: AsyncConnection[Any], tx: RoutingTx, repeat: bool) -> None:
        """One routing step in the open transaction; a claim already taken fails the step."""
        if tx.claims:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    CLAIM,
                    list(tx.claims),
                )
                if cursor.rowcount != len(tx.claims):
                    if repeat and await self._routed_already(conn, tx):
                        raise _AlreadyApplied
                    raise ValueError("an artifact in this routing step was already claimed")
        for delivery in tx.deliveries:
            await self.insert_delivery(conn, delivery, False)
        async with conn.cursor() as cursor:
            if tx.gate_adds:
                await cursor.executemany(
                    "INSERT INTO flock.gate_entries(sub_key, artifact_id, arrived_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(e.sub_key, e.artifact_id, e.arrived_at) for e in tx.gate_adds],
                )
            if tx.gate_removes:
                await cursor.executemany(
                    "DELETE FROM flock.gate_entries WHERE sub_key = %s AND artifact_id = %s",
                    list(tx.gate_removes),
                )
            if tx.batch_clears:
                await cursor.executemany(
                    "DELETE FROM flock.batch_entries WHERE sub_key = %s", [(k,) for k in tx.batch_clears]
                )
            if tx.batch_adds:
                await cursor.executemany(
                    "INSERT INTO flock.batch_entries(sub_key, artifact_ids, arrived_at) VALUES (%s, %s, %s)",
                    [(e.sub_key, list(e.artifact_ids), e.arrived_at) for e in tx.batch_adds],
                )
            if tx.denials:
                await cursor.executemany(
                    "INSERT INTO flock.denials(artifact_id, body) VALUES (%s, %s)",
                    [(d.artifact_id, d.model_dump_json()) for d in tx.denials],
                )
        if tx.routed:
            await conn.execute(
                "UPDATE flock.artifacts SET routed = true WHERE id = ANY(%s)", (list(tx.routed),)
            )
        if tx.deliveries:
            await self.notify_work(conn)

    @staticmethod
    async def _routed_already(conn: AsyncConnection[Any], tx: RoutingTx) -> bool:
        if not tx.routed:
            return False
        cursor = await conn.execute(
            "SELECT count(*) FROM flock.artifacts WHERE id = ANY(%s) AND routed", (list(tx.routed),)
        )
        row = await cursor.fetchone()
        return row is not None and row[0] == len(tx.routed)

    async def commit_routing_now(self, tx: RoutingTx, conn: AsyncConnection[Any] | None = None) -> None:
        """Apply one routing step in its own transaction (on ``conn`` when given)."""

        async def write(conn: AsyncConnection[Any], repeat: bool) -> None:
            try:
                async with conn.transaction():
                    await self.apply_routing(conn, tx, repeat)
            except _AlreadyApplied:
                return

        if conn is not None:
            await write(conn, False)
        else:
            await self._run(write)

    async def unrouted(self, limit: int = 1000) -> builtins.list[Artifact]:
        """Uses the partial index of unrouted artifacts."""
        rows = await self._rows(
            f"SELECT {ARTIFACT_COLUMNS} FROM flock.artifacts WHERE NOT routed ORDER BY seq LIMIT %s", (limit,)
        )
        return [artifact_from_row(r) for r in rows]

    async def gate_entries(self) -> builtins.list[GateEntry]:
        """Arrival order."""
        rows = await self._rows(
            "SELECT sub_key, artifact_id, arrived_at FROM flock.gate_entries ORDER BY seq"
        )
        return [GateEntry(sub_key=r[0], artifact_id=r[1], arrived_at=r[2]) for r in rows]

    async def batch_entries(self) -> builtins.list[BatchEntry]:
        """Arrival order."""
        rows = await self._rows(
            "SELECT sub_key, artifact_ids, arrived_at FROM flock.batch_entries ORDER BY seq"
        )
        return [BatchEntry(sub_key=r[0], artifact_ids=tuple(r[1]), arrived_at=r[2]) for r in rows]


class _AlreadyApplied(Exception):
    """A repeated routing step finds its first try committed (rolls back the repeat, not an error)."""
