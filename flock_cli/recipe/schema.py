"""The JSON Schema of the recipe format, generated from the recipe model.

``schemas/recipe.schema.json`` in the repository is this function's output (a test fails when
it is stale); editors use it through the ``# yaml-language-server: $schema=...`` header.
"""

from __future__ import annotations

import json
from typing import Any

from flock_cli.recipe.model import RecipeDef

__all__ = ["recipe_json_schema", "schema_text"]


def recipe_json_schema() -> dict[str, Any]:
    """The schema as a mapping (keys as written in YAML, e.g. ``from`` and ``with``)."""
    schema = RecipeDef.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """The schema as the stable JSON text written to ``schemas/recipe.schema.json``."""
    return json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"
