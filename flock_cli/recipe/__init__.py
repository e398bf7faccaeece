"""YAML recipes: declare types, agents, subscriptions and engines in files; load, check, compile.

``load_recipe(path)`` runs the loader's phases (see :mod:`flock_cli.recipe.loader`) and returns
a :class:`Recipe`; ``recipe.build()`` compiles it into a :class:`~flock_cli.Flock`.
"""

from flock_cli.recipe.diagnostics import Diagnostic, Mark, RecipeError
from flock_cli.recipe.loader import PHASES, Recipe, load_recipe

__all__ = ["PHASES", "Diagnostic", "Mark", "Recipe", "RecipeError", "load_recipe"]
