"""The trace ingest process: ``python -m flock_cli.tracing.ingest PATH``.

A flock's :class:`~flock_cli.tracing.writer.TraceWriter` starts it and feeds it frames of
flattened records on stdin. This process owns all the expensive work (rows, JSON, DuckDB), so it
runs on another core with a GIL of its own. It writes each batch in one transaction and closes
the store right after, so ``flock trace`` and ``flock top`` in other processes get their turn; a
busy store is retried, never reported as an error.

A store held for long (a notebook or a dashboard keeping a read-only connection open) loses no
records and holds up no flock: after ``_SPOOL_AFTER`` seconds of waiting, or at a flush or the
end of input after ``_FLUSH_WAIT`` or ``_END_WAIT`` seconds, what is pending goes to the store's
spool (``spool.py``), and whoever next opens the store for writing writes it. Each write here
writes the spool first.

It answers on stdout, one JSON object per line: ``{"ack": seq}`` once every frame up to ``seq``
is written, spooled (or given up), ``{"problem": "..."}`` for anything that went wrong. At the
end of its input (the flock closed, or died) it writes or spools what it holds and exits.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import FlockError, TraceStoreBusyError, TraceStoreError
from flock_cli.private_files import make_private_dirs, owner_only_umask
from flock_cli.tracing import schema, spool
from flock_cli.tracing.duck import connect
from flock_cli.tracing.frames import read_frame
from flock_cli.tracing.rows import Batch, insert_statements, to_rows
from flock_cli.tracing.run_summary import alive

if TYPE_CHECKING:
    import duckdb

__all__ = ["Ingest", "catch_up", "ingest_spooled", "main", "settle_killed_runs"]

_RETRY_EVERY = 0.25  # seconds between attempts while the store is busy
_WRITE_EVERY = 0.5  # seconds between writes (each opens and closes the store)
_FLUSH_WAIT = 2.0  # a flush waits this long for a busy store, then spools
_END_WAIT = 3.0  # ... and the end of input: the flock is closing, and must end promptly
_SPOOL_AFTER = 3.0  # busy this long, what is pending is spooled: memory stays bounded, nothing drops
_SPOOL_RECORDS = 50_000  # ... and so it is once this many records are pending
_DRAIN_BUDGET = 3.0  # seconds one write may spend on the spool before its own batch
_RUN_END = "run_end:"  # meta key prefix of a run end written before its run's start
# At the end of input, more pending than this is handed off rather than written while the flock
# waits: spooled (a marshal write, milliseconds), acknowledged, and written into the store after
# the flock's process has gone on (about 10,000 records a second here, so this is ~0.2 s).
_HAND_OFF_RECORDS = 2_000
_SPOOL_FILE_RECORDS = 10_000  # records a spool file at most (about a second of writing)
_CHUNK = 2_000  # records a transaction: a closing flock waits for one chunk at most, not a backlog
_DETACHED_PATIENCE = 120.0  # seconds a handed-off spool waits for a busy store; then readers take it


class Ingest:
    """Writes flattened records into the DuckDB trace store at ``path``."""

    def __init__(self, path: Path, *, max_pending: int = 1_000_000) -> None:
        self.path = path
        self.max_pending = max_pending  # only reached when the spool cannot be written either
        self.pending: list[tuple[Any, ...]] = []
        self.dropped = 0
        self.problems: list[str] = []  # spool files set aside, spooling that failed: to report
        self.busy_since: float | None = None  # when the store was first found busy, if it still is
        self.spooled_at = 0.0  # when pending records were last spooled
        self._scratch = Path(tempfile.mkdtemp(prefix="flock-traces-"))  # owner-only (0700), like the store

    def add(self, items: list[tuple[Any, ...]]) -> None:
        """Hold records until the next write; past ``max_pending`` (the store busy and the spool
        failing) the oldest go."""
        self.pending.extend(items)
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            del self.pending[:excess]
            self.dropped += excess

    def busy_for(self) -> float:
        """Seconds the store has stayed busy (0 when the last attempt got it)."""
        return 0.0 if self.busy_since is None else time.monotonic() - self.busy_since

    def due(self, limit: float) -> float:
        """How long the next attempt may wait for the store, so that records wait at most about
        ``limit`` seconds in all for a busy store (at least one short attempt)."""
        return max(_RETRY_EVERY, limit - self.busy_for()) if self.pending else _RETRY_EVERY

    def should_spool(self) -> bool:
        """Whether, the store being busy, what is pending goes to the spool now: after
        ``_SPOOL_AFTER`` seconds of waiting (counted again after each spool, so a long hold makes
        a few files, not many small ones), or when too much is pending."""
        if self.busy_since is None:
            return False
        waited = time.monotonic() - max(self.busy_since, self.spooled_at)
        return waited >= _SPOOL_AFTER or len(self.pending) >= _SPOOL_RECORDS

    def write(
        self,
        wait: float,
        *,
        budget: float | None = _DRAIN_BUDGET,
        stop: Callable[[], bool] | None = None,
        drain: bool = True,
    ) -> str | None:
        """Write the spool's waiting batches, then what is pending, ``_CHUNK`` records to a
        transaction. Returns None when done (or nothing to do; records are left pending when
        ``stop`` said so between two chunks), ``"busy"`` when the store stayed locked for
        ``wait`` seconds, or the problem that stopped the write. ``budget``: see
        :func:`spool.drain`; ``drain=False`` leaves the spool for later (a flock is waiting)."""
        if not self.pending and not (drain and spool.count_waiting(self.path)):
            return None
        try:
            with _writable(self.path, wait) as con:
                self.busy_since = None
                return self._write_into(con, budget, stop, drain)
        except TraceStoreBusyError:
            if self.busy_since is None:
                self.busy_since = time.monotonic()
            return "busy"
        except FlockError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot create the folder of trace store {self.path}: {exc.strerror or exc}"

    def _write_into(
        self,
        con: duckdb.DuckDBPyConnection,
        budget: float | None,
        stop: Callable[[], bool] | None,
        drain: bool,
    ) -> str | None:
        """:meth:`write`, once the store is open."""
        try:
            if drain:
                drained = spool.drain(
                    self.path, lambda items, name: self._insert(con, items, name), budget=budget
                )
                self.problems.extend(drained.problems)
            while self.pending:
                chunk = self.pending[:_CHUNK]
                self._insert(con, chunk)
                del self.pending[: len(chunk)]
                if stop is not None and stop():
                    break  # the flock is closing: what is left is handed off, not waited for
        except Exception as exc:
            # Not a busy store. The batch is spooled rather than dropped: a store that failed
            # (a full disk) takes it later; records at fault are set aside there, reported.
            failure = f"writing traces to {self.path} failed: {type(exc).__name__}: {exc}"
            return failure if self.spool(give_up=True) else f"{failure}; the batch was spooled"
        try:
            settle_killed_runs(con)
        except Exception as exc:  # the batch is written; only the settling is reported
            self.problems.append(f"could not mark killed runs in {self.path}: {type(exc).__name__}: {exc}")
        return None

    def spool(self, *, give_up: bool = False) -> str | None:
        """Hand what is pending to the spool. Returns None when done; when the spool cannot be
        written, the problem, and the records stay pending (or, with ``give_up``, are dropped)."""
        if not self.pending:
            return None
        try:
            # Files of bounded size: whoever writes one later holds the store for about a
            # second at most, and readers get their turn between files.
            for start in range(0, len(self.pending), _SPOOL_FILE_RECORDS):
                spool.write_items(self.path, self.pending[start : start + _SPOOL_FILE_RECORDS])
        except OSError as exc:
            problem = (
                f"trace batches could not be spooled to {spool.spool_dir(self.path)}: {exc.strerror or exc}"
            )
            if give_up:
                self.dropped += len(self.pending)
                self.pending = []
            return problem
        self.pending = []
        self.spooled_at = time.monotonic()
        return None

    def close(self) -> None:
        """Remove the scratch files (copies of written batches)."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _insert(
        self, con: duckdb.DuckDBPyConnection, items: list[tuple[Any, ...]], spooled: str | None = None
    ) -> bool:
        """Write ``items`` in one transaction; for a spool file (``spooled`` its name), record the
        name in it too, and write nothing when it is recorded already. False when nothing was
        written. Records at fault in a spool file raise SpoolFileError."""
        import duckdb

        if not items:
            return False
        try:
            batch = to_rows(items)
        except Exception as exc:
            if spooled is None:
                raise
            raise spool.SpoolFileError(
                f"holds records that are not traces: {type(exc).__name__}: {exc}"
            ) from exc
        con.execute("BEGIN TRANSACTION")
        try:
            schema.prepare(con)  # tables, columns and views, every time (see there why)
            if spooled is not None:
                recorded = "SELECT count(*) FROM meta WHERE key = ? AND value = ?"
                if con.execute(recorded, [spool.META_KEY, spooled]).fetchall()[0][0]:
                    # Written before, by an ingester killed before it deleted the file.
                    con.execute("ROLLBACK")
                    return False
                con.execute("INSERT INTO meta VALUES (?, ?)", [spool.META_KEY, spooled])
            try:
                self._insert_rows(con, batch)
            except (duckdb.DataError, duckdb.ProgrammingError) as exc:
                if spooled is None:
                    raise
                raise spool.SpoolFileError(f"holds records the store refuses: {exc}") from exc
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return True

    def _insert_rows(self, con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        for table, rows in batch.rows.items():
            if rows:
                scratch = self._scratch / f"{table}.json"
                # "replace": a lone surrogate (from a payload decoded with surrogateescape, say)
                # has no UTF-8 form; it becomes "?" rather than failing the whole batch.
                scratch.write_bytes(batch.dumps(table).encode("utf-8", "replace"))
                for statement in insert_statements(table):
                    con.execute(statement, [str(scratch)])
        _run_ends(con, batch)
        for trace_id, pid in batch.status_keys:  # keep each process's latest snapshot per run
            con.execute(
                "DELETE FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ? AND ts_ns <"
                " (SELECT max(ts_ns) FROM status WHERE trace_id IS NOT DISTINCT FROM ? AND pid = ?)",
                [trace_id, pid, trace_id, pid],
            )


@contextmanager
def _writable(path: Path, wait: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store at ``path`` open for writing (its folder made first), closed after the block.
    The store keeps every payload: DuckDB creates it, its WAL and its temporary files while the
    connection is open, all owner-only under this umask. Raises OSError (the folder),
    TraceStoreBusyError (held for ``wait`` seconds) or TraceStoreError."""
    make_private_dirs(path.parent)
    with owner_only_umask():
        con = connect(path, read_only=False, wait=wait, config={"threads": 1})
        try:
            yield con
        finally:
            con.close()


def _run_ends(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Apply the batch's run ends. Batches written from the spool can come in another order than
    they were made (one of a flock's ingest processes spooling while the next one writes), so an
    end whose run has not started in the store yet is kept in ``meta`` until its start comes."""
    started = {row["trace_id"] for row in batch.rows["runs"]}
    if started:
        early = con.execute("SELECT key, value FROM meta WHERE starts_with(key, ?)", [_RUN_END]).fetchall()
        for key, value in early:
            run = key[len(_RUN_END) :]
            if run in started:
                ended_ns, status = json.loads(value)
                con.execute(
                    "UPDATE runs SET ended_ns = ?, status = ? WHERE trace_id = ?", [ended_ns, status, run]
                )
                con.execute("DELETE FROM meta WHERE key = ?", [key])
    if not batch.run_ends:
        return
    con.executemany("UPDATE runs SET ended_ns = ?, status = ? WHERE trace_id = ?", batch.run_ends)
    ended = [end[2] for end in batch.run_ends]
    placeholders = ", ".join("?" for _ in ended)
    known = con.execute(f"SELECT DISTINCT trace_id FROM runs WHERE trace_id IN ({placeholders})", ended)
    present = {row[0] for row in known.fetchall()}
    for ended_ns, status, run in batch.run_ends:
        if run not in present:
            con.execute(
                "INSERT INTO meta VALUES (?, ?)", [_RUN_END + str(run), json.dumps([ended_ns, status])]
            )


def settle_killed_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Mark ``interrupted`` the runs this host's processes started and never ended whose process
    is gone (killed with SIGKILL, the machine's power cut): they were written ``running`` and no
    end came. ``flock trace`` settles such runs as it reads them; this writes the settled status,
    so the store read by anything else (the DuckDB shell, a notebook, ``flock trace sql``) says
    the same. Every write does it: the next traced process on the host settles its
    predecessors. Their ``ended_ns`` stays NULL, since when they died is not known. Returns how
    many runs it marked."""
    host = socket.gethostname()
    going = con.execute(
        "SELECT trace_id, pid FROM runs WHERE status = 'running' AND host = ?", [host]
    ).fetchall()
    gone = [(trace_id,) for trace_id, pid in going if not alive(pid, host)]
    if gone:
        con.executemany(
            "UPDATE runs SET status = 'interrupted' WHERE trace_id = ? AND status = 'running'", gone
        )
    return len(gone)


def ingest_spooled(path: Path, *, wait: float, budget: float | None = None) -> spool.Drained:
    """Write the batches waiting in the spool of the store at ``path`` (a reader's catch-up).

    Raises TraceStoreBusyError when the store stayed held for ``wait`` seconds, TraceStoreError
    when it cannot be opened; what went wrong with single files is in the result's problems.
    """
    if not spool.count_waiting(path):
        return spool.Drained()
    ingest = Ingest(path)
    try:
        with _writable(path, wait) as con:
            drained = spool.drain(path, lambda items, name: ingest._insert(con, items, name), budget=budget)
    finally:
        ingest.close()
    drained.waiting = spool.count_waiting(path)
    return drained


def catch_up(path: Path, *, wait: float, budget: float | None) -> tuple[int, list[str]]:
    """A reader's catch-up on the spool of the store at ``path``: how many batches still wait
    afterwards, and what went wrong (with what a detached ingest process logged). Never raises: a
    reader reads whatever befalls the spool."""
    logged = spool.take_problems(path)
    if not spool.count_waiting(path):
        return 0, logged  # the usual case: a folder that does not exist
    try:
        drained = ingest_spooled(path, wait=wait, budget=budget)
    except (TraceStoreBusyError, TraceStoreError, OSError):
        return spool.count_waiting(path), logged  # held (or not writable by this user): read as it is
    except Exception as exc:
        return spool.count_waiting(path), [*logged, f"writing the trace spool of {path} failed: {exc}"]
    return drained.waiting, [*logged, *drained.problems]


def main(argv: list[str] | None = None) -> int:
    """Read frames from stdin until it ends, writing them to the store named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--drain":
        drainer = Ingest(Path(args[1]))
        try:
            _write_spool_detached(drainer)
        finally:
            drainer.close()
        return 0
    if len(args) != 1:
        print("usage: python -m flock_cli.tracing.ingest [--drain] TRACE_STORE", file=sys.stderr)
        return 2
    ingest = Ingest(Path(args[0]))
    frames: queue.Queue[tuple[int, bool, list[tuple[Any, ...]]] | None] = queue.Queue()

    input_ended = threading.Event()

    def read() -> None:
        while (frame := read_frame(sys.stdin.buffer)) is not None:
            frames.put(frame)
        input_ended.set()
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
        if ended and len(ingest.pending) > _HAND_OFF_RECORDS and ingest.spool() is None:
            # The flock is closing and waits for this answer: it gets it as soon as the records
            # are durable. A process of its own, not the flock's child, writes them into the
            # store afterwards (``--drain``), so the flock neither waits for it nor must reap it.
            _start_drain(ingest.path)
            _say({"ack": received, "dropped": ingest.dropped - reported_dropped, "detached": True})
            ingest.close()
            return 0
        # A flush, or the end of input (someone waits): wait a little for a busy store, then spool.
        handing_off = ended or urgent
        limit = _END_WAIT if ended else _FLUSH_WAIT if urgent else 0
        closing = ended or input_ended.is_set()  # the flock waits: no time for older spool files
        outcome = ingest.write(wait=ingest.due(limit), stop=input_ended.is_set, drain=not closing)
        if outcome == "busy" and (handing_off or ingest.should_spool()):
            failed = ingest.spool(give_up=ended)
            outcome = "busy" if failed is not None and not ended else None
            if failed is not None:
                ingest.problems.append(failed)
        if outcome != "busy":
            last_write = time.monotonic()
            urgent = False
        for problem in [*ingest.problems, *([] if outcome in (None, "busy") else [outcome])]:
            if problem not in problems:
                problems.add(problem)
                _say({"problem": problem})
        ingest.problems.clear()
        if outcome != "busy" and received > acked and not ingest.pending:
            acked = received
            _say({"ack": acked, "dropped": ingest.dropped - reported_dropped})  # new drops only
            reported_dropped = ingest.dropped
    ingest.close()
    return 0


def _start_drain(path: Path) -> None:
    """Start ``python -m flock_cli.tracing.ingest --drain PATH`` in a session of its own, with
    nothing of the flock's attached (its stdin, stdout and stderr are /dev/null: what it meets
    goes to the spool's problem log); it outlives this process, which exits right after."""
    try:
        subprocess.Popen(
            [sys.executable, "-m", "flock_cli.tracing.ingest", "--drain", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:  # the spool stays for the next writer or reader, who writes it then
        spool.log_problems(path, [f"could not start writing the handed-off traces: {exc}"])


def _write_spool_detached(ingest: Ingest) -> None:
    """Write the spool into the store after a hand-off, one file a connection (readers get their
    turn between files), for as long as the store stays busy at most ``_DETACHED_PATIENCE``
    seconds; what is left then waits for the next writer or reader. The flock no longer listens,
    so problems go to the spool's problem log, which the next reader reports (``spool.py``)."""
    give_up_at = time.monotonic() + _DETACHED_PATIENCE
    while (waiting := spool.count_waiting(ingest.path)) and time.monotonic() < give_up_at:
        outcome = ingest.write(wait=_RETRY_EVERY, budget=0.0)
        problems = [*ingest.problems, *([] if outcome in (None, "busy") else [outcome])]
        ingest.problems.clear()
        if problems:
            spool.log_problems(ingest.path, problems)
        if outcome not in (None, "busy"):
            return
        if outcome is None and spool.count_waiting(ingest.path) >= waiting:
            time.sleep(_RETRY_EVERY)  # only files others hold are left: no spinning on the lock


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
