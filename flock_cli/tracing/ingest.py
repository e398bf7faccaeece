"""The trace ingest process: ``python -m flock_cli.tracing.ingest PATH``.

A flock's :class:`~flock_cli.tracing.writer.TraceWriter` starts it and feeds it frames of
flattened records on stdin. This process owns all the expensive work (rows, JSON, DuckDB), so it
runs on another core with a GIL of its own. It writes each batch in one transaction and closes
the store right after, so ``flock trace`` and ``flock top`` in other processes get their turn; a
busy store is retried, never reported as an error.

It answers on stdout, one JSON object per line: ``{"ack": seq}`` once every frame up to ``seq``
is written (or given up), ``{"problem": "..."}`` for anything that went wrong. At the end of its
input (the flock closed, or died) it writes what it holds and exits.
"""

from __future__ import annotations

import json
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import FlockError, TraceStoreBusyError
from flock_cli.private_files import make_private_dirs, owner_only_umask
from flock_cli.tracing import schema
from flock_cli.tracing.duck import connect
from flock_cli.tracing.frames import read_frame
from flock_cli.tracing.rows import insert_statements, to_rows

if TYPE_CHECKING:
    import duckdb

__all__ = ["Ingest", "main"]

_RETRY_EVERY = 0.25  # seconds between attempts while the store is busy
_WRITE_EVERY = 0.5  # seconds between writes (each opens and closes the store)
_FINAL_WAIT = 8.0  # at the end of input, how long a busy store is waited for (the flock's close waits 10 s)


class Ingest:
    """Writes flattened records into the DuckDB trace store at ``path``."""

    def __init__(self, path: Path, *, max_pending: int = 1_000_000) -> None:
        self.path = path
        self.max_pending = max_pending
        self.pending: list[tuple[Any, ...]] = []
        self.dropped = 0
        self._scratch = Path(tempfile.mkdtemp(prefix="flock-traces-"))  # owner-only (0700), like the store

    def add(self, items: list[tuple[Any, ...]]) -> None:
        """Hold records until the next write; the oldest go when too many wait for a busy store."""
        self.pending.extend(items)
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            del self.pending[:excess]
            self.dropped += excess

    def write(self, wait: float) -> str | None:
        """Write what is pending. Returns None when done (or nothing to do), ``"busy"`` when the
        store stayed locked for ``wait`` seconds, or the problem that stopped the write."""
        if not self.pending:
            return None
        try:
            make_private_dirs(self.path.parent)
        except OSError as exc:
            return f"cannot create the folder of trace store {self.path}: {exc.strerror or exc}"
        # The store keeps every payload: DuckDB creates it, its WAL and its temporary files while
        # the connection is open, all owner-only under this umask.
        with owner_only_umask():
            try:
                con = connect(self.path, read_only=False, wait=wait, config={"threads": 1})
            except TraceStoreBusyError:
                return "busy"
            except FlockError as exc:
                return str(exc)
            try:
                self._insert(con, self.pending)
            except Exception as exc:
                # Not a busy store, so trying the same batch again would fail again and hold up
                # every later one: it is dropped, and the drop reported.
                self.dropped += len(self.pending)
                self.pending = []
                return f"writing traces to {self.path} failed: {type(exc).__name__}: {exc}"
            finally:
                con.close()
        self.pending = []
        return None

    def close(self) -> None:
        """Remove the scratch files (copies of written batches)."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _insert(self, con: duckdb.DuckDBPyConnection, items: list[tuple[Any, ...]]) -> None:
        batch = to_rows(items)
        con.execute("BEGIN TRANSACTION")
        try:
            # Every time, not once: the store may have been deleted (or pruned to nothing) since.
            for statement in schema.ddl():
                con.execute(statement)
            if not con.execute("SELECT count(*) FROM meta WHERE key = 'schema'").fetchall()[0][0]:
                con.execute("INSERT INTO meta VALUES ('schema', ?)", [str(schema.SCHEMA_VERSION)])
            for table, rows in batch.rows.items():
                if rows:
                    scratch = self._scratch / f"{table}.json"
                    # "replace": a lone surrogate (from a payload decoded with surrogateescape, say)
                    # has no UTF-8 form; it becomes "?" rather than failing the whole batch.
                    scratch.write_bytes(batch.dumps(table).encode("utf-8", "replace"))
                    for statement in insert_statements(table):
                        con.execute(statement, [str(scratch)])
            if batch.run_ends:
                con.executemany("UPDATE runs SET ended_ns = ?, status = ? WHERE trace_id = ?", batch.run_ends)
            for trace_id, pid in batch.status_keys:  # keep each process's latest snapshot per run
                con.execute(
                    "DELETE FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ? AND ts_ns <"
                    " (SELECT max(ts_ns) FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ?)",
                    [trace_id, pid, trace_id, pid],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def main(argv: list[str] | None = None) -> int:
    """Read frames from stdin until it ends, writing them to the store named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m flock_cli.tracing.ingest TRACE_STORE", file=sys.stderr)
        return 2
    ingest = Ingest(Path(args[0]))
    frames: queue.Queue[tuple[int, bool, list[tuple[Any, ...]]] | None] = queue.Queue()

    def read() -> None:
        while (frame := read_frame(sys.stdin.buffer)) is not None:
            frames.put(frame)
        frames.put(None)

    threading.Thread(target=read, name="flock-ingest-reader", daemon=True).start()
    problems: set[str] = set()
    acked = received = reported_dropped = 0
    ended = urgent = False
    last_write = time.monotonic()
    while not ended:
        try:
            arrived = [frames.get(timeout=_RETRY_EVERY)]
        except queue.Empty:
            arrived = []  # nothing new: a busy store is tried again
        while arrived and arrived[-1] is not None and not frames.empty():
            arrived.append(frames.get())  # take everything that has arrived into this one write
        for frame in arrived:
            if frame is None:
                ended = True
                break
            received, wanted, items = frame
            urgent = urgent or wanted
            ingest.add(items)
        # Writes are batched (each opens and closes the store): at most every WRITE_EVERY
        # seconds, unless a flush is waiting or the input ended.
        if not (ended or urgent or time.monotonic() - last_write >= _WRITE_EVERY):
            continue
        outcome = ingest.write(wait=_FINAL_WAIT if ended else _RETRY_EVERY)
        if outcome != "busy":
            last_write = time.monotonic()
            urgent = False
        if outcome == "busy" and ended:
            outcome = f"trace store {ingest.path} stayed busy for {_FINAL_WAIT:g} s; traces were not written"
        if outcome not in (None, "busy") and outcome not in problems:
            problems.add(outcome)
            _say({"problem": outcome})
        if outcome != "busy" and received > acked:
            acked = received
            _say({"ack": acked, "dropped": ingest.dropped - reported_dropped})  # new drops only
            reported_dropped = ingest.dropped
    ingest.close()
    return 0


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
