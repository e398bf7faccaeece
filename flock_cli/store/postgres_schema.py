"""The PostgreSQL board's schema and its migrations.

Everything lives in the ``flock`` schema of the database the board URL names, so a board shares a
database with other applications without touching their tables (``\\dt flock.*`` in psql lists
it). Columns use PostgreSQL's own types (uuid, timestamptz, json, arrays), so an operator can read
the board from a database shell. Payloads are ``json``, not ``jsonb``: ``json`` keeps the text as
written, key order included, so an artifact reads back exactly as it was stored.

Each migration runs once, in order, in one transaction together with the version update, under a
transaction-scoped advisory lock: processes starting at the same moment on an empty database
migrate it once, and a failed migration leaves the board as it was. A board written by a newer
release (a higher version than this code knows) is refused rather than misread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flock_cli.errors import UserError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "BoardSchemaError", "migrate"]

# The advisory lock key of migrations ("flock-mi" in ASCII): any constant, held only by migrate().
MIGRATION_LOCK = 0x666C6F636B2D6D69

MIGRATIONS: list[str] = [
    # 1: artifacts, consumptions, deliveries, routing state, dead letters, denials, runs.
    """
    CREATE TABLE flock.artifacts (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id uuid NOT NULL UNIQUE,
        type text NOT NULL,
        payload json NOT NULL,
        produced_by text NOT NULL,
        correlation_id uuid,
        partition_key text,
        tags text[] NOT NULL,
        visibility json NOT NULL,
        created_at timestamptz NOT NULL,
        version integer NOT NULL,
        routed boolean NOT NULL DEFAULT false,
        produced_in uuid
    );
    CREATE INDEX artifacts_unrouted ON flock.artifacts(seq) WHERE NOT routed;
    CREATE INDEX artifacts_by_delivery ON flock.artifacts(produced_in);
    CREATE INDEX artifacts_by_type ON flock.artifacts(type, seq);
    CREATE INDEX artifacts_by_producer ON flock.artifacts(produced_by, seq);
    CREATE INDEX artifacts_by_correlation ON flock.artifacts(correlation_id, seq);
    CREATE INDEX artifacts_by_time ON flock.artifacts(created_at);
    CREATE INDEX artifacts_by_tag ON flock.artifacts USING gin (tags);
    CREATE TABLE flock.consumptions (
        artifact_id uuid NOT NULL,
        consumer text NOT NULL,
        PRIMARY KEY (artifact_id, consumer)
    );
    CREATE TABLE flock.deliveries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id uuid NOT NULL UNIQUE,
        agent text NOT NULL,
        artifact_ids uuid[] NOT NULL,
        created_at timestamptz NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL,
        lease_owner text,
        lease_expires_at timestamptz,
        priority integer NOT NULL,
        trigger text NOT NULL,
        batch_trigger text,
        group_sizes integer[] NOT NULL,
        subscription integer NOT NULL
    );
    CREATE INDEX deliveries_by_status ON flock.deliveries(status, seq);
    CREATE TABLE flock.delivery_inputs (
        artifact_id uuid NOT NULL,
        delivery_id uuid NOT NULL,
        PRIMARY KEY (artifact_id, delivery_id)
    );
    CREATE TABLE flock.gate_entries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sub_key text NOT NULL,
        artifact_id uuid NOT NULL,
        arrived_at timestamptz NOT NULL,
        UNIQUE (sub_key, artifact_id)
    );
    CREATE TABLE flock.batch_entries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sub_key text NOT NULL,
        artifact_ids uuid[] NOT NULL,
        arrived_at timestamptz NOT NULL
    );
    CREATE INDEX batch_entries_by_sub ON flock.batch_entries(sub_key);
    CREATE TABLE flock.runs (
        id uuid PRIMARY KEY,
        started_at timestamptz NOT NULL,
        body json NOT NULL
    );
    CREATE TABLE flock.dead_letters (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id uuid NOT NULL UNIQUE,
        body json NOT NULL
    );
    CREATE TABLE flock.denials (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        artifact_id uuid NOT NULL,
        body json NOT NULL
    )
    """,
    # 2: what many orchestrators on one board share: the live processes with their heartbeats,
    # board-wide counters (circuit breaker runs, budget usage), and the index that lets each
    # process take the next pending delivery of its agents with FOR UPDATE SKIP LOCKED, and the
    # time before which a delivery released for a retry is not leased by another process.
    """
    CREATE TABLE flock.processes (
        owner text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        fingerprint text NOT NULL,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        draining boolean NOT NULL DEFAULT false
    );
    CREATE TABLE flock.counters (
        key text PRIMARY KEY,
        value double precision NOT NULL
    );
    CREATE INDEX deliveries_open ON flock.deliveries(agent, priority DESC, seq)
        WHERE status IN ('pending', 'leased');
    ALTER TABLE flock.deliveries ADD COLUMN not_before timestamptz
    """,
    # 3: the W3C traceparent each artifact was published under, so that the runs it causes in any
    # process join the trace that made it.
    """
    ALTER TABLE flock.artifacts ADD COLUMN trace_context text
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class BoardSchemaError(UserError):
    """The board's schema was written by a newer Flock-Flow, or cannot be migrated."""


async def migrate(conn: AsyncConnection[object], where: str) -> int:
    """Bring the board's schema up to :data:`SCHEMA_VERSION` in one transaction; returns the
    version it had before. ``where`` names the board in messages (its URL, password hidden)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS flock")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS flock.meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        cursor = await conn.execute("SELECT value FROM flock.meta WHERE key = 'schema_version'")
        row = await cursor.fetchone()
        before = int(str(row[0])) if row else 0  # type: ignore[index]
        if before > SCHEMA_VERSION:
            raise BoardSchemaError(
                f"the board {where} has schema version {before}, but this Flock-Flow knows only up to"
                f" {SCHEMA_VERSION}: upgrade flock-flow to use it."
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    await conn.execute(statement)  # our own constant SQL
        await conn.execute(
            "INSERT INTO flock.meta(key, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
    return before
