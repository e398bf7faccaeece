# Expected messages are quoted whole; they may be longer than the line limit.
# ruff: noqa: E501
"""Defects a hostile-user hunt found in the recipe loader, each pinned by a test.

YAML merge keys, contradictory or dead constraints, booleans taken as numbers, tabs and bytes
that are not UTF-8: each test goes through ``load_recipe`` or the ``flock`` command, as a user
meets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app
from flock_cli.recipe import RecipeError, load_recipe
from tests.test_recipe_errors import write

runner = CliRunner()


def errors(path: Path) -> list[tuple[int, str, str, str]]:
    """The (line, path, code, message) of each diagnostic loading ``path`` raises."""
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    return [(d.mark.line if d.mark else 0, d.path, d.code, d.message) for d in excinfo.value.diagnostics]


def flock(*args: str | Path) -> Any:
    """Run ``flock ARGS`` in process; the result has ``exit_code`` and ``output``."""
    return runner.invoke(app, [str(a) for a in args])


# -- YAML merge keys ---------------------------------------------------------------------------


def test_merge_keys_copy_an_anchored_mapping_and_own_keys_win(tmp_path: Path) -> None:
    """``<<: *defaults`` is standard YAML (PyYAML's safe loader reads it); it was refused with
    two errors ("could not determine a constructor for the tag ...merge" and "keys must be
    plain strings, got '<<'")."""
    path = write(
        tmp_path,
        """
        types:
          Idea:
            fields: &base
              topic: str
              n: {type: int, default: 1}
          Draft:
            fields:
              <<: *base
              title: str
              n: {type: int, default: 2}
        agents:
          writer: &agent
            consumes: Idea
            publishes: Draft
            engine: test
          copy:
            <<: *agent
            description: the same agent, described
        """,
    )
    recipe = load_recipe(path)
    draft = recipe.resolved.types["Draft"]
    assert set(draft.model_fields) == {"topic", "n", "title"}
    assert draft.model_fields["n"].default == 2  # the mapping's own key wins over the merged one
    assert set(recipe.definition.agents) == {"writer", "copy"}
    assert recipe.definition.agents["copy"].description == "the same agent, described"


def test_a_merge_key_of_a_scalar_is_one_error_at_its_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        types:
          Idea:
            fields:
              <<: 5
              topic: str
        """,
    )
    assert errors(path) == [
        (5, "types.Idea.fields", "yaml-value", "a merge key (<<) takes a mapping or a list of mappings")
    ]


def test_mappings_merging_copies_of_each_other_do_not_hang(tmp_path: Path) -> None:
    """Thirty levels each merging ten copies of the level below: 10**30 pairs, unless merged
    pairs are kept once per key."""
    lines = ["types:", "  T0:", "    fields: &m0", *(f"      f{i}: str" for i in range(10))]
    for level in range(1, 30):
        copies = ", ".join([f"*m{level - 1}"] * 10)
        lines += [f"  T{level}:", f"    fields: &m{level}", f"      <<: [{copies}]"]
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = load_recipe(path)  # before the pairs were kept once per key, this never returned
    assert len(recipe.resolved.types["T29"].model_fields) == 10


# -- types: constraints that no value can meet -------------------------------------------------


def test_strict_bounds_that_meet_leave_no_value(tmp_path: Path) -> None:
    """gt: 5 with lt: 5 (or ge with lt, gt with le) was accepted; only ge/le may be equal."""
    path = write(
        tmp_path,
        """
        types:
          T:
            fields:
              a: {type: int, gt: 5, lt: 5}
              b: {type: float, ge: 1.5, lt: 1.5}
              c: {type: int, gt: 0, le: 0}
              ok: {type: int, ge: 3, le: 3}
        """,
    )
    assert [(line, where) for line, where, _, _ in errors(path)] == [
        (5, "types.T.fields.a.gt"),
        (6, "types.T.fields.b.ge"),
        (7, "types.T.fields.c.gt"),
    ]


def test_enum_values_listed_twice_or_refused_by_the_other_constraints(tmp_path: Path) -> None:
    """A repeated enum value, or one the field's bounds, length or pattern refuse, was accepted
    silently: the second is a value the type advertises (in its JSON Schema) and never takes."""
    path = write(
        tmp_path,
        """
        types:
          T:
            fields:
              a: {type: str, enum: [x, y, x]}
              b: {type: int, gt: 0, enum: [0, 1]}
              c: {type: str, pattern: "^a", enum: [ab, ba]}
        """,
    )
    assert errors(path) == [
        (5, "types.T.fields.a.enum[2]", "constraint", "enum value 'x' is listed twice"),
        (6, "types.T.fields.b.enum[0]", "constraint", "enum value 0 can never be valid: Input should be greater than 0"),
        (7, "types.T.fields.c.enum[1]", "constraint", "enum value 'ba' can never be valid: String should match pattern '^a'"),
    ]  # fmt: skip


# -- payloads: a boolean is not a number -------------------------------------------------------

NUMBERS = """
types:
  Reading:
    fields:
      count: {type: int, ge: 0}
      level: {type: float, optional: true}
      grade: {type: int, enum: [1, 2], default: 1}
"""


@pytest.mark.parametrize(
    "payload", ['{"count": true}', '{"count": 1, "level": false}', '{"count": 1, "grade": true}']
)
def test_publish_refuses_a_boolean_for_a_number_field(tmp_path: Path, payload: str) -> None:
    """Pydantic's lax mode stored ``true`` in an int field as 1 (and Literal[1, 2] took it too)."""
    recipe = write(tmp_path, NUMBERS)
    (tmp_path / "p.json").write_text(payload, encoding="utf-8")
    result = flock("publish", "Reading", tmp_path / "p.json", "-r", recipe, "--board", tmp_path / "b.db")
    assert result.exit_code == 2, result.output
    assert "Invalid payload for type 'Reading'" in result.output
    assert "is a boolean, not a number" in result.output
    assert (
        not (tmp_path / "b.db").exists()
        or "Reading" not in flock("board", "list", "--board", tmp_path / "b.db").output
    )


def test_a_boolean_default_of_an_int_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "types:\n  T:\n    fields:\n      n: {type: int, default: true}\n")
    assert errors(path) == [
        (4, "types.T.fields.n.default", "constraint", "default True is not valid: true is a boolean, not a number")
    ]  # fmt: skip


def test_numbers_still_validate(tmp_path: Path) -> None:
    model = load_recipe(write(tmp_path, NUMBERS)).resolved.types["Reading"]
    assert model.model_validate({"count": 3, "level": 2, "grade": 2}).model_dump() == {
        "count": 3,
        "level": 2.0,
        "grade": 2,
    }


# -- reading: tabs and bytes that are not UTF-8 ------------------------------------------------


def test_a_tab_in_the_indentation_is_named_in_the_hint(tmp_path: Path) -> None:
    """PyYAML says "found character that cannot start any token", and the excerpt shows the tab
    as blanks: nothing told the user the problem was a tab."""
    path = tmp_path / "recipe.yaml"
    path.write_text("types:\n  Idea:\n    fields:\n\ttopic: str\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    (diagnostic,) = excinfo.value.diagnostics
    assert (diagnostic.mark and diagnostic.mark.line, diagnostic.code) == (4, "yaml-syntax")
    assert "tab" in diagnostic.hint


def test_a_byte_that_is_not_utf8_is_placed_at_its_line_and_column(tmp_path: Path) -> None:
    """The error gave only a byte offset ("byte 78"), with no line or column to go to."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b'types:\n  Idea:\n    description: "caf\xe9"\n    fields: {a: str}\n')
    result = flock("validate", path)
    assert result.exit_code == 2
    assert f"{path}:3:22: error: not UTF-8 text: byte 0xe9" in result.output
    assert '    description: "caf\ufffd"' in result.output  # the line, shown
    assert "Traceback" not in result.output


def test_an_empty_include_is_named_as_such(tmp_path: Path) -> None:
    """``include: ""`` read the including file's folder: "included file . is a directory"."""
    path = write(tmp_path, 'include: ""\ntypes:\n  T: {fields: {a: str}}\n')
    assert errors(path) == [(1, "", "read", "an include names no file (an empty path)")]


def test_a_long_flat_or_chain_is_told_how_it_counts(tmp_path: Path) -> None:
    """Sixty `or`ed comparisons are refused as "nested too deeply" though the text is flat: the
    hint says why (Jinja nests each `or`) and what to write instead."""
    where = " or ".join(f"a == '{i}'" for i in range(60))
    path = write(
        tmp_path,
        f'types:\n  A: {{fields: {{a: str}}}}\nagents:\n  x: {{consumes: {{types: A, where: "{where}"}}, publishes: A, engine: test}}\n',
    )
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    (diagnostic,) = excinfo.value.diagnostics
    assert "nested too deeply" in diagnostic.message
    assert "each and/or of a chain counts as a level" in diagnostic.hint
    assert "field in [...]" in diagnostic.hint


def test_a_value_of_the_wrong_kind_names_the_short_forms_too(tmp_path: Path) -> None:
    """``engine: 7`` said "expected a mapping of keys", though ``engine: test`` is the usual
    form; the same for a field, ``consumes`` and ``publishes``."""
    path = write(
        tmp_path,
        """
        types:
          A:
            fields:
              a: 5
        agents:
          x:
            consumes: 5
            publishes: [A, 7]
            engine: 7
        """,
    )
    assert [message for _, _, _, message in errors(path)] == [
        "expected a field type (str, int, list[str], a type name, ...) or a mapping of keys, got a number",
        "expected a type name or a mapping of keys, or a list of them, got a number",
        "expected a type name or a mapping of keys, got a number",
        "expected an engine kind (test, dspy, ...) or a mapping of keys, or a list of them, got a number",
    ]


def test_a_version_that_does_not_exist_says_which_does(tmp_path: Path) -> None:
    """Pydantic lists allowed numbers unquoted, so the hint came out empty for ``version: 2``."""
    path = write(tmp_path, "version: 2\ntypes:\n  A: {fields: {a: str}}\n")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    (diagnostic,) = excinfo.value.diagnostics
    assert (diagnostic.message, diagnostic.hint) == ("2 is not allowed for 'version'", "expected 1")


def test_a_key_indented_too_little_is_still_placed_under_its_mapping(tmp_path: Path) -> None:
    """The hint kept for the common case: the mapping the key belongs to is just above it."""
    path = write(
        tmp_path,
        "types:\n  A: {fields: {a: str}}\nagents:\n  w:\n    consumes:\n      types: A\n    where: \"a == 'x'\"\n",
    )
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert [d.hint for d in excinfo.value.diagnostics] == [
        "'where' is a key of 'consumes' (line 5); did you mean to indent it under 'consumes'?"
    ]


def test_a_link_to_a_missing_file_says_where_it_points(tmp_path: Path) -> None:
    """A dangling symlink was "not found", with the closest other file name as the hint."""
    write(tmp_path, "types:\n  A: {fields: {a: str}}\n", name="recipes.yaml")
    (tmp_path / "recipe.yaml").symlink_to(tmp_path / "gone.yaml")
    result = flock("validate", tmp_path / "recipe.yaml")
    assert result.exit_code == 2
    assert "recipe file not found" in result.output
    assert f"hint: it is a symbolic link to {tmp_path / 'gone.yaml'}, which does not exist" in result.output


def test_infinity_and_nan_are_refused_in_constraints_enums_and_defaults(tmp_path: Path) -> None:
    """``le: .nan`` refused every value, ``ge: .inf`` every finite one, and a non-finite
    default or enum value made ``flock schema`` print ``Infinity`` and ``NaN``: not JSON."""
    path = write(
        tmp_path,
        """
        types:
          T:
            fields:
              a: {type: float, le: .nan}
              b: {type: float, ge: .inf}
              c: {type: float, enum: [.inf, 1.5]}
              d: {type: float, default: .inf}
              e: {type: any, default: {nested: [1, .nan]}}
        """,
    )
    found = errors(path)
    assert [(line, where) for line, where, _, _ in found] == [
        (5, "types.T.fields.a.le"),
        (6, "types.T.fields.b.ge"),
        (7, "types.T.fields.c.enum[0]"),
        (8, "types.T.fields.d.default"),
        (9, "types.T.fields.e.default.nested[1]"),
    ]
    assert found[0][3] == "'le' must be a finite number"
    assert "NaN and infinity are not allowed" in found[4][3]


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("types:\n  A:\n    fields:\n      a: str\n        b: int\n", "a key indented under a plain value"),
        (
            "types:\n  A:\n    fields:\n      a: str\n     b: int\n",
            "this line is indented to no key above it",
        ),
        ("description: Note: this\n", "or ': ' inside a value"),
    ],
)
def test_an_indentation_slip_gets_a_hint_in_plain_words(tmp_path: Path, text: str, hint: str) -> None:
    """PyYAML's "mapping values are not allowed in this context" and "did not find expected
    key" came with no hint."""
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.code == "yaml-syntax"
    assert hint in diagnostic.hint
