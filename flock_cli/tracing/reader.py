"""Reading the trace store from any process, while flocks write to it.

Every query opens the store read-only, runs and closes it again (see ``duck.py`` for why), waiting
briefly whenever a writer holds it. Before it reads, a reader writes the trace batches waiting in
the store's spool (``spool.py``: batches a flock could not write while another process held the
store), so that what it shows is complete; when the store is still held it reads all the same and
says, in one line on stderr, how many batches wait. Results are plain dataclasses, ready for the
CLI, ``--json`` and the dashboard. A reader given several stores (files, folders, globs) reads
them as one (``stores.py``); ``board_runs.py`` groups the runs of several processes on one board.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import TraceStoreError
from flock_cli.limits import TRACE_SQL_MAX_ROWS, TRACE_SQL_MEMORY, TRACE_SQL_TIMEOUT
from flock_cli.tracing import spool
from flock_cli.tracing.duck import check_trace_path, connect
from flock_cli.tracing.run_summary import RUN_SUMMARY, RunRow, Workflow, run_row
from flock_cli.tracing.stores import is_folder, open_stores, resolve_stores

if TYPE_CHECKING:
    import duckdb

__all__ = ["ArtifactRow", "EventRow", "RunRow", "SpanRow", "TraceReader"]

_HAS_OTEL_COLUMNS = (
    "SELECT 1 FROM duckdb_columns() WHERE table_name = 'spans' AND column_name = 'otel_trace_id' LIMIT 1"
)
_RUN_ID = re.compile(r"[0-9a-f]{1,32}")
_CATCH_UP_WAIT = 0.5  # seconds a reader waits to write a spool before it reads without it
_CATCH_UP_EVERY = 5.0  # seconds between one reader's attempts while batches wait (flock top polls)
_CATCH_UP_BUDGET = 10.0  # seconds one attempt may spend writing a long spool (the rest: next time)


@dataclass
class SpanRow:
    """A span as stored."""

    span_id: str
    parent_id: str | None
    name: str
    agent: str | None
    start_ns: int
    end_ns: int
    status: str
    message: str | None
    attributes: dict[str, Any]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    trace_id: str = ""
    kind: str = "internal"
    otel_trace_id: str | None = None
    """The span's OpenTelemetry trace (its workflow's), when it differs from ``trace_id``."""
    otel_parent_id: str | None = None
    links: list[str] = field(default_factory=list)
    """W3C traceparents of the other inputs of a join's or batch's run."""

    @property
    def duration_ms(self) -> float:
        """Milliseconds the span took."""
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class ArtifactRow:
    """An artifact as it was published in a run."""

    artifact_id: str
    type: str
    produced_by: str
    correlation_id: str | None
    created_ns: int
    visibility: str
    tags: list[str]
    payload: Any
    span_id: str
    trace_id: str = ""


@dataclass
class EventRow:
    """A runtime event: denial, filter, retry, dead letter, breaker trip, expired join, stream."""

    ts_ns: int
    kind: str
    agent: str | None
    artifact_id: str | None
    attributes: dict[str, Any]
    span_id: str | None = None
    trace_id: str | None = None


RunIds = str | Sequence[str]
"""One trace id, or several (the traces of a run several processes worked)."""

Scope = RunIds | Workflow
"""What a query selects: the rows of some traces, or those of one workflow."""


class TraceReader:
    """Queries a trace store, or several read as one: ``path`` is a file, a folder (every
    ``*.duckdb`` in it), a glob, or a list of those. ``wait``: seconds to wait for a writer to let
    go of a file."""

    def __init__(self, path: Path | Sequence[Path], *, wait: float = 10.0) -> None:
        self.names = [path] if isinstance(path, Path) else list(path)
        if not self.names:
            raise TraceStoreError("no trace store given")
        self.path = self.names[0]
        self.several = len(self.names) > 1 or is_folder(self.path)
        """True when the stores are read as one (through views with a ``store`` column)."""
        self.wait = wait
        self.spool_waiting = 0
        """Trace batches still waiting in the stores' spools after the last catch-up."""
        self._local = threading.local()  # each thread's open session (a connection is not shared)
        self._catching_up = threading.Lock()
        self._next_catch_up = 0.0
        self._told: set[str] = set()  # lines said on stderr already (each once per reader)

    @property
    def where(self) -> str:
        """The store, or stores, as errors name them."""
        return ", ".join(str(name) for name in self.names)

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for one query (or the open session's); external files and
        extensions are off."""
        session: duckdb.DuckDBPyConnection | None = getattr(self._local, "session", None)
        if session is not None:
            yield session
            return
        self.catch_up()
        if self.several:
            con = open_stores(resolve_stores(self.names), wait=self.wait)
        else:
            check_trace_path(self.path, must_exist=True)
            con = connect(self.path, read_only=True, wait=self.wait, config={"enable_external_access": False})
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def session(self) -> Iterator[TraceReader]:
        """Several queries on one connection (one consistent view, one open/close); inside an open
        session, the same session."""
        if getattr(self._local, "session", None) is not None:
            yield self
            return
        with self.connection() as con:
            self._local.session = con
            try:
                yield self
            finally:
                self._local.session = None

    def catch_up(self) -> int:
        """Write the batches waiting in the stores' spools, waiting briefly for a store another
        process holds; how many still wait. Called before every read (at most every few seconds
        while batches wait); never raises: a reader reads what the store holds, and says in one
        line on stderr what it does not hold yet (and any spool file set aside)."""
        now = time.monotonic()
        if now < self._next_catch_up or not self._catching_up.acquire(blocking=False):
            return self.spool_waiting
        try:
            try:
                paths = resolve_stores(self.names) if self.several else [self.path]
            except TraceStoreError:
                return 0  # the read that follows reports it
            waiting, lines = 0, []
            from flock_cli.tracing.ingest import catch_up

            for path in paths:
                left, problems = catch_up(path, wait=_CATCH_UP_WAIT, budget=_CATCH_UP_BUDGET)
                # A flock that just ended may have handed its last batches to its ingest process,
                # which is writing them now: they are worth the wait (up to the read's own).
                patience = time.monotonic() + self.wait
                while left and spool.being_written(path) and time.monotonic() < patience:
                    time.sleep(0.05)
                    left, more = catch_up(path, wait=_CATCH_UP_WAIT, budget=_CATCH_UP_BUDGET)
                    problems += more
                waiting += left
                lines += problems
                if left:
                    lines.append(spool.notice(path, left))
            self.spool_waiting = waiting
            self._next_catch_up = time.monotonic() + (_CATCH_UP_EVERY if waiting else 0.0)
            for line in lines:
                if line not in self._told:
                    self._told.add(line)
                    print(f"note: {line}", file=sys.stderr, flush=True)
            return waiting
        finally:
            self._catching_up.release()

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        import duckdb

        with self.connection() as con:
            try:
                return con.execute(sql, params or []).fetchall()
            except duckdb.CatalogException:
                return []  # a store created but not written to yet has no tables
            except duckdb.Error as exc:
                raise TraceStoreError(f"reading trace store {self.where} failed: {exc}") from exc

    # -- runs ------------------------------------------------------------------------------------

    def runs(self, limit: int | None = 20) -> list[RunRow]:
        """Runs, newest first."""
        # Measured on a store of 1,000,000 spans (ten 10,000-seed pipeline runs): picking the runs
        # first and summarising only those takes 35 ms for the newest run, against 110 ms when
        # every run was summarised before the newest was chosen.
        sql = RUN_SUMMARY.format(where="true", limit="" if limit is None else f"LIMIT {max(0, int(limit))}")
        return [run_row(row) for row in self._rows(sql)]

    def run(self, ref: str | None) -> RunRow:
        """The run ``ref`` names (a run id or a unique prefix), or the newest run when None.

        Raises TraceStoreError when no run, or several, match.
        """
        if ref is None:
            runs = self.runs(limit=1)
            if not runs:
                raise TraceStoreError(f"the trace store {self.where} holds no runs yet")
            return runs[0]
        ref = ref.strip().lower()
        if not _RUN_ID.fullmatch(ref):
            raise TraceStoreError(f"'{ref}' is not a run id: run ids are hex (flock trace list shows them)")
        rows = self._rows(RUN_SUMMARY.format(where="trace_id LIKE ?", limit="LIMIT 6"), [ref + "%"])
        if not rows:
            raise TraceStoreError(f"no run with id '{ref}' in {self.where} (flock trace list shows the runs)")
        if len(rows) > 1:
            ids = ", ".join(row[0][:12] for row in rows[:5])
            raise TraceStoreError(f"run id '{ref}' is ambiguous: {ids}... give more characters")
        return run_row(rows[0])

    def followed(self) -> RunRow | None:
        """The run ``flock top`` follows without a run id: the newest run still going (a
        ``--watch`` server, say, rather than a ``flock publish`` that came after it), else the
        newest run; None on an empty store."""
        newest = self.runs(limit=1)
        if not newest or newest[0].status == "running":
            return newest[0] if newest else None
        going = self._rows(
            "SELECT trace_id FROM runs WHERE status = 'running' ORDER BY started_ns DESC LIMIT 5"
        )  # written as running; a run whose process is gone reads as interrupted below
        alive = [r for r in self.runs_by_id([row[0] for row in going]) if r.status == "running"]
        return alive[0] if alive else newest[0]

    def runs_by_id(self, run_ids: Sequence[str]) -> list[RunRow]:
        """The runs with these exact ids (those that exist), newest first."""
        if not run_ids:
            return []
        where, params = _ids(run_ids)
        return [run_row(row) for row in self._rows(RUN_SUMMARY.format(where=where, limit=""), params)]

    # -- what a run holds ------------------------------------------------------------------------

    def spans(self, run_id: Scope) -> list[SpanRow]:
        """Every span of a run (or of several), in start order; of a workflow, its agent runs."""
        where, params = _where(run_id, "spans")
        with self.session():
            # A store of schema 1 (written by an older release, not written since) lacks them.
            otel = bool(self._rows(_HAS_OTEL_COLUMNS))
            extra = "kind, otel_trace_id, otel_parent_id, links" if otel else "kind, NULL, NULL, []"
            rows = self._rows(
                "SELECT span_id, parent_id, name, agent, start_ns, end_ns, status, message, attributes,"
                f" inputs, outputs, trace_id, {extra} FROM spans WHERE {where} ORDER BY start_ns, span_id",
                params,
            )
        return [_span_row(r) for r in rows]

    def artifacts(self, run_id: Scope | None = None, *, limit: int | None = None) -> list[ArtifactRow]:
        """Artifacts of a run (or of several, or of a workflow, or of every run), in publish order;
        each artifact once."""
        where, params = _where(run_id, "artifacts") if run_id else ("", [])
        where = f"WHERE {where}" if where else ""
        sql = (
            "SELECT artifact_id, any_value(type), any_value(produced_by), any_value(correlation_id),"
            " min(created_ns), any_value(visibility), any_value(tags), any_value(payload),"
            " any_value(span_id), any_value(trace_id)"
            f" FROM artifacts {where} GROUP BY artifact_id ORDER BY min(created_ns), artifact_id"
        )
        if limit:
            sql = f"SELECT * FROM ({sql}) ORDER BY 5 DESC LIMIT {int(limit)}"
        rows = self._rows(sql, params)
        artifacts = [
            ArtifactRow(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6] or []), _json(r[7]), r[8], r[9])
            for r in rows
        ]
        return sorted(artifacts, key=lambda a: (a.created_ns, a.artifact_id))

    def events(self, run_id: Scope, kinds: tuple[str, ...] = ()) -> list[EventRow]:
        """Events of a run (or of several, or of a workflow), oldest first (only ``kinds`` when given)."""
        where, params = _where(run_id, "events")
        sql = "SELECT ts_ns, kind, agent, artifact_id, attributes, span_id, trace_id"
        sql += f" FROM events WHERE ({where})"
        if kinds:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params.extend(kinds)
        rows = self._rows(sql + " ORDER BY ts_ns", params)
        return [EventRow(r[0], r[1], r[2], r[3], _json(r[4]), r[5], r[6]) for r in rows]

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The latest status snapshot a flock wrote for this run, or None."""
        rows = self._rows(
            "SELECT snapshot, ts_ns FROM status WHERE trace_id = ? ORDER BY ts_ns DESC LIMIT 1", [run_id]
        )
        if not rows:
            return None
        return {**_json(rows[0][0]), "taken_ns": rows[0][1]}

    def sql_rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one of Flock-Flow's own queries (an empty store gives no rows)."""
        return self._rows(sql, params)

    def sql(
        self,
        query: str,
        *,
        timeout: float = TRACE_SQL_TIMEOUT,
        memory_limit: str = TRACE_SQL_MEMORY,
        max_rows: int = TRACE_SQL_MAX_ROWS,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a read-only query within limits (see :func:`flock_cli.tracing.query.run_query`):
        the column names and rows. DuckDB's errors and a limit reached are UserErrors."""
        from flock_cli.tracing.query import memory_bytes, run_query

        if not query.strip():
            raise TraceStoreError("the query is empty: give a SELECT statement")
        limit_bytes = memory_bytes(memory_limit)
        with self.connection() as con:
            return run_query(con, query, timeout=timeout, memory_limit=memory_limit,
                             limit_bytes=limit_bytes, max_rows=max_rows)  # fmt: skip

    # -- retention -------------------------------------------------------------------------------

    def prune(self, older_than_s: float, *, dry_run: bool = False) -> dict[str, int]:
        """Delete runs that started more than ``older_than_s`` seconds ago (running ones are
        kept). Returns the rows deleted (or that would be) per table. Several stores are pruned
        one by one, each by the age of its own runs."""
        from flock_cli.tracing.retention import delete_runs

        totals = {"runs": 0, "spans": 0, "artifacts": 0, "events": 0}
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        for path in resolve_stores(self.names) if self.several else [self.path]:
            check_trace_path(path, must_exist=True)
            runs = TraceReader(path, wait=self.wait).runs(limit=None)
            old = [r.run_id for r in runs if r.started_ns < cutoff and r.status != "running"]
            for table, n in delete_runs(path, old, wait=self.wait, dry_run=dry_run).items():
                totals[table] += n
        return totals


def _ids(run_ids: RunIds) -> tuple[str, list[Any]]:
    """A ``trace_id`` condition and its parameters for one id or several."""
    if isinstance(run_ids, str):
        return "trace_id = ?", [run_ids]
    return f"trace_id IN ({', '.join('?' for _ in run_ids) or 'NULL'})", list(run_ids)


_WORKFLOW_ARTIFACTS = "(SELECT list(artifact_id) FROM artifacts WHERE correlation_id = ?)"
_WORKFLOW_RUNS = (
    f"name = 'agent.run' AND (list_has_any(inputs, {_WORKFLOW_ARTIFACTS})"
    f" OR list_has_any(outputs, {_WORKFLOW_ARTIFACTS}))"
)


def _where(scope: Scope, table: str) -> tuple[str, list[Any]]:
    """The condition selecting ``scope`` in ``table``: its traces' rows; for a workflow, its
    artifacts, the agent runs that consumed or published them, and the events of either."""
    if not isinstance(scope, Workflow):
        return _ids(scope)
    cid = scope.correlation_id
    if table == "artifacts":
        return "correlation_id = ?", [cid]
    if table == "spans":
        return _WORKFLOW_RUNS, [cid, cid]
    return (
        "artifact_id IN (SELECT artifact_id FROM artifacts WHERE correlation_id = ?)"
        f" OR span_id IN (SELECT span_id FROM spans WHERE {_WORKFLOW_RUNS})",
        [cid, cid, cid],
    )


def _span_row(r: tuple[Any, ...]) -> SpanRow:
    return SpanRow(
        span_id=r[0], parent_id=r[1], name=r[2], agent=r[3], start_ns=r[4], end_ns=r[5], status=r[6],
        message=r[7], attributes=_json(r[8]), inputs=list(r[9] or []), outputs=list(r[10] or []),
        trace_id=r[11], kind=r[12] or "internal", otel_trace_id=r[13], otel_parent_id=r[14],
        links=list(r[15] or []),
    )  # fmt: skip


def _json(value: Any) -> Any:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else value
