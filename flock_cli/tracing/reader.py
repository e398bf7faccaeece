"""Reading the trace store from any process, while flocks write to it.

Every query opens the store read-only, runs and closes it again (see ``duck.py`` for why), waiting
briefly whenever a writer holds it. Results are plain dataclasses, ready for the CLI, ``--json``
and the dashboard. A reader given several stores (files, folders, globs) reads them as one
(``stores.py``); ``board_runs.py`` groups the runs of several processes on one board.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import TraceStoreError
from flock_cli.limits import TRACE_SQL_MAX_ROWS, TRACE_SQL_MEMORY, TRACE_SQL_TIMEOUT
from flock_cli.private_files import owner_only_umask
from flock_cli.tracing.duck import check_trace_path, connect
from flock_cli.tracing.stores import is_folder, open_stores, resolve_stores

if TYPE_CHECKING:
    import duckdb

__all__ = ["ArtifactRow", "EventRow", "RunRow", "SpanRow", "TraceReader"]

_RUN_ID = re.compile(r"[0-9a-f]{1,32}")

_RUN_SUMMARY = """
WITH picked AS (  -- the runs asked for, found without reading their spans' attributes
    SELECT trace_id, min(started) AS started_ns FROM (
        SELECT trace_id, started_ns AS started FROM runs
        UNION ALL
        SELECT trace_id, start_ns FROM spans WHERE parent_id IS NULL OR name = 'agent.run'
    ) WHERE {where} GROUP BY trace_id ORDER BY started_ns DESC {limit}
),
s AS (
    SELECT trace_id, min(start_ns) AS first_ns, max(end_ns) AS last_ns,
           arg_min(name, start_ns) AS first_name,
           count(*) FILTER (WHERE name = 'agent.run') AS agent_runs,
           count(*) FILTER (WHERE name = 'agent.run' AND status = 'error') AS failed_attempts,
           coalesce(sum(CAST(attributes->>'$."llm.input_tokens"' AS BIGINT))
               + sum(CAST(attributes->>'$."llm.output_tokens"' AS BIGINT)), 0) AS tokens,
           sum(CAST(attributes->>'$."llm.cost"' AS DOUBLE)) AS cost
    FROM spans WHERE trace_id IN (SELECT trace_id FROM picked) AND (parent_id IS NULL OR name = 'agent.run')
    GROUP BY trace_id
),
a AS (SELECT trace_id, count(DISTINCT artifact_id) AS artifacts, arg_min(type, created_ns) AS first_type
      FROM artifacts WHERE trace_id IN (SELECT trace_id FROM picked) GROUP BY trace_id),
d AS (SELECT trace_id, count(*) AS dead FROM events
      WHERE kind = 'dead_letter' AND trace_id IN (SELECT trace_id FROM picked) GROUP BY trace_id)
SELECT p.trace_id, r.name, s.first_name, a.first_type,
       coalesce(r.started_ns, s.first_ns) AS started_ns, coalesce(r.ended_ns, CASE WHEN r.trace_id IS NULL
       THEN s.last_ns END) AS ended_ns, r.status, r.pid, r.host, r.attributes,
       coalesce(a.artifacts, 0), coalesce(s.agent_runs, 0), coalesce(s.failed_attempts, 0),
       coalesce(d.dead, 0), coalesce(s.tokens, 0), s.cost
FROM picked p LEFT JOIN runs r ON r.trace_id = p.trace_id LEFT JOIN s ON s.trace_id = p.trace_id
LEFT JOIN a ON a.trace_id = p.trace_id LEFT JOIN d ON d.trace_id = p.trace_id
ORDER BY started_ns DESC
"""


@dataclass
class RunRow:
    """One run (one trace): a ``traced_run``/``flock run``, or a publish outside any run."""

    run_id: str
    name: str
    started_ns: int
    ended_ns: int | None
    status: str  # running | ok | failed | interrupted
    artifacts: int
    agent_runs: int
    failed_attempts: int
    dead_letters: int
    tokens: int
    cost: float | None
    pid: int | None = None
    host: str | None = None
    recipe: str | None = None
    board: str | None = None
    """The board the run worked (``setup.board_identity``), when its process recorded one."""
    processes: list[RunRow] = field(default_factory=list)
    """For a run several processes worked (``board_runs.py``): each process's own run, oldest
    first; empty for the run of one process."""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (None while running)."""
        return None if self.ended_ns is None else (self.ended_ns - self.started_ns) / 1e9

    @property
    def trace_ids(self) -> list[str]:
        """The traces that make up the run: its processes' runs, or its own id."""
        return [p.run_id for p in self.processes] or [self.run_id]

    @property
    def process(self) -> str:
        """``host:pid`` of the process that wrote the run (``?`` where unknown)."""
        return f"{self.host or '?'}:{self.pid if self.pid is not None else '?'}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (``board`` and ``processes`` only when there are some)."""
        data = {**asdict(self), "duration_s": self.duration_s}
        if self.board is None:
            del data["board"]
        if self.processes:
            data["processes"] = [p.to_json() for p in self.processes]
        else:
            del data["processes"]
        return data


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
        self._local = threading.local()  # each thread's open session (a connection is not shared)

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
        """Several queries on one connection (one consistent view, one open/close)."""
        with self.connection() as con:
            self._local.session = con
            try:
                yield self
            finally:
                self._local.session = None

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
        sql = _RUN_SUMMARY.format(where="true", limit="" if limit is None else f"LIMIT {max(0, int(limit))}")
        return [_run_row(row) for row in self._rows(sql)]

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
        rows = self._rows(_RUN_SUMMARY.format(where="trace_id LIKE ?", limit="LIMIT 6"), [ref + "%"])
        if not rows:
            raise TraceStoreError(f"no run with id '{ref}' in {self.where} (flock trace list shows the runs)")
        if len(rows) > 1:
            ids = ", ".join(row[0][:12] for row in rows[:5])
            raise TraceStoreError(f"run id '{ref}' is ambiguous: {ids}... give more characters")
        return _run_row(rows[0])

    def runs_by_id(self, run_ids: Sequence[str]) -> list[RunRow]:
        """The runs with these exact ids (those that exist), newest first."""
        if not run_ids:
            return []
        where, params = _ids(run_ids)
        return [_run_row(row) for row in self._rows(_RUN_SUMMARY.format(where=where, limit=""), params)]

    # -- what a run holds ------------------------------------------------------------------------

    def spans(self, run_id: RunIds) -> list[SpanRow]:
        """Every span of a run (or of several), in start order."""
        where, params = _ids(run_id)
        rows = self._rows(
            "SELECT span_id, parent_id, name, agent, start_ns, end_ns, status, message, attributes,"
            f" inputs, outputs, trace_id FROM spans WHERE {where} ORDER BY start_ns, span_id",
            params,
        )
        return [
            SpanRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                _json(r[8]),
                list(r[9] or []),
                list(r[10] or []),
                r[11],
            )
            for r in rows
        ]

    def artifacts(self, run_id: RunIds | None = None, *, limit: int | None = None) -> list[ArtifactRow]:
        """Artifacts of a run (or of several, or of every run), in publish order; each artifact once."""
        where, params = _ids(run_id) if run_id else ("", [])
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

    def events(self, run_id: RunIds, kinds: tuple[str, ...] = ()) -> list[EventRow]:
        """Events of a run (or of several), oldest first (only ``kinds`` when given)."""
        where, params = _ids(run_id)
        sql = "SELECT ts_ns, kind, agent, artifact_id, attributes, span_id, trace_id"
        sql += f" FROM events WHERE {where}"
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
        if self.several:
            totals = {"runs": 0, "spans": 0, "artifacts": 0, "events": 0}
            for path in resolve_stores(self.names):
                pruned = TraceReader(path, wait=self.wait).prune(older_than_s, dry_run=dry_run)
                for table, n in pruned.items():
                    totals[table] += n
            return totals
        check_trace_path(self.path, must_exist=True)
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        old = [r.run_id for r in self.runs(limit=None) if r.started_ns < cutoff and r.status != "running"]
        if not old:
            return {"runs": 0, "spans": 0, "artifacts": 0, "events": 0}
        with owner_only_umask():  # the WAL this write makes holds payloads too (private_files.py)
            return self._prune(old, dry_run)

    def _prune(self, old: list[str], dry_run: bool) -> dict[str, int]:
        counts = {"runs": len(old)}
        con = connect(self.path, read_only=False, wait=self.wait)
        try:
            con.execute("CREATE TEMP TABLE doomed (trace_id VARCHAR)")
            con.executemany("INSERT INTO doomed VALUES (?)", [[run_id] for run_id in old])
            con.execute("BEGIN TRANSACTION")
            for table in ("spans", "artifacts", "events", "status", "runs"):
                found = con.execute(
                    f"SELECT count(*) FROM {table} WHERE trace_id IN (SELECT trace_id FROM doomed)"
                ).fetchall()[0][0]
                if table != "runs":
                    counts[table] = int(found)
                if not dry_run:
                    con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM doomed)")
            con.execute("ROLLBACK" if dry_run else "COMMIT")
            if not dry_run:
                con.execute("CHECKPOINT")
        finally:
            con.close()
        counts.pop("status", None)
        return counts


def _ids(run_ids: RunIds) -> tuple[str, list[Any]]:
    """A ``trace_id`` condition and its parameters for one id or several."""
    if isinstance(run_ids, str):
        return "trace_id = ?", [run_ids]
    return f"trace_id IN ({', '.join('?' for _ in run_ids) or 'NULL'})", list(run_ids)


def _json(value: Any) -> Any:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else value


def _run_row(row: tuple[Any, ...]) -> RunRow:
    (run_id, name, first_name, first_type, started, ended, status, pid, host, attributes, artifacts,
     agent_runs, failed_attempts, dead, tokens, cost) = row  # fmt: skip
    attrs = _json(attributes)
    if name is None:  # a publish outside any traced run
        name = f"publish {first_type}" if first_type else (first_name or "?")
    if status == "running":
        status = "running" if alive(pid, host) else "interrupted"
    elif status in ("interrupted", "aborted"):
        pass  # stopped by Ctrl-C or SIGTERM before it finished
    elif dead or status == "failed":
        status = "failed"
    else:
        status = "ok"
    return RunRow(
        run_id, name, int(started), None if ended is None else int(ended), status, int(artifacts),
        int(agent_runs), int(failed_attempts), int(dead), int(tokens or 0), cost, pid, host,
        attrs.get("recipe"), attrs.get("flock.board"),
    )  # fmt: skip


def alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that writes a run still lives (assumed so for other hosts)."""
    if pid is None or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
