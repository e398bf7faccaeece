"""The JSON Schema of the recipe format, generated from the recipe model.

``schemas/recipe.schema.json`` in the repository is this function's output (a test fails when
it is stale); editors use it through the ``# yaml-language-server: $schema=...`` header.

The models describe the expanded form of each key; the loader also accepts short forms
(``consumes: Review``, ``engine: test``, a field written as ``title: str``). The schema is
widened here to accept exactly those, so an editor never flags a recipe the loader takes.
"""

from __future__ import annotations

import json
from typing import Any

from flock_cli.recipe.model import ENGINE_KINDS, RecipeDef

__all__ = ["recipe_json_schema", "schema_text"]

_STRING = {"type": "string"}
_KINDS = {"enum": list(ENGINE_KINDS)}
_VISIBILITY_KINDS = {"enum": ["public"]}
# (model, key) -> the short form accepted for one item; "list" keys also take a single item
_SHORT_ITEMS: dict[tuple[str, str], dict[str, Any]] = {
    ("AgentDef", "consumes"): _STRING,
    ("AgentDef", "publishes"): _STRING,
    ("AgentDef", "engine"): _KINDS,
    ("AgentDef", "utilities"): _STRING,
    ("AgentDef", "labels"): _STRING,
    ("AgentDef", "tools"): _STRING,
    ("ConsumeDef", "types"): _STRING,
    ("ConsumeDef", "where"): _STRING,
    ("ConsumeDef", "from"): _STRING,
    ("ConsumeDef", "channels"): _STRING,
    ("RecipeDef", "include"): _STRING,
}
_SHORT_VALUES: dict[tuple[str, str], dict[str, Any]] = {
    ("PublishDef", "visibility"): _VISIBILITY_KINDS,
    ("AfterDef", "then"): _VISIBILITY_KINDS,
}
_KEEP = ("title", "description", "default")


def recipe_json_schema() -> dict[str, Any]:
    """The schema as a mapping (keys as written in YAML, e.g. ``from`` and ``with``)."""
    schema = RecipeDef.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    root = {k: v for k, v in schema.items() if k != "$defs"}
    models = {**defs, "RecipeDef": root}
    for (model, key), short in _SHORT_ITEMS.items():
        prop = models[model]["properties"][key]
        item = prop.get("items") or _nullable_list_items(prop)
        assert item is not None, (model, key)
        one = {"anyOf": [short, item]}
        models[model]["properties"][key] = {
            **_kept(prop),
            "anyOf": [*one["anyOf"], {"type": "array", "items": one}],
        }
    for (model, key), short in _SHORT_VALUES.items():
        prop = models[model]["properties"][key]
        models[model]["properties"][key] = {**_kept(prop), "anyOf": [short, _strip(prop)]}
    fields = defs["TypeDef"]["properties"]["fields"]
    for pattern, field in fields["patternProperties"].items():
        fields["patternProperties"][pattern] = {"anyOf": [_STRING, field]}
    for mapping in (fields, root["properties"]["types"], root["properties"]["agents"]):
        mapping["additionalProperties"] = False  # a name that breaks the pattern is an error
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": defs}


def schema_text() -> str:
    """The schema as the stable JSON text written to ``schemas/recipe.schema.json``."""
    return json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"


def _kept(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: prop[k] for k in _KEEP if k in prop}


def _strip(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k not in _KEEP}


def _nullable_list_items(prop: dict[str, Any]) -> dict[str, Any] | None:
    """The item schema of ``list[X] | None`` (``anyOf: [{type: array, items: X}, {type: null}]``)."""
    for option in prop.get("anyOf", []):
        if option.get("type") == "array":
            return dict(option["items"])
    return None
