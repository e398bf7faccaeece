"""The ``flock`` Typer application: one module per command group, imported here."""

from __future__ import annotations

from typing import Annotated

import typer

from flock_cli.cli import (
    board_cmd,
    mcp_cmd,
    publish_cmd,
    recipe_cmds,
    run_cmd,
    serve_cmd,
    top_cmd,
    trace_cmd,
)

__all__ = ["app"]

app = typer.Typer(
    name="flock",
    help="Flock-Flow: a blackboard-first multi-agent orchestrator. Agents subscribe to typed"
    " artifacts on a shared blackboard; workflows are declared in YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help text: Rich-formatted help costs ~130 ms of imports on every `flock --help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from flock_cli import __version__

        typer.echo(f"flock-flow {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Flock-Flow command line."""


app.command("run", short_help="Run a recipe until idle (or keep serving with --watch).")(run_cmd.run)
app.command("publish", short_help="Validate an artifact and write it to the durable board.")(
    publish_cmd.publish
)
recipe_cmds.register(app)
app.add_typer(board_cmd.board_app)
app.add_typer(trace_cmd.trace_app)
app.command("serve", short_help="Serve a recipe's flock over HTTP (publish, read, events, health).")(
    serve_cmd.serve
)
app.add_typer(serve_cmd.token_app)
app.command("mcp", short_help="Serve a recipe's flock to an MCP client (desktop assistant, IDE) on stdio.")(
    mcp_cmd.mcp
)
app.command("top", short_help="Live dashboard of a run (agents, board, joins, stream, events).")(top_cmd.top)
