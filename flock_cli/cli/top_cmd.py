"""``flock top``: the live dashboard (Textual), attached to the trace store of running flocks and,
on a shared PostgreSQL board, to the board's list of orchestrator processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flock_cli.cli.common import BOARD_ENV, board_path, fail, load, open_board, reports_errors

if TYPE_CHECKING:
    from flock_cli.dashboard.app import FlockTop
    from flock_cli.dashboard.board import BoardReader

__all__ = ["dashboard", "top"]


@reports_errors
def top(
    run: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN]",
            help="A run id or prefix (default: follow the newest run still going, else the newest run).",
        ),
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option(
            "--traces", metavar="PATH", help="Trace store (default: $FLOCK_TRACES or .flock/traces.duckdb)."
        ),
    ] = None,
    board: Annotated[
        str | None,
        typer.Option(
            "--board",
            metavar="PATH|URL",
            help="The board: on a postgresql:// board a Processes panel lists every orchestrator"
            " process working it (host, pid, leases, heartbeat, the routing leader) and its open"
            " work (default: $FLOCK_BOARD, or --recipe's board; a SQLite board has no such panel).",
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "-r",
            metavar="FILE",
            help="Use this recipe's board, and its lease_ttl as the age of a stale heartbeat.",
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", help="Seconds between reads of the store.")
    ] = 0.25,
) -> None:
    """Watch a run live: agents, the blackboard, pending joins and batches, streamed output and
    events; on a PostgreSQL board, its orchestrator processes too. Works while `flock run` writes
    in another terminal, and on finished runs."""
    app = dashboard(run, traces=traces, board=board, recipe=recipe, interval=interval)
    try:
        app.run()
    finally:
        if app.board is not None:
            app.board.close()  # a no-op when the app closed it


def dashboard(
    run: str | None, *, traces: Path | None, board: str | None, recipe: Path | None, interval: float
) -> FlockTop:
    """The dashboard ``flock top`` shows for its arguments, ready to run; a mistake in them stops
    the command here (before the screen is taken over) with one message."""
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
    return FlockTop(reader, run, poll_interval=interval, board=_shared_board(board, recipe))


def _shared_board(option: str | None, recipe_path: Path | None) -> BoardReader | None:
    """The reader of the board's processes, when the board named (``--board``, ``$FLOCK_BOARD``,
    the recipe's) is shared; None without a board or on one that has no list of processes.

    Unlike the board commands, ``flock top`` does not look for a board in ``.flock/`` when none
    is named: a board found there is a SQLite file, which has no processes to list."""
    if not (option or os.environ.get(BOARD_ENV) or recipe_path):
        return None
    recipe = load(recipe_path) if recipe_path is not None else None
    import asyncio

    store = open_board(board_path(option, recipe), must_exist=True)  # a missing file is an error
    if not store.shared:  # SQLite: one process at a time, no list of processes
        asyncio.run(store.close())
        return None
    # A wrong URL stops here (exit 2), before the screen is taken over; a board lost later is a
    # line in the panel. The connection made here is bound to this loop and is not reused.
    asyncio.run(store.ensure_ready())  # type: ignore[attr-defined]
    from flock_cli.core.orchestrator import SHARED_LEASE_TTL
    from flock_cli.dashboard.board import BoardReader
    from flock_cli.store.postgres_shared import SharedBoardMixin

    assert isinstance(store, SharedBoardMixin)
    ttl = recipe.definition.settings.lease_ttl if recipe is not None else None
    return BoardReader(store, stale_after=float(ttl) if ttl is not None else SHARED_LEASE_TTL)
