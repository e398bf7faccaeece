"""``flock run RECIPE``: compile a recipe, publish the inputs, run until idle (or keep serving)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import uuid4

import typer

from flock_cli.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    board_path,
    build_on_board,
    err_console,
    fail,
    load_or_report,
    parse_uuid,
    recipe_type,
    reports_errors,
    show_board_notes,
)
from flock_cli.cli.inputs import parse_input_option, validated_payloads
from flock_cli.cli.options import (
    EngineOpt,
    EngineOverride,
    ForceOpt,
    ModelOpt,
    ReplayFromOpt,
    ReplayOpt,
    TracesOpt,
)

if TYPE_CHECKING:
    from uuid import UUID

    from pydantic import BaseModel

    from flock_cli.core.orchestrator import Flock
    from flock_cli.recipe.loader import Recipe
    from flock_cli.tracing.metrics_server import MetricsServer

__all__ = ["EngineOverride", "run"]


@reports_errors
def run(
    recipe: Annotated[
        Path, typer.Argument(metavar="RECIPE", help="The recipe file (YAML).", show_default=False)
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="TYPE=FILE",
            help="TYPE=FILE (JSON or YAML, one object or a list) or TYPE=- for stdin.",
        ),
    ] = None,
    model: ModelOpt = None,
    replay: ReplayOpt = None,
    replay_from: ReplayFromOpt = None,
    board: Annotated[
        str | None,
        typer.Option(
            "--board",
            metavar="PATH|URL",
            help="Board file, postgresql:// URL or :memory: (default: $FLOCK_BOARD, settings.board or"
            " .flock/<recipe name>.db).",
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep serving artifacts published later (flock publish).")
    ] = False,
    engine: EngineOpt = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="SECONDS", help="Give up after this many seconds.")
    ] = None,
    force: ForceOpt = False,
    correlation_id: Annotated[
        str | None,
        typer.Option(
            "--correlation-id",
            metavar="UUID",
            help="One correlation id for all inputs (continue an existing workflow). Default: each"
            " input item is a workflow of its own, with its own new correlation id.",
        ),
    ] = None,
    shared_correlation: Annotated[
        bool,
        typer.Option(
            "--shared-correlation",
            help="All inputs share one new correlation id: one workflow (joins pair them).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and artifacts as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
    traces: TracesOpt = None,
    no_traces: Annotated[bool, typer.Option("--no-traces", help="Write no traces for this run.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on HOST:PORT/metrics while the run goes on, and after it"
            " until a scrape has read the final values (--metrics-linger).",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host",
            metavar="HOST",
            help="The address --metrics-port binds (default 127.0.0.1: this machine only; 0.0.0.0"
            " or :: for every interface).",
        ),
    ] = None,
    metrics_linger: Annotated[
        float | None,
        typer.Option(
            "--metrics-linger",
            metavar="SECONDS",
            min=0,
            max=3600,
            help="After the run, how long --metrics-port waits for a scrape to read the final values"
            " (default 15; 0: stop at once).",
        ),
    ] = None,
) -> None:
    """Run a recipe: publish the --input artifacts, run agents until nothing is left to do, print
    the final artifacts and a summary. Exit 1 when a run failed, something went to the dead
    letters or a circuit breaker tripped. Ctrl-C stops gracefully; a second Ctrl-C aborts."""
    loaded = load_or_report(recipe, as_json)
    if timeout is not None and not 0 < timeout < float("inf"):
        fail(f"--timeout must be a positive number of seconds, got {timeout}")
    if not loaded.definition.agents:
        fail(f"{recipe} declares no agents: nothing can run")
    pending = _validated_inputs(loaded, inputs or [])
    override = engine.value if engine else None
    recording = recording_for(replay, replay_from, override, traces)
    if model is not None and override != "test":
        from flock_cli.engines.local import check_local_model

        check_local_model(model)  # a missing model file is a usage mistake: exit 2 before running
    # before the board is opened: no file is created for a refused recipe
    loaded.check_compilable(override, model, recording)
    note_unused_model(model, override, loaded)
    chosen = board_path(board, loaded)
    if not pending and not watch and chosen.target == ":memory:":
        fail(_nothing_to_run(loaded))
    if traces is not None and no_traces:
        fail("give --traces PATH or --no-traces, not both")
    if metrics_port is None and (metrics_host is not None or metrics_linger is not None):
        fail("--metrics-host and --metrics-linger go with --metrics-port")
    import asyncio

    from flock_cli.cli.run_session import RunSession
    from flock_cli.early_signals import EarlySignals

    # From the moment the board is opened, Ctrl-C and SIGTERM belong to the run: one that comes
    # while the flock is built stops it at its start, with its summary, like any other.
    with EarlySignals() as early:
        flock = build_on_board(
            loaded, chosen, model=model, engine=override, replay=recording, traces=traces, no_traces=no_traces
        )
        show_board_notes(quiet=quiet or as_json)
        session = RunSession(
            flock,
            loaded,
            pending,
            watch=watch,
            timeout=timeout,
            force=force,
            quiet=quiet or as_json,
            correlation_id=_correlation(correlation_id, shared_correlation),
            nothing_to_run=_nothing_to_run(loaded),
            trace_attributes={"recipe": str(recipe), "board": chosen.shown()},
            early=early,
        )
        server = _metrics_server(flock, metrics_port, metrics_host)
    # Python's own handlers again, so asyncio.run installs its own: a Ctrl-C after the run gave
    # the signals back (closing the trace store) cancels the run's task as it always did.
    try:
        outcome = asyncio.run(session.run())
        if server is not None:
            server.end()
        from flock_cli.cli.run_report import report

        report(outcome, loaded, as_json, traces_option=traces)
        if server is not None and outcome.interrupted < 2:  # an aborted run is not waited on
            _linger(server, metrics_linger)
    finally:
        if server is not None:
            server.close()
    # Ctrl-C is how a --watch run ends, so one Ctrl-C there is a normal stop; anywhere else the
    # run did not finish, and a second Ctrl-C aborts.
    if outcome.interrupted > 1 or (outcome.interrupted and not watch):
        raise typer.Exit(EXIT_INTERRUPTED)
    if not outcome.ok:
        raise typer.Exit(EXIT_FAILED)


def _metrics_server(flock: Flock, port: int | None, host: str | None) -> MetricsServer | None:
    """The metrics server ``--metrics-port`` asks for, serving already; None without one."""
    if port is None:
        return None
    from flock_cli.tracing.metrics_server import DEFAULT_HOST, MetricsServer

    metrics = flock.tracer.metrics
    metrics.track(agent.name for agent in flock.agents)  # every agent's gauges from the first scrape
    server = MetricsServer(metrics, port, host or DEFAULT_HOST)
    err_console().print(f"metrics: {server.url}")
    if not server.loopback:
        err_console().print(f"note: anyone who can reach {server.host}:{server.port} reads these metrics")
    return server


def _linger(server: MetricsServer, seconds: float | None) -> None:
    """Serve the final metrics until a scrape read them: the run may end between two scrapes."""
    import sys

    from flock_cli.tracing.metrics_server import LINGER

    seconds = LINGER if seconds is None else seconds
    if seconds <= 0:
        return
    sys.stdout.flush()  # the report reaches a pipe now, not after the wait
    err_console().print(
        f"metrics: serving the final values until a scrape reads them (at most {seconds:g} s; Ctrl-C"
        " stops waiting)"
    )
    server.wait_for_scrape(seconds)


def _validated_inputs(loaded: Recipe, options: list[str]) -> list[BaseModel]:
    """Every input validated before anything runs, so a bad payload loses nothing."""
    from flock_cli.core.registry import canonical_name

    models: list[BaseModel] = []
    parsed = [parse_input_option(option) for option in options]
    if sum(source == "-" for _, source in parsed) > 1:  # the second would read nothing
        fail("standard input can be read once: give '-' to one --input only")
    for type_name, source in parsed:
        model_cls = recipe_type(loaded, type_name)
        if not loaded.graph.consumers(canonical_name(model_cls)):
            err_console().print(f"note: no agent consumes {type_name}; it is stored and nothing runs on it")
        models += validated_payloads(model_cls, type_name, source, label=f"--input {type_name}")
    return models


def _nothing_to_run(recipe: Recipe) -> str:
    entry = ", ".join(recipe.graph.entry_types()) or "a consumed type"
    return f"nothing to run: pass --input TYPE=FILE (the recipe starts from {entry}), or use --watch"


def _correlation(text: str | None, shared: bool) -> UUID | None:
    """The correlation id all inputs share, or None: each input item is then a workflow of its own
    (three submissions, three reviews: gates and joins never pair one's analyses with another's).
    ``--correlation-id`` continues an existing workflow; ``--shared-correlation`` makes the inputs
    one new workflow."""
    if text is not None:
        if shared:
            fail("give --correlation-id UUID or --shared-correlation, not both")
        return parse_uuid(text, "--correlation-id")
    return uuid4() if shared else None


def note_unused_model(model: str | None, override: str | None, loaded: Recipe) -> None:
    """Say on stderr when ``--model`` will change nothing (a mistake worth a line, not an error)."""
    if model is not None and (override == "test" or not loaded.uses_dspy):
        why = (
            "--engine test replaces the dspy engines"
            if override == "test"
            else "no agent uses the dspy engine"
        )
        err_console().print(f"note: --model has no effect on this run: {why}")


def recording_for(
    replay: str | None, replay_from: Path | None, override: str | None, traces: Path | None
) -> Any:
    """The recording ``--replay``/``--replay-from`` name, read before anything runs."""
    if replay is None and replay_from is None:
        return None
    if replay is not None and replay_from is not None:
        fail("give --replay RUN or --replay-from FILE, not both")
    if override == "test":
        fail("--engine test replaces the dspy engines: there is nothing to replay")
    from flock_cli.engines.recording import Recording
    from flock_cli.tracing.setup import trace_path

    if replay_from is not None:
        return Recording.from_file(replay_from)
    store = traces if traces is not None else trace_path(None)
    if store is None:
        fail("--replay reads the trace store, and tracing is off (FLOCK_TRACES): give --traces PATH")
    return Recording.from_trace(store, replay)
