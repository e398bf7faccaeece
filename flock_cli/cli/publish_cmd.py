"""``flock publish TYPE PAYLOAD``: validate a payload and append it to the durable board."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flock_cli.cli.common import (
    board_path,
    console,
    emit_json,
    fail,
    load,
    open_board,
    parse_uuid,
    recipe_type,
    reports_errors,
)
from flock_cli.cli.inputs import validated_payloads

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
    board: Annotated[
        str | None,
        typer.Option(
            "--board",
            metavar="PATH|URL",
            help="Board file or postgresql:// URL (default: $FLOCK_BOARD, settings.board or"
            " .flock/<recipe name>.db).",
        ),
    ] = None,
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
) -> None:
    """Validate PAYLOAD against TYPE and write it to the durable board; a `flock run --watch` on
    that board picks it up. Nothing is written unless every payload is valid."""
    import asyncio

    from flock_cli.core.orchestrator import Flock
    from flock_cli.recipe.compiler import register_types
    from flock_cli.store.locate import is_database_url

    recipe_path = recipe or Path(os.environ.get("FLOCK_RECIPE") or DEFAULT_RECIPE)
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

    async def write() -> list[Any]:
        try:
            async with flock.traced_run(f"publish {type_name}", items=len(models)):  # one command, one run
                return [
                    await flock.publish(m, visibility=vis, correlation_id=correlation, tags=tags or None)
                    for m in models
                ]
        finally:
            await flock.store.sync()
            await flock.shutdown()  # writes the trace before the command returns
            await flock.store.close()

    stored = asyncio.run(write())
    if as_json:
        emit_json([a.model_dump(mode="json") for a in stored])
        return
    where = chosen.shown() if is_database_url(chosen.target) else Path(chosen.target).resolve()
    for a in stored:
        console().print(f"published {a.type} {a.id} (correlation {a.correlation_id}) to {where}")


def parse_visibility(text: str, *, agents: list[str]) -> Visibility:
    """``public``, ``private:a,b``, ``labelled:x,y``, ``tenant:acme`` or ``after:5m``; the agents
    of ``private`` must be among ``agents``."""
    from datetime import timedelta

    from flock_cli.core.visibility import (
        AfterVisibility,
        LabelledVisibility,
        PrivateVisibility,
        PublicVisibility,
        TenantVisibility,
    )
    from flock_cli.errors import UsageError, did_you_mean
    from flock_cli.recipe.model import MAX_SECONDS, parse_duration

    kind, _, arg = text.partition(":")
    names = [n.strip() for n in arg.split(",") if n.strip()]
    kinds = ("public", "private", "labelled", "tenant", "after")
    if kind == "public" and not arg:
        return PublicVisibility()
    if kind in ("private", "labelled", "tenant", "after") and not names:
        raise UsageError(f"--visibility {kind} needs a value: {kind}:...")
    if kind == "private":
        for name in names:
            if name not in agents:
                raise UsageError(
                    f"--visibility private: the recipe has no agent '{name}'.{did_you_mean(name, agents)}"
                )
        return PrivateVisibility(agents=frozenset(names))
    if kind == "labelled":
        return LabelledVisibility(required_labels=frozenset(names))
    if kind == "tenant":
        return TenantVisibility(tenant_id=arg.strip())
    if kind == "after":
        try:
            seconds = float(parse_duration(arg.strip()))
        except ValueError as exc:
            raise UsageError(f"--visibility after: {exc}") from None
        if not 0 < seconds <= MAX_SECONDS:
            raise UsageError(
                f"--visibility after: the embargo must last more than 0 s and at most {MAX_SECONDS} s"
            )
        return AfterVisibility(ttl=timedelta(seconds=seconds))
    raise UsageError(f"unknown visibility {text!r}; use {', '.join(kinds)}.{did_you_mean(kind, kinds)}")
