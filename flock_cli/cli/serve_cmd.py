"""``flock serve RECIPE``: the recipe's flock as an HTTP service; ``flock token new``: make a token."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flock_cli.cli.common import (
    board_path,
    build_on_board,
    err_console,
    fail,
    load_or_report,
    reports_errors,
    show_board_notes,
)
from flock_cli.cli.options import BoardOpt, EngineOpt, ForceOpt, ModelOpt, NoTracesOpt, RecipeArg, TracesOpt
from flock_cli.early_signals import EarlySignals

if TYPE_CHECKING:
    from flock_cli.recipe.loader import Recipe
    from flock_cli.service.config import ServiceConfig
    from flock_cli.service.tokens import TokenBook

__all__ = ["serve", "token_app"]


@reports_errors
def serve(
    recipe: RecipeArg,
    board: BoardOpt = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="ADDR", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port (default 8344).")
    ] = None,
    no_orchestrator: Annotated[
        bool,
        typer.Option(
            "--no-orchestrator", help="Serve the API only; agents run in other processes of the board."
        ),
    ] = False,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens",
            metavar="FILE",
            help="Token file (default: settings.serve.tokens, settings.serve.tokens_env or $FLOCK_TOKENS;"
            " without one, a session token is printed and only loopback is served).",
        ),
    ] = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    force: ForceOpt = False,
    traces: TracesOpt = None,
    no_traces: NoTracesOpt = False,
    max_body_bytes: Annotated[
        int | None,
        typer.Option("--max-body-bytes", metavar="N", min=1024, help="Largest request body (1 MiB)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", metavar="N", min=0.001, help="Requests per second per token, on average (50)."
        ),
    ] = None,
    burst: Annotated[
        int | None, typer.Option("--burst", metavar="N", min=1, help="Requests per token at once (100).")
    ] = None,
    max_pending: Annotated[
        int | None,
        typer.Option(
            "--max-pending", metavar="N", min=1, help="Open deliveries above which publishes get 429 (10000)."
        ),
    ] = None,
) -> None:
    """Serve RECIPE's flock over HTTP: publish, read, follow events (/v1, OpenAPI at
    /openapi.json), health probes (/health/live, /health/ready) and /metrics. Runs the agents in
    this process unless --no-orchestrator. SIGTERM or Ctrl-C stops gracefully."""
    from flock_cli.service import require

    service_cls = require()  # names the [serve] extra before anything else happens
    loaded = load_or_report(recipe, False)
    if traces is not None and no_traces:
        fail("give --traces PATH or --no-traces, not both")
    config = _config(
        loaded, host, port, max_body_bytes, rate, burst, max_pending, orchestrate=not no_orchestrator
    )
    book = _tokens(loaded, tokens)
    override = engine.value if engine else None
    if not no_orchestrator:
        if not loaded.definition.agents:
            fail(f"{recipe} declares no agents: serve it with --no-orchestrator, or add agents")
        if model is not None and override != "test":
            from flock_cli.engines.local import check_local_model

            check_local_model(model)
        loaded.check_compilable(override, model, None)
    chosen = board_path(board, loaded)
    if no_orchestrator and chosen.target == ":memory:":
        fail("--no-orchestrator over ':memory:' would serve a board no agent ever works; use a durable board")
    # From the moment the board is opened, Ctrl-C and SIGTERM stop the service the way they do
    # once it listens (with its summary), rather than ending the process with nothing said.
    with EarlySignals() as early:
        flock = build_on_board(
            loaded,
            chosen,
            model=model,
            engine=override,
            replay=None,
            traces=traces,
            no_traces=no_traces,
            role="publisher" if no_orchestrator else "orchestrator",
        )
        service = service_cls(flock, config, tokens=book, force=force)
        show_board_notes(quiet=False)
        where = f"http://{_url_host(config.host)}:{config.port}"
        console = err_console()
        console.print(f"flock serve: {loaded.name} on {where} (board {chosen.shown()})", highlight=False)
        if book is None:
            console.print(f"session token (this process only): {service.session_token}", highlight=False)
        else:
            console.print(f"tokens: {len(book)} from {book.source}", highlight=False)
        summary = service.run(early_signals=early)
    if summary is not None:
        console.print(
            f"flock serve stopped: {summary.agent_runs} runs, {len(summary.failures)} failed,"
            f" {len(summary.dead_letters)} dead letters",
            highlight=False,
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _config(
    loaded: Recipe,
    host: str | None,
    port: int | None,
    max_body_bytes: int | None,
    rate: float | None,
    burst: int | None,
    max_pending: int | None,
    *,
    orchestrate: bool,
) -> ServiceConfig:
    from flock_cli.service.config import DEFAULT_PORT, ServiceConfig

    settings = loaded.definition.settings.serve
    limits = settings.rate_limit
    defaults = ServiceConfig()
    return ServiceConfig(
        host=host or settings.host or defaults.host,
        port=port if port is not None else (settings.port if settings.port is not None else DEFAULT_PORT),
        orchestrate=orchestrate,
        max_body_bytes=max_body_bytes or settings.max_body_bytes or defaults.max_body_bytes,
        requests_per_second=rate or (limits.requests_per_second if limits else defaults.requests_per_second),
        burst=burst or (limits.burst if limits else defaults.burst),
        max_pending=max_pending or settings.max_pending or defaults.max_pending,
        max_streams_per_token=settings.max_streams_per_token or defaults.max_streams_per_token,
        shutdown_timeout_s=float(settings.shutdown_timeout or defaults.shutdown_timeout_s),
    )


def _tokens(loaded: Recipe, option: Path | None) -> TokenBook | None:
    from flock_cli.service.tokens import tokens_from

    settings = loaded.definition.settings.serve
    file = option
    if file is None and settings.tokens:
        file = loaded.path.parent / settings.tokens  # relative to the recipe, like recordings
    return tokens_from(file, None if file is not None else settings.tokens_env)


token_app = typer.Typer(
    name="token",
    help="Tokens of flock serve: `flock token new NAME --file tokens.yaml` adds one.",
    no_args_is_help=True,
)


@token_app.command("new")
@reports_errors
def new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Who the token is for (its identity).")],
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", metavar="FILE", help="The token file to add it to (created if missing)."
        ),
    ] = Path("tokens.yaml"),
    tenant: Annotated[
        str | None, typer.Option("--tenant", metavar="ID", help="The identity's tenant.")
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="LABEL", help="A label of the identity (repeatable)."),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish", metavar="TYPE", help="A type it may publish (repeatable; * for every type)."
        ),
    ] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="May list agents and runs and re-deliver dead letters.")
    ] = False,
) -> None:
    """Make a token, add its hash to FILE and print the token (it is shown only this once)."""
    import yaml

    from flock_cli.private_files import create_private_file
    from flock_cli.service.tokens import TokenBook, entry_text, new_token

    token = new_token()
    entry = entry_text(
        name, token, tenant=tenant, labels=labels or [], publish=publish or [], operator=operator
    )
    TokenBook.parse(yaml.safe_dump({"tokens": [entry]}), f"token {name!r}", positions=False)  # a valid entry
    if file.is_dir():
        fail(f"--file {file} is a directory; give the token file's path (tokens.yaml)")
    if not file.parent.is_dir():
        fail(f"--file {file}: no folder {file.parent} to put it in")
    existed = file.exists()
    try:
        text = file.read_text(encoding="utf-8") if existed else ""
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the token file {file}: {exc}")
    book = TokenBook.parse(text, str(file)) if text.strip() else None  # a broken file: file:line, exit 2
    if book is not None and any(p.name == name for p in book.principals):
        fail(f"{file} has a token named {name!r} already; choose another name")
    data = yaml.safe_load(text) if text.strip() else {"tokens": []}
    data["tokens"].append(entry)
    new_text = (
        "# flock serve tokens: only hashes are kept here (flock token new adds one)\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    try:
        if not existed:
            create_private_file(file)  # owner-only: it says who may do what
        file.write_text(new_text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the token file {file}: {exc.strerror or exc}")
    err_console().print(f"added token {name!r} to {file}; the token (shown only now):", highlight=False)
    typer.echo(token)
