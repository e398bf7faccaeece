"""Phase 3 (errors): Pydantic validation errors -> diagnostics in the recipe's own words."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from flock_cli.errors import suggest
from flock_cli.recipe.diagnostics import Diagnostic, format_path
from flock_cli.recipe.model import ENGINE_KINDS, VISIBILITY_KINDS, RecipeDef
from flock_cli.recipe.model_paths import keys_at, keys_written_at, model_keys, node_at, step, text_path
from flock_cli.recipe.source import Document

__all__ = ["diagnose"]

_QUOTED = re.compile(r"'([^']*)'")
_INSTANCE_OF = re.compile(r" or instance of \w+")


def diagnose(error: ValidationError, doc: Document) -> list[Diagnostic]:
    """One diagnostic per validation error, pointing at the key or value in ``doc``."""
    out: list[Diagnostic] = []
    siblings = _Siblings(doc)
    for item in _without_the_string_branch(error.errors()):
        loc: tuple[Any, ...] = tuple(item["loc"])
        kind = item["type"]
        on_key = loc[-1:] == ("[key]",)
        if on_key:
            loc = loc[:-1]
        in_text = text_path(loc)  # the steps that are keys and items of the YAML
        data_path = doc.display_path(in_text)
        key_name = data_path[-1] if data_path else ""
        message, hint, point_at_key = str(item["msg"]), "", on_key
        ctx = item.get("ctx") or {}
        if kind == "extra_forbidden":
            allowed = keys_at(loc[:-1])
            message = f"unknown key '{key_name}'"
            hint = suggest(str(key_name), allowed, "valid keys")
            point_at_key = True
            data_path = data_path[:-1]
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
            point_at_key = True
        elif kind == "literal_error":
            expected = _QUOTED.findall(str(ctx.get("expected", "")))
            message = f"{item['input']!r} is not allowed for '{key_name}'"
            hint = suggest(str(item["input"]), expected, "expected")
            if not expected:  # numbers are not quoted in Pydantic's list: `version: 2` got no hint
                hint = f"expected {ctx.get('expected', '')}"
        elif kind == "union_tag_invalid":
            expected = _QUOTED.findall(str(ctx.get("expected_tags", "")))
            message = f"unknown kind {ctx.get('tag')!r}"
            hint = suggest(str(ctx.get("tag")), expected, "kinds")
        elif kind == "union_tag_not_found":
            message = "missing 'kind'"
            owner = next((p for p in reversed(loc) if isinstance(p, str) and p in _KINDS), "")
            hint = _listing("kinds", list(_KINDS.get(owner, ())))
            point_at_key = True
        elif kind == "value_error" and "error" in ctx:
            message = str(ctx["error"])
        elif kind == "string_pattern_mismatch":
            message = _pattern_message(str(ctx.get("pattern", "")), item["input"], on_key)
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            message = f"expected {_expected(data_path)}, got {_yaml_kind(item['input'])}"
        unknown = kind == "extra_forbidden"
        misplaced = _misplaced((*data_path, key_name) if unknown else data_path, siblings, unknown=unknown)
        if misplaced:  # an error on a declaration's whole value: point at the name, the misplaced key
            hint, point_at_key = misplaced, point_at_key or len(data_path) == 2
        message = _INSTANCE_OF.sub("", message)  # "... or instance of ConsumeDef" names our classes
        if isinstance(item.get("input"), bool) and not hint:
            hint = "YAML reads yes, no, on, off, true and false as booleans: put the value in quotes"
        mark, _ = doc.locate(in_text, key=point_at_key)
        out.append(Diagnostic(message, mark, format_path(data_path), hint=hint, code=f"schema:{kind}"))
    return out


def _expected(path: tuple[str | int, ...]) -> str:
    """What the value at ``path`` may be written as: several keys also take a short form, which
    "expected a mapping of keys" alone would hide (``engine: 7`` is not missing a mapping)."""
    named = [p for p in path if isinstance(p, str)]
    if len(named) == 4 and named[0] == "types" and named[2] == "fields":
        return "a field type (str, int, list[str], a type name, ...) or a mapping of keys"
    last, item = (named[-1] if named else ""), bool(path) and isinstance(path[-1], int)
    if len(named) == 3 and named[0] == "agents" and last in ("consumes", "publishes"):
        return "a type name or a mapping of keys" + ("" if item else ", or a list of them")
    if len(named) == 3 and named[0] == "agents" and last == "engine":
        return "an engine kind (test, dspy, ...) or a mapping of keys" + (
            "" if item else ", or a list of them"
        )
    return "a mapping of keys"


def _without_the_string_branch(items: list[Any]) -> list[Any]:
    """A value that may be a string or a mapping (``model:``) and is a mapping with a mistake
    fails both branches; "should be a valid string" is noise beside the mapping's own error."""
    mapping_errors = {tuple(i["loc"][:k]) for i in items for k in range(1, len(i["loc"]) - 1)}
    return [
        i
        for i in items
        if not (
            i["type"] == "string_type"
            and i["loc"][-1:] == ("str",)
            and isinstance(i.get("input"), dict)
            and tuple(i["loc"][:-1]) in mapping_errors
        )
    ]


def _pattern_message(pattern: str, value: Any, on_key: bool) -> str:
    if ":" in pattern:
        return f"{value!r} is not a Python reference; write 'package.module:Name'"
    what = "name" if on_key else "value"
    return f"{value!r} is not a valid {what} (it must match {pattern})"


def _listing(label: str, names: list[str]) -> str:
    return f"{label}: {', '.join(names)}" if names else ""


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "a list" if isinstance(value, list) else "a string" if isinstance(value, str) else "a value"


# the sections that map names to declarations: a key de-indented out of one becomes a name
_NAMED = {"agents": "agent", "types": "type"}


def _misplaced(path: tuple[Any, ...], siblings: _Siblings, *, unknown: bool) -> str:
    """A hint when the key at (or above) ``path`` was probably meant one level deeper: a key
    de-indented out of a declaration is read as a declaration's name, and one de-indented out
    of a mapping is unknown where it stands but a key of the mapping written just before it."""
    if len(path) >= 2 and path[0] in _NAMED and isinstance(path[1], str):
        section, name = path[0], path[1]
        noun = _NAMED[section]
        article = "an" if noun == "agent" else "a"
        if name in model_keys(step(step(RecipeDef, section), name)):
            before = siblings.before((section,), name)
            fix = f"did you mean to indent it under {noun} '{before[0]}'?" if before else ""
            return f"'{name}' is read as {article} {noun} name here; " + (
                fix or f"{article} {noun}'s keys go indented under its name"
            )
    if unknown and path and isinstance(path[-1], str):
        *parent, key = path
        for sibling in siblings.before(tuple(parent), key):
            if key in siblings.keys_of((*parent, sibling)):
                line = siblings.doc.keys[(*parent, sibling)].line
                return (
                    f"'{key}' is a key of '{sibling}' (line {line});"
                    f" did you mean to indent it under '{sibling}'?"
                )
    return ""


# a de-indented key sits just below the mapping it belongs to: the hint looks this far back
_NEAREST = 10


class _Siblings:
    """The keys of ``doc``'s mappings, each mapping listed once: a file of thousands of unknown
    keys made the hints quadratic (19 s for 2,000 keys, 100,000 never finished)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._mappings: dict[tuple[Any, ...], tuple[list[str], dict[str, int]]] = {}
        self._keys: dict[tuple[Any, ...], list[str]] = {}

    def before(self, parent: tuple[Any, ...], key: str) -> list[str]:
        """The ``_NEAREST`` keys written before ``key`` in the mapping at ``parent``, nearest first."""
        if parent not in self._mappings:
            node = node_at(self.doc, parent)
            keys = list(node) if isinstance(node, dict) else []
            self._mappings[parent] = keys, {k: i for i, k in enumerate(keys)}
        keys, index = self._mappings[parent]
        if key not in index:
            return []
        return keys[max(0, index[key] - _NEAREST) : index[key]][::-1]

    def keys_of(self, path: tuple[Any, ...]) -> list[str]:
        """The keys the recipe model accepts in the mapping at ``path``."""
        if path not in self._keys:
            self._keys[path] = keys_written_at(self.doc, path)
        return self._keys[path]


# the key a discriminated union sits under -> its kinds ("then" is an embargo's visibility)
_KINDS = {"engine": ENGINE_KINDS, "visibility": VISIBILITY_KINDS, "then": VISIBILITY_KINDS}
