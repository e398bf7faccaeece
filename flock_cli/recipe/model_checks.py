"""One model, one description: a recipe may describe a model as a mapping (its server, key
variable and rate limit) in several places, but not differently, since its agents share one
rate limiter (which of two limits would hold?). Checked when a recipe is loaded, so `flock
validate` and `flock check` say what `flock run` would refuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from flock_cli.recipe.diagnostics import Problem
from flock_cli.recipe.model_defs import ModelDef

if TYPE_CHECKING:
    from flock_cli.recipe.model import RecipeDef

__all__ = ["conflict", "model_conflicts"]


def conflict(path: tuple[str | int, ...], model: ModelDef) -> Problem:
    """The problem of ``model``, at ``path``, describing again a model described before."""
    return Problem(
        (*path, "name"),
        f"model '{model.name}' is described twice with different settings",
        hint="describe it once (at the top of the recipe) and name it by its string elsewhere",
        code="model-conflict",
    )


def model_conflicts(recipe: RecipeDef) -> list[Problem]:
    """Every model mapping that differs from an earlier one of the same model (name and
    ``api_base``)."""
    seen: dict[tuple[str, str | None], ModelDef] = {}
    problems = []
    for path, model in _model_mappings(recipe):
        first = seen.setdefault((model.name.strip(), model.api_base), model)
        if first != model:
            problems.append(conflict(path, model))
    return problems


def _model_mappings(recipe: RecipeDef) -> Iterator[tuple[tuple[str | int, ...], ModelDef]]:
    if isinstance(recipe.model, ModelDef):
        yield ("model",), recipe.model
    for name, agent in recipe.agents.items():
        for i, engine in enumerate(agent.engine):
            model = getattr(engine, "model", None)
            if isinstance(model, ModelDef):
                yield ("agents", name, "engine", i, "model"), model
