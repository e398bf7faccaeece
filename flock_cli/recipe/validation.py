"""Phase 3 (errors): Pydantic validation errors -> diagnostics in the recipe's own words."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from flock_cli.errors import did_you_mean
from flock_cli.recipe.diagnostics import Diagnostic, format_path
from flock_cli.recipe.model import ENGINE_KINDS, VISIBILITY_KINDS, RecipeDef
from flock_cli.recipe.source import Document

__all__ = ["diagnose"]

_QUOTED = re.compile(r"'([^']*)'")
_INSTANCE_OF = re.compile(r" or instance of \w+")


def diagnose(error: ValidationError, doc: Document) -> list[Diagnostic]:
    """One diagnostic per validation error, pointing at the key or value in ``doc``."""
    out: list[Diagnostic] = []
    for item in error.errors():
        loc: tuple[Any, ...] = tuple(item["loc"])
        kind = item["type"]
        on_key = loc[-1:] == ("[key]",)
        if on_key:
            loc = loc[:-1]
        data_path = _data_path(loc, doc)
        key_name = data_path[-1] if data_path else ""
        message, hint, point_at_key = str(item["msg"]), "", on_key
        ctx = item.get("ctx") or {}
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            message = f"unknown key '{key_name}'"
            hint = did_you_mean(str(key_name), allowed).strip() or _listing("valid keys", allowed)
            point_at_key = True
            data_path = data_path[:-1]
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
            point_at_key = True
        elif kind == "literal_error":
            expected = _QUOTED.findall(str(ctx.get("expected", "")))
            message = f"{item['input']!r} is not allowed for '{key_name}'"
            hint = did_you_mean(str(item["input"]), expected).strip() or _listing("expected", expected)
        elif kind == "union_tag_invalid":
            expected = _QUOTED.findall(str(ctx.get("expected_tags", "")))
            message = f"unknown kind {ctx.get('tag')!r}"
            hint = did_you_mean(str(ctx.get("tag")), expected).strip() or _listing("kinds", expected)
        elif kind == "union_tag_not_found":
            message = "missing 'kind'"
            owner = next((p for p in reversed(loc) if isinstance(p, str) and p in _KINDS), "")
            hint = _listing("kinds", list(_KINDS.get(owner, ())))
            point_at_key = True
        elif kind == "value_error" and "error" in ctx:
            message = str(ctx["error"])
        elif kind == "string_pattern_mismatch":
            message = _pattern_message(str(ctx.get("pattern", "")), item["input"], on_key)
        message = _INSTANCE_OF.sub("", message)  # "... or instance of ConsumeDef" names our classes
        if isinstance(item.get("input"), bool) and not hint:
            hint = "YAML reads yes, no, on, off, true and false as booleans: put the value in quotes"
        mark, _ = doc.locate(loc, key=point_at_key)
        out.append(Diagnostic(message, mark, format_path(data_path), hint=hint, code=f"schema:{kind}"))
    return out


def _pattern_message(pattern: str, value: Any, on_key: bool) -> str:
    if ":" in pattern:
        return f"{value!r} is not a Python reference; write 'package.module:Name'"
    what = "name" if on_key else "value"
    return f"{value!r} is not a valid {what} (it must match {pattern})"


def _listing(label: str, names: list[str]) -> str:
    return f"{label}: {', '.join(names)}" if names else ""


def _data_path(loc: tuple[Any, ...], doc: Document) -> tuple[str | int, ...]:
    """The parts of a Pydantic location that exist in the YAML (drops union tags and the like)."""
    path = doc.display_path(loc)
    return path[:-1] if path and path[-1] in _TAGS and path[-1] != loc[-1] else path


# the key a discriminated union sits under -> its kinds ("then" is an embargo's visibility)
_KINDS = {"engine": ENGINE_KINDS, "visibility": VISIBILITY_KINDS, "then": VISIBILITY_KINDS}
_TAGS = frozenset(ENGINE_KINDS + VISIBILITY_KINDS)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Key names the model accepts at ``loc`` (for 'did you mean')."""
    current: Any = RecipeDef
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _unwrap(current, None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _step(annotation: Any, part: Any) -> Any:
    if part in _TAGS:  # a discriminated union: the tag picks the member
        chosen = _unwrap(annotation, part)
        if _tag_of(chosen) == part:
            return chosen
    annotation = _unwrap(annotation, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict:
        return args[1]
    return None


def _unwrap(annotation: Any, tag: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            chosen = next((m for m in members if _tag_of(m) == tag), None)
            annotation = chosen or (members[0] if len(members) == 1 else annotation)
            if chosen is None and len(members) != 1:
                return annotation
        else:
            return annotation


def _tag_of(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "kind" in model.model_fields:
        args = typing.get_args(model.model_fields["kind"].annotation)
        return args[0] if args else None
    return None
