"""``flock publish TYPE PAYLOAD``: validate a payload and append it to the durable board."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flock_cli.cli.common import (
    EXIT_INTERRUPTED,
    board_path,
    console,
    emit_json,
    err_console,
    fail,
    load,
    open_board,
    parse_uuid,
    recipe_type,
    reports_errors,
)
from flock_cli.cli.inputs import validated_payloads
from flock_cli.cli.options import BoardOpt

if TYPE_CHECKING:
    from flock_cli.core.visibility import Visibility

__all__ = ["parse_visibility", "publish"]

DEFAULT_RECIPE = "recipe.yaml"


@reports_errors
def publish(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="The artifact type.", show_default=False)],
    payload: Annotated[
        str, typer.Argument(metavar="PAYLOAD", help="JSON/YAML file (one object or a list), or - for stdin.")
    ],
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "-r",
            metavar="FILE",
            help="Recipe declaring TYPE (default: $FLOCK_RECIPE or ./recipe.yaml).",
        ),
    ] = None,
    board: BoardOpt = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", metavar="UUID", help="Correlation id (a UUID).")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", metavar="TAG", help="A tag (repeatable).")
    ] = None,
    visibility: Annotated[
        str | None,
        typer.Option(
            "--visibility",
            metavar="RULE",
            help="public, private:AGENT[,AGENT], labelled:LABEL[,LABEL], tenant:ID or after:DURATION.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored artifacts as JSON.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", help="Publish through a running `flock serve` at URL instead."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="The service token (default: $FLOCK_TOKEN)."),
    ] = None,
) -> None:
    """Validate PAYLOAD against TYPE and write it to the durable board; a `flock run --watch` on
    that board picks it up. Nothing is written unless every payload is valid, and a list is written
    all at once (Ctrl-C leaves all or none of it). With --url, publish
    through a running `flock serve` (which validates each payload; with a recipe, all are
    validated here first)."""
    import asyncio

    from flock_cli.core.orchestrator import Flock
    from flock_cli.recipe.compiler import register_types
    from flock_cli.store.locate import is_database_url

    recipe_path = recipe or Path(os.environ.get("FLOCK_RECIPE") or DEFAULT_RECIPE)
    if url is not None:
        if board is not None:
            fail("give --url (a running service) or --board, not both")
        _publish_remote(url, token, type_name, payload, recipe_path if recipe_path.exists() else None,
                        correlation_id, tags, visibility, as_json)  # fmt: skip
        return
    if token is not None:
        fail("--token goes with --url (a running flock serve)")
    if recipe is None and not recipe_path.exists():
        fail(
            f"publish needs the recipe that declares {type_name}: pass --recipe FILE (no {recipe_path} here)"
        )
    loaded = load(recipe_path)
    model_cls = recipe_type(loaded, type_name)
    correlation = parse_uuid(correlation_id, "--correlation-id") if correlation_id is not None else None
    vis = parse_visibility(visibility, agents=list(loaded.definition.agents)) if visibility else None
    models = validated_payloads(model_cls, type_name, payload, label=f"publish {type_name}")
    chosen = board_path(board, loaded)
    if chosen.target == ":memory:":
        fail("publish writes to a durable board; ':memory:' would lose the artifact")
    flock = Flock(store=open_board(chosen, must_exist=False), role="publisher")
    register_types(flock, loaded)

    before: list[int] = []  # artifacts of the type on the board before: an interrupted write is recounted

    async def write() -> list[Any]:
        before.append(await _count(flock.store, type_name))
        try:
            async with flock.traced_run(f"publish {type_name}", items=len(models)):  # one command, one run
                # One write for all of them: a Ctrl-C or a kill leaves all or none on the board,
                # never a part that publishing the file again would duplicate.
                return await flock.publish_many(
                    models, visibility=vis, correlation_id=correlation, tags=tags or None
                )
        finally:
            # Each step even if the one before failed: a failed sync must still stop the flock
            # (its trace is written then) and close the board.
            try:
                await flock.store.sync()
            finally:
                try:
                    await flock.shutdown()  # writes the trace before the command returns
                finally:
                    await flock.store.close()

    try:
        stored = asyncio.run(write())
    except KeyboardInterrupt:
        # The write may have committed as the board closed: the board says which it was.
        if not before or asyncio.run(_recount(chosen, type_name)) - before[0] < len(models):
            fail(f"interrupted: none of the {len(models)} payloads was published", EXIT_INTERRUPTED)
        err_console().print(f"interrupted once all {len(models)} payloads were published", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json([a.model_dump(mode="json") for a in stored])
        return
    where = chosen.shown() if is_database_url(chosen.target) else Path(chosen.target).resolve()
    for a in stored:
        console().print(f"published {a.type} {a.id} (correlation {a.correlation_id}) to {where}")


async def _count(store: Any, type_name: str) -> int:
    """How many artifacts of ``type_name`` the board holds."""
    from flock_cli.store import UNRESTRICTED
    from flock_cli.store.contract import ArtifactQuery

    page = await store.query(ArtifactQuery(types=frozenset({type_name}), limit=1), viewer=UNRESTRICTED)
    total: int = page.total
    return total


async def _recount(board: Any, type_name: str) -> int:
    store = open_board(board, must_exist=True)
    try:
        return await _count(store, type_name)
    finally:
        await store.close()


def _publish_remote(
    url: str,
    token: str | None,
    type_name: str,
    source: str,
    recipe_path: Path | None,
    correlation_id: str | None,
    tags: list[str] | None,
    visibility: str | None,
    as_json: bool,
) -> None:
    """``flock publish --url``: each payload is one request (validated here first when a recipe
    declares the type)."""
    from flock_cli.cli.inputs import read_payloads
    from flock_cli.cli.remote import ServiceClient
    from flock_cli.limits import check_values, format_value_path

    if correlation_id is not None:
        parse_uuid(correlation_id, "--correlation-id")
    if recipe_path is not None:
        loaded = load(recipe_path)
        if type_name in loaded.resolved.types:
            validated_payloads(
                recipe_type(loaded, type_name), type_name, source, label=f"publish {type_name}"
            )
    payloads = read_payloads(source, label=f"publish {type_name}")
    for payload in payloads:  # what JSON cannot carry (NaN, infinity) is refused before any request
        problem = check_values(payload, string_keys=True)
        if problem is not None:
            where = f"{format_value_path(problem.path)}: " if problem.path else ""
            fail(f"Invalid payload for type {type_name!r}: {where}{problem.message}")
    client = ServiceClient(url, token)
    stored = []
    try:
        for payload in payloads:
            body: dict[str, Any] = {"payload": payload, "tags": tags or []}
            if correlation_id is not None:
                body["correlation_id"] = correlation_id
            if visibility is not None:
                body["visibility"] = visibility
            stored.append(client.publish(type_name, body))
    finally:
        client.close()
    if as_json:
        emit_json(stored)
        return
    for a in stored:
        console().print(
            f"published {a['type']} {a['id']} (correlation {a['correlation_id']}) to {client.shown}"
        )


def parse_visibility(text: str, *, agents: list[str]) -> Visibility:
    """``--visibility`` text as a rule (see :mod:`flock_cli.recipe.visibility_text`)."""
    from flock_cli.recipe.visibility_text import parse_visibility as parse

    return parse(text, agents=agents)
