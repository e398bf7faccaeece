"""Phase 5 (types): turn the recipe's declared types into Pydantic models.

Field types are written as ``str``, ``int``, ``float``, ``bool``, ``date``, ``datetime``,
``any``, the name of a declared or imported type, ``list[T]`` or ``dict[T]`` (string keys).
Types may use each other in any order; a type that contains itself is refused.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError

from flock_cli.core.registry import flock_type
from flock_cli.errors import did_you_mean
from flock_cli.limits import MAX_TYPE_DEPTH, check_values
from flock_cli.recipe.diagnostics import Problem
from flock_cli.recipe.model import FieldDef, TypeDef

__all__ = ["build_types"]

_SCALARS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "date": dt.date,
    "datetime": dt.datetime,
    "any": Any,
}
_GENERIC = re.compile(r"^\s*(list|dict)\s*\[\s*(.+?)\s*\]\s*$")
_NUMERIC = ("ge", "gt", "le", "lt", "multiple_of")
_LENGTH = ("min_length", "max_length")


def build_types(
    declared: Mapping[str, TypeDef], imported: Mapping[str, type[BaseModel]], problems: list[Problem]
) -> dict[str, type[BaseModel]]:
    """Build a model per declared type, in dependency order.

    A field that cannot be built is reported in ``problems`` and typed ``Any``, so the type
    still exists and the rest of the recipe is checked against it.
    """
    built: dict[str, type[BaseModel]] = {}
    heights: dict[str, int] = {}  # levels of types, lists and dicts inside each built type, itself included
    visiting: list[str] = []

    def build(name: str, path: tuple[str | int, ...]) -> tuple[type[BaseModel], int]:
        if name in built:
            return built[name], heights[name]
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise Problem(
                ("types", name), f"type '{name}' contains itself ({cycle})", code="type-cycle", key=True
            )
        if len(visiting) >= MAX_TYPE_DEPTH:  # building recurses: a long chain would exhaust the stack
            chain = [*visiting, name]
            raise _too_deep(path, " -> ".join(chain if len(chain) <= 6 else [*chain[:3], "...", *chain[-2:]]))
        visiting.append(name)
        spec = declared[name]
        fields: dict[str, Any] = {}
        height = 1
        for field_name, field in spec.fields.items():
            path = ("types", name, "fields", field_name)
            try:
                _check_field_name(field_name, path)
            except Problem as problem:
                problems.append(problem)
                continue  # the model cannot even hold a field of that name
            try:
                annotation, levels = _annotation(field.type, path, declared, imported, build)
                if 1 + levels > MAX_TYPE_DEPTH:
                    raise _too_deep((*path, "type"), f"'{field.type}' nests {levels} levels, in '{name}'")
                fields[field_name] = _field(annotation, field, path)
                height = max(height, 1 + levels)
            except Problem as problem:
                problems.append(problem)
                fields[field_name] = (Any, None)
        visiting.pop()
        heights[name] = height
        model = create_model(
            name,
            __doc__=spec.description or None,
            __module__=__name__,
            # a misspelt payload key is an error, not lost; NaN and infinity are not JSON
            __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
            **fields,
        )
        built[name] = flock_type(name=name)(model)
        return built[name], height

    for name in declared:
        if name in imported:
            problems.append(
                Problem(
                    ("types", name),
                    f"type '{name}' is declared here and also imported",
                    hint="rename one of them",
                    code="duplicate-type",
                    key=True,
                )
            )
            continue
        try:
            build(name, ("types", name))
        except Problem as problem:  # a cycle: nothing can be built for this type
            problems.append(problem)
    return built


def _check_field_name(name: str, path: tuple[str | int, ...]) -> None:
    """Names that would shadow Pydantic's own attributes, or ``payload`` (which expressions use
    for the whole payload), cannot be field names."""
    from flock_cli.recipe.expressions import RESERVED_NAMES

    if name in RESERVED_NAMES:
        raise Problem(
            path,
            f"'{name}' cannot be a field name: expressions read it as a keyword or literal",
            hint="rename the field",
            code="reserved-name",
            key=True,
        )
    if name == "payload" or name.startswith(("_", "model_")) or hasattr(BaseModel, name):
        raise Problem(
            path,
            f"'{name}' cannot be a field name: it is reserved"
            + (" for the whole payload in expressions" if name == "payload" else " by Pydantic models"),
            hint="rename the field",
            code="reserved-name",
            key=True,
        )


def _annotation(
    text: str,
    path: tuple[str | int, ...],
    declared: Mapping[str, TypeDef],
    imported: Mapping[str, type[BaseModel]],
    build: Any,
) -> tuple[Any, int]:
    """The annotation for a field type, and how many levels (lists, dicts and declared types,
    counted down to the deepest) it nests."""
    wrappers: list[str] = []
    match = _GENERIC.match(text)
    while match:  # a loop, not recursion: list[list[...]] a thousand deep is only refused
        wrappers.append(match.group(1))
        if len(wrappers) >= MAX_TYPE_DEPTH:
            raise Problem(
                (*path, "type"),
                f"the field type nests list[...] and dict[...] more than {MAX_TYPE_DEPTH} levels deep"
                " (the limit)",
                code="type-depth",
            )
        text = match.group(2)
        match = _GENERIC.match(text)
    inner, levels = _named(text.strip(), path, declared, imported, build)
    for kind in reversed(wrappers):
        inner = list[inner] if kind == "list" else dict[str, inner]  # type: ignore[valid-type]
    return inner, levels + len(wrappers)


def _named(
    name: str,
    path: tuple[str | int, ...],
    declared: Mapping[str, TypeDef],
    imported: Mapping[str, type[BaseModel]],
    build: Any,
) -> tuple[Any, int]:
    if name in _SCALARS:
        return _SCALARS[name], 0
    if name in imported:
        return imported[name], 1
    if name in declared:
        model, height = build(name, (*path, "type"))
        return model, height
    known = [*_SCALARS, *declared, *imported]
    raise Problem(
        (*path, "type"),
        f"unknown field type '{name}'",
        hint=did_you_mean(name, known).strip()
        or "use str, int, float, bool, date, datetime, any, list[T], dict[T] or a declared type",
        code="unknown-type",
    )


def _too_deep(path: tuple[str | int, ...], how: str) -> Problem:
    return Problem(
        path,
        f"types nest more than {MAX_TYPE_DEPTH} levels deep here ({how}; {MAX_TYPE_DEPTH} is the limit)",
        hint="lists, dicts and declared types inside each other each count as a level",
        code="type-depth",
    )


def _field(annotation: Any, field: FieldDef, path: tuple[str | int, ...]) -> tuple[Any, Any]:
    kwargs: dict[str, Any] = {}
    scalar = annotation  # the field type before optional, enum and the bool guard wrap it
    origin = getattr(annotation, "__origin__", None)
    for key in _NUMERIC:
        value = getattr(field, key)
        if value is not None:
            if annotation not in (int, float):
                raise Problem(
                    (*path, key),
                    f"'{key}' applies to int and float fields, not {field.type}",
                    code="constraint",
                )
            if not math.isfinite(value):  # le: .nan refuses every value; JSON Schema has no Infinity
                raise Problem((*path, key), f"'{key}' must be a finite number", code="constraint")
            if annotation is int and key != "multiple_of" and not float(value).is_integer():
                raise Problem(
                    (*path, key), f"'{key}' of an int field must be a whole number", code="constraint"
                )
            kwargs[key] = int(value) if annotation is int and float(value).is_integer() else value
    for key in _LENGTH:
        value = getattr(field, key)
        if value is not None:
            if annotation is not str and origin not in (list, dict):
                raise Problem(
                    (*path, key),
                    f"'{key}' applies to str, list and dict fields, not {field.type}",
                    code="constraint",
                )
            kwargs[key] = value
    if field.pattern is not None:
        if annotation is not str:
            raise Problem(
                (*path, "pattern"), f"'pattern' applies to str fields, not {field.type}", code="constraint"
            )
        try:
            re.compile(field.pattern)
        except re.error as exc:
            raise Problem(
                (*path, "pattern"), f"invalid regular expression: {exc}", code="constraint"
            ) from None
        kwargs["pattern"] = field.pattern
    if field.enum is not None:
        if annotation not in (str, int, float):
            raise Problem(
                (*path, "enum"),
                f"'enum' applies to str, int and float fields, not {field.type}",
                code="constraint",
            )
        allowed = (int, float) if annotation is float else (annotation,)  # 1 is a valid float
        for i, value in enumerate(field.enum):
            if not isinstance(value, allowed) or isinstance(value, bool):
                raise Problem(
                    (*path, "enum", i), f"enum value {value!r} is not of type {field.type}", code="constraint"
                )
            if isinstance(value, float) and not math.isfinite(value):  # no payload may hold it
                raise Problem(
                    (*path, "enum", i), f"enum value {value!r} is not a finite number", code="constraint"
                )
        seen: list[Any] = []
        for i, value in enumerate(field.enum):
            if value in seen:  # 1 and 1.0 too: both would accept the same payloads
                raise Problem((*path, "enum", i), f"enum value {value!r} is listed twice", code="constraint")
            seen.append(value)
    if field.optional:
        annotation = annotation | None
    if field.description:
        kwargs["description"] = field.description
    for low, high in (("ge", "le"), ("gt", "lt"), ("ge", "lt"), ("gt", "le"), ("min_length", "max_length")):
        if kwargs.get(low) is None or kwargs.get(high) is None:
            continue
        # ge: 5, le: 5 leaves 5; gt: 5, lt: 5 (or ge: 5, lt: 5) leaves nothing
        inclusive = low in ("ge", "min_length") and high in ("le", "max_length")
        if kwargs[low] > kwargs[high] or (not inclusive and kwargs[low] == kwargs[high]):
            raise Problem(
                (*path, low),
                f"no value can meet {low}: {kwargs[low]} and {high}: {kwargs[high]}",
                code="constraint",
            )
    if field.enum is not None:
        adapter = _adapter(annotation, kwargs, field, path)
        for i, value in enumerate(field.enum):  # a value the other constraints refuse is dead
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                first = exc.errors()[0]["msg"]
                raise Problem(
                    (*path, "enum", i), f"enum value {value!r} can never be valid: {first}", code="constraint"
                ) from None
        annotation = Literal[tuple(field.enum)] | None if field.optional else Literal[tuple(field.enum)]
    if scalar in (int, float):  # Pydantic reads true as 1 and false as 0: a boolean is not a number
        annotation = Annotated[annotation, BeforeValidator(_refuse_bool)]
    adapter = _adapter(annotation, kwargs, field, path)
    has_default = "default" in field.model_fields_set
    if has_default:
        stored = check_values(field.default)  # .inf and .nan: as a payload's, a default is JSON
        if stored is not None:
            message = f"default {field.default!r} is not valid: {stored.message}"
            raise Problem((*path, "default", *stored.path), message, code="constraint")
        try:  # the default must satisfy the field's own constraints too
            adapter.validate_python(field.default)
        except ValidationError as exc:
            first = exc.errors()[0]["msg"]
            raise Problem(
                (*path, "default"), f"default {field.default!r} is not valid: {first}", code="constraint"
            ) from None
        kwargs["default"] = field.default
    elif field.optional:
        kwargs["default"] = None
    return annotation, Field(**kwargs)


def _adapter(annotation: Any, kwargs: dict[str, Any], field: FieldDef, path: tuple[str | int, ...]) -> Any:
    """A validator for the field as declared so far; Pydantic refusing to build one is a problem
    at the field's pattern (its regexes are stricter than Python's: no look-arounds) or type."""
    try:
        return TypeAdapter(Annotated[annotation, Field(**kwargs)])
    except Exception as exc:
        key = "pattern" if field.pattern is not None else "type"
        reason = " ".join(line.strip() for line in str(exc).splitlines()[:3] if line.strip())
        raise Problem((*path, key), f"this field cannot be built: {reason}", code="constraint") from None


def _refuse_bool(value: Any) -> Any:
    """Let an int or float field refuse ``true``/``false``, which Pydantic would take as 1/0."""
    if isinstance(value, bool):  # a custom error: Pydantic would prefix a ValueError "Value error, "
        raise PydanticCustomError(
            "bool_not_number", "{value} is a boolean, not a number", {"value": str(value).lower()}
        )
    return value
