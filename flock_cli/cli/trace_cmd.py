"""``flock trace list|show|timeline|audit|sql|export|metrics|prune``: read the DuckDB trace store.

Every command works while flocks write to the store: each query opens it read-only for a moment
(``tracing/duck.py`` explains the locking). ``--traces`` may be given more than once, and may
name a folder or a glob: the stores are then read as one (``tracing/stores.py``), and the runs of
several processes on one board are shown as one run (``tracing/board_runs.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flock_cli.cli.common import console, emit_json, fail, reports_errors
from flock_cli.errors import printable
from flock_cli.limits import TRACE_SQL_MAX_ROWS, TRACE_SQL_MEMORY, TRACE_SQL_TIMEOUT

if TYPE_CHECKING:
    from flock_cli.tracing.otlp import OtlpExporter
    from flock_cli.tracing.reader import RunRow, TraceReader

__all__ = ["trace_app", "trace_store", "trace_stores"]

trace_app = typer.Typer(
    name="trace",
    help="Inspect traces: runs, the causal tree, timelines, audits, SQL, exports, retention.",
    no_args_is_help=True,
)
TracesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--traces",
        metavar="PATH",
        help="Trace store: a file, a folder (its *.duckdb files) or a quoted glob; repeat it to read"
        " several as one (default: $FLOCK_TRACES, else .flock/traces.duckdb).",
    ),
]
RunArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[RUN]",
        help="A run id or a unique prefix of one (any process's, for a run several worked), or a"
        " workflow (correlation) id for that workflow alone (default: the newest run).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def trace_store(option: Path | None) -> Path:
    """The trace store a command reads: ``--traces``, else ``$FLOCK_TRACES``, else the default."""
    from flock_cli.tracing.duck import DEFAULT_TRACE_PATH
    from flock_cli.tracing.setup import TRACES_ENV, trace_path

    if option is not None:
        return option
    path = trace_path(None)
    if path is None:
        fail(
            f"tracing is off (${TRACES_ENV}={os.environ.get(TRACES_ENV)}); pass --traces PATH to read a store"
        )
    return path or DEFAULT_TRACE_PATH


def trace_stores(options: list[Path] | None) -> list[Path]:
    """The trace stores a command reads: every ``--traces``, else ``$FLOCK_TRACES`` or the default."""
    return list(options) if options else [trace_store(None)]


def _reader(options: list[Path] | None) -> TraceReader:
    from flock_cli.tracing.reader import TraceReader

    return TraceReader(trace_stores(options))


def _width() -> int:
    return max(60, console().width)


@trace_app.command("list")
@reports_errors
def list_runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 20,
    traces: TracesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs, newest first: start, name, status, artifacts, agent runs, dead letters and duration
    (tokens and cost too when some run has them; --json has every figure). A run several
    processes worked on one board is one row, each process's part (host:pid) listed under it."""
    from flock_cli.cli.trace_render import run_table
    from flock_cli.tracing.board_runs import board_runs

    runs = board_runs(_reader(traces), limit=limit)
    if as_json:
        emit_json([run.to_json() for run in runs])
    elif not runs:
        console().print("no runs in the trace store yet")
    else:
        console().print(run_table(runs))


@trace_app.command("show")
@reports_errors
def show(run: RunArg = None, traces: TracesOpt = None, as_json: JsonOpt = False) -> None:
    """A run as a tree: artifact -> agent run -> artifacts, with timings, statuses and errors. A
    run several processes worked is one tree, each agent run marked with its process (host:pid)."""
    from flock_cli.cli.trace_render import run_tree
    from flock_cli.tracing.analysis import runs_of
    from flock_cli.tracing.run_tree import read_run_tree

    tree = read_run_tree(_reader(traces), run)
    if as_json:
        emit_json(tree.to_json())
        return
    console().print(run_tree(tree.row, tree.roots, tree.orphans, runs_of(tree.spans), tree.in_progress))


@trace_app.command("timeline")
@reports_errors
def timeline(
    run: RunArg = None,
    width: Annotated[
        int | None, typer.Option("--width", min=40, help="Columns (default: the terminal's).")
    ] = None,
    traces: TracesOpt = None,
) -> None:
    """A Gantt chart of the run's agent runs: concurrency and the critical path (across every
    process that worked the run, each bar marked [n] with its process)."""
    from flock_cli.cli.trace_render import run_ref
    from flock_cli.cli.trace_render import timeline as render
    from flock_cli.tracing.board_runs import board_run, process_labels

    reader = _reader(traces)
    with reader.session():
        row = board_run(reader, run)
        spans = reader.spans(row.scope)
    console().print(f"{row.name}  {run_ref(row)}  {row.status}")
    console().print(render(spans, width or _width(), process_labels(row) or None))


@trace_app.command("audit")
@reports_errors
def audit(
    run: RunArg = None,
    artifact: Annotated[
        str | None, typer.Option("--artifact", metavar="ID", help="Only this artifact (or prefix).")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    traces: TracesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who saw each artifact of a run, and who was denied or filtered from it (with each agent's
    process, host:pid, in a run several processes worked)."""
    from rich.markup import escape
    from rich.table import Table

    from flock_cli.tracing.analysis import audit as audit_run
    from flock_cli.tracing.board_runs import board_run, process_labels

    reader = _reader(traces)
    with reader.session():
        row = board_run(reader, run)
        ids = row.scope
        entries = audit_run(reader.artifacts(ids), reader.spans(ids), reader.events(ids), process_labels(row))
    if artifact:
        if not re.fullmatch(r"[0-9a-fA-F][0-9a-fA-F-]{0,35}", artifact):
            fail(f"--artifact {artifact!r} is not an artifact id or the start of one (hex digits)")
        found = [e for e in entries if e.artifact_id.startswith(artifact.lower())]
        if entries and not found:
            fail(f"no artifact starting with {artifact!r} in the audit of run {row.run_id[:12]}")
        entries = found
    if agent:
        known = {e.agent for e in entries}
        if agent not in known:
            agents = ", ".join(sorted(known)) or "none"
            fail(f"no agent '{agent}' in the audit of run {row.run_id[:12]} (agents: {agents})")
        entries = [e for e in entries if e.agent == agent]
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    several = bool(row.processes)
    for column in ("artifact", "type", "agent", "outcome", "detail", *(["process"] if several else [])):
        table.add_column(column)
    style = {"consumed": "green", "denied": "red", "embargoed": "yellow", "filtered": "yellow"}
    for e in entries:
        outcome = f"[{style[e.outcome]}]{e.outcome}[/]"
        cells = [e.artifact_id[:8], escape(e.type), escape(e.agent), outcome, escape(printable(e.detail))]
        table.add_row(*cells, *([escape(e.process or "?")] if several else []))
    console().print(table if entries else "nothing to audit in this run")


@trace_app.command("sql")
@reports_errors
def sql(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="A read-only SQL query (DuckDB dialect).")],
    traces: TracesOpt = None,
    as_json: JsonOpt = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0, metavar="SECONDS", help="Stop the query after this long (0: never)."
        ),
    ] = TRACE_SQL_TIMEOUT,
    memory_limit: Annotated[
        str,
        typer.Option(
            "--memory-limit", metavar="SIZE", help="Memory for the query and its result (500MB, 2GB)."
        ),
    ] = TRACE_SQL_MEMORY,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, metavar="N", help="Refuse a result of more rows than this.")
    ] = TRACE_SQL_MAX_ROWS,
) -> None:
    """Run a read-only query. Tables: runs, spans, artifacts, events, status; over several stores
    (--traces repeated, a folder or a glob) each table holds every store's rows, and a column
    `store` names the file each came from. A query that runs past --timeout, --memory-limit or
    --max-rows stops with an error (exit 2)."""
    from rich.table import Table
    from rich.text import Text

    columns, rows = _reader(traces).sql(query, timeout=timeout, memory_limit=memory_limit, max_rows=max_rows)
    if as_json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    # Text: values are never read as markup; printable(): nor as terminal commands (an ESC or a
    # C1 character in a payload is shown as its escape, \x1b). --json gives the values as stored.
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(Text(printable(column, keep="")))
    for row in rows:
        table.add_row(*(Text("NULL" if v is None else printable(str(v), keep="\n\t")) for v in row))
    console().print(table)
    console().print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", style="dim")


@trace_app.command("export")
@reports_errors
def export(
    run: RunArg = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the store.")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="jsonl|otlp|recording",
            help="JSON lines, OTLP/JSON, or the run's model answers (for flock run --replay-from).",
        ),
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout.")
    ] = None,
    send: Annotated[
        bool,
        typer.Option(
            "--send",
            help="Post the runs' spans to the OpenTelemetry collector the OTEL_EXPORTER_OTLP_* variables"
            " name (http/protobuf or http/json), instead of printing them.",
        ),
    ] = False,
    traces: TracesOpt = None,
) -> None:
    """Export runs as JSON lines (one record per line) or as an OTLP/JSON trace request, or send
    them to an OpenTelemetry collector (--send). A run several processes worked is exported as
    each process's run."""
    from flock_cli.tracing.board_runs import board_run

    if fmt not in ("jsonl", "otlp", "recording"):
        fail(f"--format must be 'jsonl', 'otlp' or 'recording', not '{fmt}'")
    if all_runs and run is not None:
        fail("give a RUN or --all, not both")
    if send and (output is not None or fmt == "recording"):
        fail("--send posts OTLP to a collector: it takes no --output, and no --format but otlp")
    exporter = _collector() if send else None
    reader = _reader(traces)
    with reader.session():
        if all_runs:
            runs = reader.runs(limit=None)
        else:
            row = board_run(reader, run)
            if row.workflow:
                fail("export takes a run id, not a workflow id: export the runs the workflow went through")
            runs = row.processes or [row]
        if exporter is not None:
            _send(reader, runs, exporter)
            return
        _export(reader, runs, fmt, output)


def _collector() -> OtlpExporter:
    from flock_cli.tracing.otlp import PROTOCOLS, otlp_exporter_from_env, setting

    exporter = otlp_exporter_from_env("flock")
    variable, protocol = setting(os.environ, "PROTOCOL")
    if exporter is None and protocol and protocol not in PROTOCOLS:
        fail(f"--send speaks {' and '.join(PROTOCOLS)}, not {protocol} ({variable})")
    if exporter is None:
        fail(
            "--send needs a collector: set OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT), and"
            " no OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none"
        )
    return exporter


def _send(reader: TraceReader, runs: list[RunRow], exporter: OtlpExporter) -> None:
    """Post each run as one request; the first refusal stops with one line (exit 1)."""
    from flock_cli.cli.trace_export import otlp_resources

    spans = 0
    try:
        for run in runs:
            resources = otlp_resources(reader, [run])
            try:
                exporter.send({"resourceSpans": resources})
            except (OSError, ValueError) as exc:  # a runtime failure, not a usage mistake: exit 1
                fail(f"the collector at {exporter.url} did not take run {run.run_id[:12]}: {exc}", code=1)
            spans += sum(len(s["spans"]) for r in resources for s in r["scopeSpans"])
    finally:
        exporter.close(1)
    console().print(f"sent {spans} spans of {len(runs)} run(s) to {exporter.url} ({exporter.protocol})")


def _export(reader: TraceReader, runs: list[RunRow], fmt: str, output: Path | None) -> None:
    from flock_cli.cli.trace_export import export_lines

    lines: Iterable[str] = export_lines(reader, runs, fmt)
    if fmt == "recording":  # an empty recording would only fail later, at replay: say so now
        lines = list(lines)
        if not lines:
            ids = ", ".join(r.run_id[:12] for r in runs)
            fail(f"run {ids} made no model calls: there is no recording to export")
    if output is None:
        for line in lines:
            typer.echo(line)
        return
    try:
        with output.open("w", encoding="utf-8") as handle:
            count = sum(handle.write(line + "\n") > 0 for line in lines)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    console().print(
        f"wrote {count} line{'s' if count != 1 else ''} ({fmt}) for {len(runs)} run(s) to {output}"
    )


@trace_app.command("metrics")
@reports_errors
def metrics(run: RunArg = None, traces: TracesOpt = None) -> None:
    """Prometheus text-format metrics of a run, from the trace store (of every process that
    worked it)."""
    from flock_cli.cli.trace_export import run_metrics
    from flock_cli.tracing.board_runs import board_run

    reader = _reader(traces)
    with reader.session():
        typer.echo(run_metrics(reader, board_run(reader, run)), nl=False)


@trace_app.command("prune")
@reports_errors
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE", help="Delete runs started longer ago: 90s, 30m, 12h, 7d, 2w."
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    traces: TracesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete old runs (their spans, artifacts and events); running runs are kept."""
    match = _AGE.match(older_than)
    if match is None:
        fail(f"--older-than takes an age like 90s, 30m, 12h, 7d or 2w, not '{older_than}'")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    counts = _reader(traces).prune(seconds, dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": dry_run, "deleted": counts})
        return
    verb = "would delete" if dry_run else "deleted"
    parts = ", ".join(f"{n} {table}" for table, n in counts.items())
    console().print(f"{verb} {parts}")
