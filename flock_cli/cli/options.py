"""Command-line options several commands share, declared once (the same flag, the same help)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "BoardOpt",
    "EngineOpt",
    "EngineOverride",
    "ForceOpt",
    "ModelOpt",
    "NoTracesOpt",
    "RecipeArg",
    "ReplayFromOpt",
    "ReplayOpt",
    "TracesOpt",
]


class EngineOverride(StrEnum):
    """Values of ``--engine``."""

    test = "test"


RecipeArg = Annotated[
    Path, typer.Argument(metavar="RECIPE", help="The recipe file (YAML).", show_default=False)
]
BoardOpt = Annotated[
    str | None,
    typer.Option(
        "--board",
        metavar="PATH|URL",
        help="Board file or postgresql:// URL (default: $FLOCK_BOARD, settings.board or"
        " .flock/<recipe name>.db).",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", metavar="MODEL", help="Model for dspy engines (overrides the recipe)."),
]
EngineOpt = Annotated[
    EngineOverride | None,
    typer.Option("--engine", metavar="test", help="test: run dspy agents on the offline test engine."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Resume a board left by another workflow.")]
TracesOpt = Annotated[
    Path | None,
    typer.Option(
        "--traces", metavar="PATH", help="Trace store (default: $FLOCK_TRACES or .flock/traces.duckdb)."
    ),
]
NoTracesOpt = Annotated[bool, typer.Option("--no-traces", help="Write no traces.")]
ReplayOpt = Annotated[
    str | None,
    typer.Option(
        "--replay",
        metavar="RUN",
        help="Give dspy agents the model answers recorded in RUN of the trace store; no model is called.",
    ),
]
ReplayFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--replay-from",
        metavar="FILE",
        help="Give dspy agents the answers in a recording file (flock trace export --format recording).",
    ),
]
