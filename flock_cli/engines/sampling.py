"""Deterministic, schema-valid sample values from a JSON Schema (used by TestEngine)."""

from __future__ import annotations

import importlib
import random
import re
import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["SampleError", "sample"]

_WORDS = (
    "amber",
    "blue",
    "cedar",
    "delta",
    "ember",
    "flock",
    "grove",
    "harbor",
    "iris",
    "juniper",
    "kite",
    "lumen",
    "maple",
    "north",
    "orbit",
    "pine",
    "quartz",
    "river",
    "stone",
    "tide",
)


class SampleError(ValueError):
    """The schema asks for something the sampler cannot produce."""


def sample(schema: dict[str, Any], rng: random.Random, root: dict[str, Any] | None = None) -> Any:
    """A value that satisfies ``schema`` (the subset Pydantic emits), drawn from ``rng``."""
    root = root or schema
    if "$ref" in schema:
        return sample(_deref(schema["$ref"], root), rng, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    if "default" in schema and rng.random() < 0.25:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return sample(options[rng.randrange(len(options))], rng, root)
    if "allOf" in schema:
        return sample(schema["allOf"][0], rng, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    handler = _HANDLERS.get(kind or ("object" if "properties" in schema else "string"))
    if handler is None:
        raise SampleError(f"cannot sample schema type {kind!r}")
    return handler(schema, rng, root)


def _deref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _object(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties", {})
    out = {name: sample(sub, rng, root) for name, sub in props.items()}
    extra = schema.get("additionalProperties")
    if not props and isinstance(extra, dict):
        out = {_word(rng): sample(extra, rng, root) for _ in range(rng.randint(1, 2))}
    return out


def _array(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> list[Any]:
    low = schema.get("minItems", 1)
    high = max(low, min(schema.get("maxItems", low + 2), low + 2))
    items = schema.get("items", {})
    if "prefixItems" in schema:
        return [sample(s, rng, root) for s in schema["prefixItems"]]
    values = [sample(items, rng, root) for _ in range(rng.randint(low, high))]
    if schema.get("uniqueItems"):
        unique: list[Any] = []
        for v in values:
            if v not in unique:
                unique.append(v)
        values = unique
    return values


def _integer(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> int:
    low, high = _bounds(schema, integer=True)
    step = int(schema.get("multipleOf", 1))
    first = -(-int(low) // step) * step
    if first > high:
        raise SampleError(f"no multiple of {step} in [{low}, {high}]")
    return first + step * rng.randint(0, int((high - first) // step))


def _number(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> float:
    if "multipleOf" in schema:
        return _multiple(schema, rng)
    low, high = _bounds(schema, integer=False)
    return round(rng.uniform(low, high), 3) if high > low else low


def _multiple(schema: dict[str, Any], rng: random.Random) -> float:
    low, high = _bounds(schema, integer=False)
    step = float(schema["multipleOf"])
    k_low, k_high = int(-(-low // step)), int(high // step)
    if k_low > k_high:
        raise SampleError(f"no multiple of {step} in [{low}, {high}]")
    return rng.randint(k_low, k_high) * step


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    eps = 1.0 if integer else 1e-3
    low: float | None = schema.get("minimum")
    if low is None and "exclusiveMinimum" in schema:
        low = float(schema["exclusiveMinimum"]) + eps
    high: float | None = schema.get("maximum")
    if high is None and "exclusiveMaximum" in schema:
        high = float(schema["exclusiveMaximum"]) - eps
    if low is None:
        low = 0.0 if high is None else high - 100
    if high is None:
        high = low + 100
    if low > high:
        raise SampleError(f"empty range [{low}, {high}]")
    return low, high


def _boolean(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> bool:
    return rng.random() < 0.5


def _null(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> None:
    return None


def _string(schema: dict[str, Any], rng: random.Random, root: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))).isoformat()
    if fmt == "date":
        return (datetime(2025, 1, 1) + timedelta(days=rng.randrange(3650))).date().isoformat()
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if fmt == "email":
        return f"{_word(rng)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{_word(rng)}"
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if "pattern" in schema:
        text = _from_pattern(schema["pattern"], rng)
        if len(text) < low or (high is not None and len(text) > high):
            raise SampleError(f"pattern {schema['pattern']!r} sample does not fit the length limits")
        return text
    text = " ".join(_word(rng) for _ in range(rng.randint(2, 4)))
    if high is not None:
        text = text[:high]
    while len(text) < low:
        text += rng.choice(string.ascii_lowercase)
    return text


def _word(rng: random.Random) -> str:
    return _WORDS[rng.randrange(len(_WORDS))]


def _from_pattern(pattern: str, rng: random.Random) -> str:
    """A string matching ``pattern``, built by walking the parsed regular expression."""
    sre_parse = importlib.import_module("re._parser")  # the stdlib's own regex parser (3.11+)
    parsed = sre_parse.parse(pattern)
    text = _walk(parsed, rng, sre_parse)
    if not re.search(pattern, text):
        raise SampleError(f"cannot produce a string matching {pattern!r}")
    return text


def _walk(items: Any, rng: random.Random, sp: Any) -> str:
    out: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append(rng.choice(string.ascii_lowercase))
        elif name == "IN":
            out.append(_class_char(arg, rng))
        elif name == "BRANCH":
            branches = arg[1]
            out.append(_walk(branches[rng.randrange(len(branches))], rng, sp))
        elif name == "SUBPATTERN":
            out.append(_walk(arg[-1], rng, sp))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            high = min(high, low + 3) if high != sp.MAXREPEAT else low + 3
            out.extend(_walk(sub, rng, sp) for _ in range(rng.randint(low, max(low, high))))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise SampleError(f"unsupported regex construct {name}")
    return "".join(out)


def _class_char(items: Any, rng: random.Random) -> str:
    choices: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            choices.append(chr(arg))
        elif name == "RANGE":
            choices.extend(chr(c) for c in range(arg[0], min(arg[1], arg[0] + 25) + 1))
        elif name == "CATEGORY":
            cat = str(arg)
            choices.extend(
                string.digits
                if "DIGIT" in cat and "NOT" not in cat
                else string.ascii_letters + "_"
                if "WORD" in cat and "NOT" not in cat
                else " "
                if "SPACE" in cat and "NOT" not in cat
                else "a"
            )
        elif name == "NEGATE":
            raise SampleError("negated character classes are not supported")
    if not choices:
        raise SampleError("empty character class")
    return rng.choice(choices)


_HANDLERS = {
    "object": _object,
    "array": _array,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
    "string": _string,
}
