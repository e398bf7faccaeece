"""``flock top``: the live dashboard (Textual), attached to the trace store of running flocks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flock_cli.cli.common import fail, reports_errors

__all__ = ["top"]


@reports_errors
def top(
    run: Annotated[
        str | None,
        typer.Argument(metavar="[RUN]", help="A run id or prefix (default: follow the newest run)."),
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option(
            "--traces", metavar="PATH", help="Trace store (default: $FLOCK_TRACES or .flock/traces.duckdb)."
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", help="Seconds between reads of the store.")
    ] = 0.25,
) -> None:
    """Watch a run live: agents, the blackboard, pending joins and batches, streamed output and
    events. Works while `flock run` writes in another terminal, and on finished runs."""
    from flock_cli.cli.trace_cmd import trace_store
    from flock_cli.tracing.duck import check_trace_path

    if not 0.05 <= interval <= 3600:
        fail(f"--interval must be between 0.05 and 3600 seconds, got {interval}")
    path = trace_store(traces)
    check_trace_path(path)  # a missing store is fine: the dashboard waits for the first run
    from flock_cli.dashboard.app import FlockTop
    from flock_cli.tracing.reader import TraceReader

    reader = TraceReader(path)
    if run is not None:
        if not path.exists():
            fail(f"no trace store at {path}: without one, run {run} cannot be shown")
        run = reader.run(run).run_id  # an unknown or ambiguous id stops here, not in the dashboard
    FlockTop(reader, run, poll_interval=interval).run()
