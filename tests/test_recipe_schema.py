"""schemas/recipe.schema.json is current, and it agrees with the loader on real recipes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from flock_cli.recipe.schema import schema_text

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / "recipe.schema.json"


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "stale schema: run `flock schema -o schemas/recipe.schema.json`"
    )


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_recipe_matches_the_schema(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize(
    "text",
    [
        "agents: {a: {consumes: {types: X, wher: 1}}}",  # unknown key
        "agents: {a: {engine: tst}}",  # unknown engine kind
        "agents: {'bad name': {}}",  # agent name outside the pattern
        "types: {T: {fields: {x: {type: str, min_lenght: 1}}}}",
        "settings: {max_concurrency: 0}",
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(
    validator: jsonschema.Draft202012Validator, text: str, tmp_path: Path
) -> None:
    from flock_cli.recipe import RecipeError, load_recipe

    assert list(validator.iter_errors(yaml.safe_load(text)))
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError):
        load_recipe(tmp_path / "r.yaml")
