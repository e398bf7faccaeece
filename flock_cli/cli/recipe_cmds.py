"""``flock validate``, ``flock check``, ``flock graph``, ``flock schema`` and ``flock init``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flock_cli.cli.common import (
    EXIT_FAILED,
    console,
    emit_json,
    err_console,
    fail,
    load_or_report,
    print_diagnostics,
    recipe_type,
    reports_errors,
)

if TYPE_CHECKING:
    from flock_cli.recipe.loader import Recipe

__all__ = ["register"]

RecipeArg = Annotated[
    Path, typer.Argument(metavar="RECIPE", help="The recipe file (YAML).", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class GraphFormat(StrEnum):
    """Output formats of ``flock graph``."""

    tree = "tree"
    mermaid = "mermaid"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("validate", short_help="Check a recipe for errors (exit 2 when it has any).")(validate)
    app.command("check", short_help="Static analysis of a recipe (exit 1 on warnings).")(check)
    app.command("graph", short_help="Show the subscription graph as a tree, Mermaid or JSON.")(graph)
    app.command("schema", short_help="Print the JSON Schema of recipes or of an artifact type.")(schema)
    app.command("init", short_help="Create a starter recipe that runs as is.")(init)


@reports_errors
def validate(recipe: RecipeArg, as_json: JsonOpt = False) -> None:
    """Load a recipe through every phase and report its errors (exit 2) or a short summary."""
    loaded = load_or_report(recipe, as_json)
    definition = loaded.definition
    info = {
        "valid": True,
        "recipe": loaded.name,
        "files": loaded.files,
        "types": sorted(definition.types),
        "agents": sorted(definition.agents),
        "warnings": sum(1 for d in loaded.findings if d.severity == "warning"),
    }
    if as_json:
        emit_json(info)
        return
    console().print(
        f"[green]valid[/] {recipe}: {len(definition.types)} types, {len(definition.agents)} agents"
        f" ({len(loaded.files)} file{'s' if len(loaded.files) != 1 else ''})"
    )
    if info["warnings"]:
        console().print(f"{info['warnings']} warning(s): see flock check {recipe}")


@reports_errors
def check(
    recipe: RecipeArg,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings, not notes.")] = False,
    connect: Annotated[
        bool,
        typer.Option("--connect", help="Start the recipe's MCP servers and check the tools its agents name."),
    ] = False,
) -> None:
    """Static analysis: unreachable subscriptions, unbounded cycles, impossible visibility, engines
    that do not produce the declared types, unused outputs. Exit 1 when there are warnings.
    With --connect, also start the MCP servers: a server that does not start or a tool it does
    not offer is an error (exit 2)."""
    loaded = load_or_report(recipe, as_json)
    if connect and loaded.definition.mcp_servers:
        _check_connections(loaded, as_json)
    findings = [d for d in loaded.findings if not (quiet and d.severity == "info")]
    warnings = [d for d in findings if d.severity == "warning"]
    if as_json:
        emit_json({"valid": True, "findings": [d.to_json() for d in findings]})
    else:
        print_diagnostics(findings)
        verdict = f"[yellow]{len(warnings)} warning(s)[/]" if warnings else "[green]no warnings[/]"
        console().print(f"{recipe}: {verdict}")
    if warnings:
        raise typer.Exit(EXIT_FAILED)


@reports_errors
def graph(
    recipe: RecipeArg,
    fmt: Annotated[
        GraphFormat,
        typer.Option("--format", "-f", metavar="tree|mermaid|json", help="tree, mermaid or json."),
    ] = GraphFormat.tree,
    as_json: JsonOpt = False,
) -> None:
    """Show the subscription graph (type -> agent -> type) as a tree, Mermaid or JSON."""
    loaded = load_or_report(recipe, as_json)
    if as_json or fmt is GraphFormat.json:
        emit_json(loaded.graph.to_json())
    elif fmt is GraphFormat.mermaid:
        typer.echo(loaded.graph.mermaid())
    else:
        typer.echo(loaded.graph.tree())


@reports_errors
def schema(
    type_name: Annotated[
        str | None,
        typer.Argument(
            metavar="[TYPE]", help="An artifact type of --recipe (default: the recipe format itself)."
        ),
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", metavar="FILE", help="Recipe declaring the type.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write to this file.")
    ] = None,
) -> None:
    """Print the JSON Schema of the recipe format, or of one artifact type of a recipe."""
    import json

    if type_name is None:
        from flock_cli.recipe.schema import schema_text

        if recipe is not None:
            fail("--recipe needs a TYPE: flock schema TYPE --recipe FILE (without both: the recipe format)")

        text = schema_text()
    else:
        if recipe is None:
            fail("a type's schema needs --recipe RECIPE (the file that declares the type)")
        loaded = load_or_report(recipe, False)
        model = recipe_type(loaded, type_name)
        text = json.dumps(model.model_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text)
        err_console().print(f"wrote {output}")


_TEMPLATE = """\
# yaml-language-server: $schema={schema}
# A Flock-Flow recipe: declare types and agents; agents subscribe to types.
# Every key is in the recipe reference (docs/recipes.md of Flock-Flow). Check it: flock check {name}
name: {stem}
description: An idea becomes a draft; a reviewer scores the draft.

types:
  Idea:
    fields:
      topic: {{type: str, min_length: 3, description: What to write about}}
  Draft:
    fields:
      title: {{type: str, max_length: 120}}
      body: str
  Review:
    fields:
      score: {{type: int, ge: 1, le: 10}}
      comment: str

agents:
  writer:
    description: Write a short draft about the idea.
    consumes: Idea
    publishes: Draft
    engine: test          # offline and deterministic; use dspy for a real model
  reviewer:
    description: Score the draft from 1 to 10.
    consumes: Draft
    publishes: Review
    engine: {{kind: test, seed: 1}}
"""


@reports_errors
def init(
    path: Annotated[Path, typer.Argument(metavar="[PATH]", help="Recipe file to create.")] = Path(
        "recipe.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Create a starter recipe (and its JSON Schema for editor completion) that runs as is."""
    from flock_cli.recipe.schema import schema_text

    if path.exists() and not force:
        fail(f"{path} already exists (use --force to overwrite it)")
    schema_file = path.parent / "schemas" / "recipe.schema.json"  # where editors find it (see header)
    _write(schema_file, schema_text())
    _write(
        path,
        _TEMPLATE.format(schema="schemas/recipe.schema.json", name=path, stem=path.stem),
    )
    console().print(f"created {path} (and {schema_file})")
    console().print(f'next: echo \'{{"topic": "blackboards"}}\' | flock run {path} --input Idea=-')


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def _check_connections(loaded: Recipe, as_json: bool) -> None:
    """Start the servers (``flock check --connect``); raise RecipeError with what is wrong."""
    import asyncio

    from flock_cli.recipe.connect import check_connections
    from flock_cli.recipe.diagnostics import RecipeError

    problems, offered = asyncio.run(check_connections(loaded))
    if problems:
        raise RecipeError(problems)
    if not as_json:
        for name, tools in offered.items():
            console().print(f"MCP server {name}: {len(tools)} tool(s): {', '.join(tools) or 'none'}")
