"""``flock mcp RECIPE``: serve a recipe's flock to an MCP client (a desktop assistant, an IDE) on stdio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flock_cli.cli.common import (
    EXIT_INTERRUPTED,
    board_path,
    build_on_board,
    err_console,
    fail,
    load_or_report,
    reports_errors,
    show_board_notes,
)
from flock_cli.cli.options import (
    BoardOpt,
    EngineOpt,
    ForceOpt,
    ModelOpt,
    NoTracesOpt,
    RecipeArg,
    ReplayFromOpt,
    ReplayOpt,
    TracesOpt,
)
from flock_cli.early_signals import EarlySignals

if TYPE_CHECKING:
    from flock_cli.core.orchestrator import Flock
    from flock_cli.recipe.loader import Recipe

__all__ = ["mcp"]


@reports_errors
def mcp(
    recipe: RecipeArg,
    board: BoardOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    replay: ReplayOpt = None,
    replay_from: ReplayFromOpt = None,
    force: ForceOpt = False,
    traces: TracesOpt = None,
    no_traces: NoTracesOpt = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            metavar="ID",
            help="The client's tenant: it reads what that tenant may see and publishes into it.",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="LABEL", help="A label the client reads with (repeatable)."),
    ] = None,
) -> None:
    """Serve RECIPE's flock over MCP on stdin/stdout, for a desktop assistant or an IDE: a
    publish_<Type> tool per type the recipe starts from, wait_for_results, query_board and
    describe_flock. The agents run in this process. The client reads and publishes as the
    identity 'mcp' (with --tenant and --label). Only protocol messages go to stdout; notes go to
    stderr. Closing stdin, Ctrl-C or SIGTERM stops it: runs in flight finish (a second Ctrl-C
    aborts them, exit 130)."""
    from flock_cli.mcp_server import require

    require()  # names the [mcp] extra before anything else happens
    loaded = load_or_report(recipe, False)
    if traces is not None and no_traces:
        fail("give --traces PATH or --no-traces, not both")
    if not loaded.definition.agents:
        fail(f"{recipe} declares no agents: nothing would run what the client publishes")
    from flock_cli.mcp_server.tools import CLIENT_NAME

    if CLIENT_NAME in loaded.resolved.agents:
        fail(
            f"{recipe} has an agent named {CLIENT_NAME!r}, the name MCP clients publish as; rename the agent"
        )
    from flock_cli.cli import run_cmd

    override = engine.value if engine else None
    recording = run_cmd.recording_for(replay, replay_from, override, traces)
    if model is not None and override != "test":
        from flock_cli.engines.local import check_local_model

        check_local_model(model)
    loaded.check_compilable(override, model, recording)  # before the board is opened
    run_cmd.note_unused_model(model, override, loaded)
    chosen = board_path(board, loaded)
    # From the moment the board is opened, Ctrl-C and SIGTERM stop the server the way they do
    # once it serves (with its summary), rather than ending the process with nothing said.
    with EarlySignals() as early:
        flock = build_on_board(
            loaded, chosen, model=model, engine=override, replay=recording, traces=traces, no_traces=no_traces
        )
        _serve(flock, loaded, chosen.shown(), tenant, labels or [], force, early)


def _serve(
    flock: Flock,
    loaded: Recipe,
    board: str,
    tenant: str | None,
    labels: list[str],
    force: bool,
    early: EarlySignals,
) -> None:
    import asyncio

    from flock_cli import __version__
    from flock_cli.core.visibility import AgentIdentity
    from flock_cli.mcp_server.server import build_server, serve_stdio
    from flock_cli.mcp_server.tools import CLIENT_NAME, FlockTools

    identity = AgentIdentity(name=CLIENT_NAME, tenant_id=tenant, labels=frozenset(labels))
    tools = FlockTools(flock, loaded, identity)
    server = build_server(tools, __version__)
    show_board_notes(quiet=False)
    console = err_console()
    names = ", ".join(spec.name for spec in tools.specs())
    console.print(f"flock mcp: {tools.recipe.name} on stdio (board {board}); tools: {names}", highlight=False)
    served = asyncio.run(serve_stdio(flock, server, force=force, early_signals=early))
    summary = served.summary
    released = f", {summary.released} handed back to the board" if summary.released else ""
    console.print(
        f"flock mcp stopped: {summary.agent_runs} runs, {len(summary.failures)} failed,"
        f" {len(summary.dead_letters)} dead letters{released}",
        highlight=False,
    )
    if served.aborted:  # a second signal cut the runs in flight short
        raise typer.Exit(EXIT_INTERRUPTED)
