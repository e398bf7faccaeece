"""The SQLite board's schema and its migrations.

Each migration is applied once, in order, inside one write transaction, and ``meta.schema_version``
records how far a file has come. A file written by a newer Flock-Flow (a higher version than this
code knows) is refused rather than misread.
"""

from __future__ import annotations

import sqlite3

from flock_cli.errors import UserError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

MIGRATIONS: list[str] = [
    # 1: artifacts, consumptions, deliveries, routing state, dead letters, denials, runs.
    # Ids are 16-byte blobs and times integer microseconds since the epoch (UTC): both are
    # cheaper to index and compare than their text forms.
    """
    CREATE TABLE artifacts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        produced_by TEXT NOT NULL,
        correlation_id BLOB,
        partition_key TEXT,
        tags TEXT NOT NULL,
        visibility TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        version INTEGER NOT NULL,
        routed INTEGER NOT NULL DEFAULT 0,
        produced_in BLOB
    );
    CREATE INDEX artifacts_unrouted ON artifacts(seq) WHERE routed = 0;
    CREATE INDEX artifacts_by_delivery ON artifacts(produced_in);
    CREATE INDEX artifacts_by_type ON artifacts(type, seq);
    CREATE INDEX artifacts_by_producer ON artifacts(produced_by, seq);
    CREATE INDEX artifacts_by_correlation ON artifacts(correlation_id, seq);
    CREATE INDEX artifacts_by_time ON artifacts(created_at);
    CREATE TABLE artifact_tags (
        tag TEXT NOT NULL,
        artifact_seq INTEGER NOT NULL REFERENCES artifacts(seq),
        PRIMARY KEY (tag, artifact_seq)
    ) WITHOUT ROWID;
    CREATE TABLE consumptions (
        artifact_id BLOB NOT NULL,
        consumer TEXT NOT NULL,
        PRIMARY KEY (artifact_id, consumer)
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE,
        agent TEXT NOT NULL,
        artifact_ids BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        priority INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        batch_trigger TEXT,
        group_sizes TEXT NOT NULL,
        subscription INTEGER NOT NULL
    );
    CREATE INDEX deliveries_by_status ON deliveries(status, seq);
    CREATE TABLE delivery_inputs (
        artifact_id BLOB NOT NULL,
        delivery_id BLOB NOT NULL,
        PRIMARY KEY (artifact_id, delivery_id)
    ) WITHOUT ROWID;
    CREATE TABLE gate_entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sub_key TEXT NOT NULL,
        artifact_id BLOB NOT NULL,
        arrived_at INTEGER NOT NULL,
        UNIQUE (sub_key, artifact_id)
    );
    CREATE TABLE batch_entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sub_key TEXT NOT NULL,
        artifact_ids BLOB NOT NULL,
        arrived_at INTEGER NOT NULL
    );
    CREATE INDEX batch_entries_by_sub ON batch_entries(sub_key);
    CREATE TABLE runs (
        id BLOB PRIMARY KEY,
        started_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE denials (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        artifact_id BLOB NOT NULL,
        body TEXT NOT NULL
    );
    """,
    # 2: the W3C traceparent each artifact was published under, so that the runs it causes in any
    # process join the trace that made it.
    """
    ALTER TABLE artifacts ADD COLUMN trace_context TEXT
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the file up to :data:`SCHEMA_VERSION`; returns the version it had before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        before = int(row[0]) if row else 0
        if before > SCHEMA_VERSION:
            raise UserError(
                f"{path} has board schema version {before}, but this Flock-Flow knows only up to"
                f" {SCHEMA_VERSION}: upgrade flock-flow to open it."
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return before
