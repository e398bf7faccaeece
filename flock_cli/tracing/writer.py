"""The trace writer: a thread that batches records into the DuckDB trace store.

The event loop only appends to a deque. Every ``interval`` seconds (or sooner when asked to
flush) the thread takes what is queued, opens the store, inserts each table's rows in one
statement (``INSERT ... SELECT UNNEST(?)``: about 90,000 rows/s, where row-by-row inserts manage
about 300/s) and closes the store again so that readers in other processes get their turn.

When the store is busy the records wait for the next turn; when it cannot be written at all the
error is kept in ``problems`` and reported by whoever closes the tracer. Memory stays bounded:
past ``max_pending`` records the oldest are dropped, and the drop is reported too.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import FlockError, TraceStoreBusyError
from flock_cli.tracing import schema
from flock_cli.tracing.duck import check_trace_path, connect
from flock_cli.tracing.records import (
    ArtifactRecord,
    EventRecord,
    Record,
    RunEnd,
    RunStart,
    Span,
    StatusRecord,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["TraceWriter"]

_MAX_PAYLOAD = 1 << 20  # payloads above 1 MiB are summarised, not copied into the traces
_QUIET_TURNS = 6  # turns with nothing to write before the thread ends (3 s at the default interval)
_LIVE: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Write what flocks that were never shut down still hold, before the interpreter goes."""
    for writer in list(_LIVE):
        writer.close(timeout=5.0)


class _Flush:
    """A marker in the queue: set once everything queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class TraceWriter:
    """Writes trace records to ``path`` from a background thread.

    Args:
        path: the DuckDB file (created with its parent folder when missing).
        interval: seconds between batches.
        max_pending: records kept while the store cannot be written; older ones are dropped.
        snapshot: called on the writer thread before each batch; returns a status record or None.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 0.5,
        max_pending: int = 500_000,
        snapshot: Callable[[], StatusRecord | None] | None = None,
    ) -> None:
        check_trace_path(path)
        self.path = path
        self.interval = interval
        self.max_pending = max_pending
        self.snapshot = snapshot
        self.dropped = 0
        self.written = 0
        self._queue: deque[Record | _Flush] = deque()
        self._pending: list[Record] = []
        self._markers: list[_Flush] = []
        self._wake = threading.Event()
        self._stopping = False
        self._close_deadline = 0.0
        self._problems: list[str] = []
        self._schema_ready = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        _LIVE.add(self)

    def put(self, record: Record | _Flush) -> None:
        """Queue a record (called on the event loop; never blocks)."""
        self._queue.append(record)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        # The thread starts with the first record and ends after a quiet spell, so a flock that
        # is never used, or never shut down, leaves no thread behind.
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="flock-trace-writer", daemon=True)
                self._thread.start()

    @property
    def problems(self) -> list[str]:
        """What went wrong while writing, oldest first."""
        problems = list(self._problems)
        if self.dropped:
            problems.append(f"{self.dropped} trace records were dropped: the store could not take them")
        return problems

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; False when that took longer than ``timeout``."""
        marker = _Flush()
        self.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting up to ``timeout`` for a busy store), then stop the thread."""
        with self._lock:
            self._close_deadline = time.monotonic() + timeout
            self._stopping = True
            thread = self._thread
        _LIVE.discard(self)
        if thread is None:
            if self._queue:  # records but no thread: write them here
                self._take()
                self._write(wait=timeout)
            return
        self._wake.set()
        thread.join(timeout + 5)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        quiet = 0
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            self._take()
            if self.snapshot is not None and not stopping and (self._pending or quiet < _QUIET_TURNS):
                self._add_snapshot()
            if self._pending or self._markers:
                quiet = 0
                wait = max(0.0, self._close_deadline - time.monotonic()) if stopping else 0.25
                self._write(wait=wait)
            else:
                quiet += 1
            if stopping:
                if self._pending:
                    self._problem(f"{len(self._pending)} trace records were not written to {self.path}")
                for marker in self._markers:
                    marker.done.set()
                return
            if quiet >= _QUIET_TURNS and self._leave():
                return

    def _leave(self) -> bool:
        """End the thread after a quiet spell, unless something arrived meanwhile."""
        with self._lock:
            if self._queue or self._pending or self._stopping:
                return False
            self._thread = None
            return True

    def _take(self) -> None:
        queue, pending = self._queue, self._pending
        while queue:
            item = queue.popleft()
            if isinstance(item, _Flush):
                self._markers.append(item)
            else:
                pending.append(item)
        excess = len(pending) - self.max_pending
        if excess > 0:
            del pending[:excess]
            self.dropped += excess

    def _add_snapshot(self) -> None:
        try:
            record = self.snapshot() if self.snapshot is not None else None
        except Exception as exc:  # a snapshot is a nicety; its failure must not stop the traces
            self._problem(f"status snapshot failed: {type(exc).__name__}: {exc}")
            return
        if record is not None:
            self._pending.append(record)

    def _write(self, *, wait: float) -> None:
        try:
            con = connect(self.path, read_only=False, wait=wait)
        except TraceStoreBusyError:
            return  # the records wait for the next turn
        except FlockError as exc:
            self._problem(str(exc))
            return
        try:
            self._insert(con, self._pending)
        except Exception as exc:
            self._problem(f"writing traces to {self.path} failed: {type(exc).__name__}: {exc}")
            return
        finally:
            con.close()
        self.written += len(self._pending)
        self._pending = []
        for marker in self._markers:
            marker.done.set()
        self._markers = []

    def _problem(self, message: str) -> None:
        if message not in self._problems:
            self._problems.append(message)

    def _insert(self, con: duckdb.DuckDBPyConnection, records: list[Record]) -> None:
        tables = _columns(records)
        con.execute("BEGIN TRANSACTION")
        try:
            if not self._schema_ready:
                for statement in schema.ddl():
                    con.execute(statement)
                if not con.execute("SELECT count(*) FROM meta WHERE key = 'schema'").fetchone()[0]:  # type: ignore[index]
                    con.execute("INSERT INTO meta VALUES ('schema', ?)", [str(schema.SCHEMA_VERSION)])
            for table, (columns, casts) in _INSERTS.items():
                rows = tables[table]
                if rows[0]:
                    select = ", ".join(f"unnest(?::{cast})" for cast in casts)
                    con.execute(f"INSERT INTO {table} ({columns}) SELECT {select}", rows)
            for trace_id, ended_ns, status in tables["run_ends"]:
                con.execute(
                    "UPDATE runs SET ended_ns = ?, status = ? WHERE trace_id = ?",
                    [ended_ns, status, trace_id],
                )
            for trace_id, pid in tables["status_keys"]:
                con.execute(
                    "DELETE FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ? AND ts_ns <"
                    " (SELECT max(ts_ns) FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ?)",
                    [trace_id, pid, trace_id, pid],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._schema_ready = True


_INSERTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "runs": (
        "trace_id, span_id, name, started_ns, status, pid, host, attributes",
        ("VARCHAR[]", "VARCHAR[]", "VARCHAR[]", "BIGINT[]", "VARCHAR[]", "INTEGER[]", "VARCHAR[]", "JSON[]"),
    ),
    "spans": (
        "trace_id, span_id, parent_id, name, kind, agent, start_ns, end_ns, status, message, attributes,"
        " inputs, outputs",
        ("VARCHAR[]",) * 6
        + ("BIGINT[]", "BIGINT[]", "VARCHAR[]", "VARCHAR[]", "JSON[]", "VARCHAR[][]", "VARCHAR[][]"),
    ),
    "artifacts": (
        "trace_id, span_id, artifact_id, type, produced_by, correlation_id, created_ns, visibility, tags,"
        " payload",
        ("VARCHAR[]",) * 6 + ("BIGINT[]", "VARCHAR[]", "VARCHAR[][]", "JSON[]"),
    ),
    "events": (
        "trace_id, span_id, ts_ns, kind, agent, artifact_id, attributes",
        ("VARCHAR[]", "VARCHAR[]", "BIGINT[]", "VARCHAR[]", "VARCHAR[]", "VARCHAR[]", "JSON[]"),
    ),
    "status": ("trace_id, ts_ns, pid, snapshot", ("VARCHAR[]", "BIGINT[]", "INTEGER[]", "JSON[]")),
}


def _dumps(value: Any) -> str | None:
    return json.dumps(value, default=str, ensure_ascii=False) if value else None


def _payload(payload: Any) -> str:
    text = json.dumps(payload, default=str, ensure_ascii=False)
    if len(text) > _MAX_PAYLOAD:
        return json.dumps({"_truncated": True, "bytes": len(text)})
    return text


def _columns(records: list[Record]) -> dict[str, Any]:
    """Records grouped into one list per column of each table (what ``unnest`` takes)."""
    tables: dict[str, Any] = {name: [[] for _ in casts] for name, (_, casts) in _INSERTS.items()}
    run_ends: list[tuple[str, int, str]] = []
    status_keys: set[tuple[str | None, int]] = set()
    spans, artifacts, events = tables["spans"], tables["artifacts"], tables["events"]
    for record in records:
        if isinstance(record, Span):
            values: tuple[Any, ...] = (
                record.trace_id, record.span_id, record.parent_id, record.name, record.kind, record.agent,
                record.start_ns, record.end_ns, record.status, record.message, _dumps(record.attributes),
                record.inputs, record.outputs,
            )  # fmt: skip
            target = spans
        elif isinstance(record, ArtifactRecord):
            a = record.artifact
            values = (
                record.trace_id, record.span_id, str(a.id), a.type, a.produced_by,
                None if a.correlation_id is None else str(a.correlation_id),
                int(a.created_at.timestamp() * 1e9), a.visibility.describe(), sorted(a.tags),
                _payload(a.payload),
            )  # fmt: skip
            target = artifacts
        elif isinstance(record, EventRecord):
            values = (
                record.trace_id, record.span_id, record.ts_ns, record.kind, record.agent,
                record.artifact_id, _dumps(record.attributes),
            )  # fmt: skip
            target = events
        elif isinstance(record, RunStart):
            values = (
                record.trace_id, record.span_id, record.name, record.started_ns, "running", record.pid,
                record.host, _dumps(record.attributes),
            )  # fmt: skip
            target = tables["runs"]
        elif isinstance(record, RunEnd):
            run_ends.append((record.trace_id, record.ended_ns, record.status))
            continue
        else:
            values = (record.trace_id, record.ts_ns, record.pid, json.dumps(record.snapshot, default=str))
            target = tables["status"]
            status_keys.add((record.trace_id, record.pid))
        for column, value in zip(target, values, strict=True):
            column.append(value)
    tables["run_ends"] = run_ends
    tables["status_keys"] = status_keys
    return tables
