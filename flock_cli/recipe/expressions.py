"""``where`` and ``join.by`` expressions: a small, sandboxed language over an artifact's payload.

Expressions are Jinja2 expressions (``score >= 8 and 'urgent' in tags``) evaluated in Jinja's
immutable sandbox with no globals at all: they cannot import, call functions other than safe
methods of the values themselves (``title.startswith('A')``), reach dunder or private
attributes, or mutate anything. There are no loops in the language, and the operators that can
build huge values (``*`` on sequences, ``**``) are bounded, so an expression always finishes
quickly. Names refer to the payload's fields; ``payload`` is the whole payload as a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

__all__ = ["ExpressionError", "compile_expression"]

# Filters that only transform values; everything else Jinja ships (and every global) is removed.
_SAFE_FILTERS = frozenset(
    {
        "abs", "capitalize", "count", "default", "first", "float", "int", "join", "last", "length",
        "list", "lower", "max", "min", "replace", "reverse", "round", "sort", "string", "sum",
        "title", "trim", "truncate", "unique", "upper", "wordcount",
    }
)  # fmt: skip
_MAX_SIZE = 100_000  # the largest string or list an operator may build
_MAX_EXPONENT = 128
_MAX_BITS = 100_000  # the largest integer ** may build


@dataclass(eq=False)
class ExpressionError(Exception):
    """An expression that does not compile or names something that does not exist."""

    message: str
    column: int = 0  # 1-based column inside the expression, 0 when unknown
    hint: str = ""
    token: str = ""  # the offending name, as written

    def __str__(self) -> str:
        return self.message


# Methods an expression may call on payload values; they read, and their results are no
# larger than the value itself. Anything else (str.center, str.format, int.to_bytes, ...) is
# refused: several of them can build gigabytes from a short expression.
_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        {
            "startswith", "endswith", "lower", "upper", "strip", "lstrip", "rstrip", "title",
            "capitalize", "casefold", "count", "find", "rfind", "isalpha", "isdigit", "isalnum",
            "isspace", "islower", "isupper", "isnumeric", "split", "rsplit", "splitlines",
        }
    ),
    dict: frozenset({"get", "keys", "values", "items"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}  # fmt: skip
_CALLABLE_NAMES = frozenset().union(*_METHODS.values())
# Names the expression language reads as literals or keywords: a field cannot be called that.
RESERVED_NAMES = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "self"}
)


def _too_big() -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(f"the result would exceed {_MAX_SIZE} items")


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None:
        hits = min(hits, max(count, 0))
    if len(text) + hits * (len(new) - len(old)) > _MAX_SIZE:
        raise _too_big()
    return text.replace(old, new, -1 if count is None else count)


def _join(value: Any, d: str = "") -> str:
    items = [str(v) for v in value]
    if sum(map(len, items)) + len(d) * len(items) > _MAX_SIZE:
        raise _too_big()
    return str(d).join(items)


def _sum(value: Any, start: Any = 0) -> Any:
    from jinja2.exceptions import SecurityError

    items = list(value)
    numbers = [start, *items]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise SecurityError("sum adds numbers only")
    return sum(items, start)


@cache
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})

        def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
            owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
            if name not in _METHODS.get(type(owner), ()):
                raise SecurityError(f"calling {name or type(obj).__name__} is not allowed in an expression")
            return super().call(context, obj, *args, **kwargs)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "%" and isinstance(left, str | bytes):
                raise SecurityError("string formatting with % is not allowed; build strings with ~")
            if operator == "**" and isinstance(right, int | float):
                if abs(right) > _MAX_EXPONENT:
                    raise SecurityError(f"exponent {right} is larger than {_MAX_EXPONENT}")
                if (
                    isinstance(left, int)
                    and isinstance(right, int)
                    and abs(left).bit_length() * right > _MAX_BITS
                ):
                    raise SecurityError(f"the result would exceed {_MAX_BITS} bits")
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    sized = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                    if sized and len(seq) * times > _MAX_SIZE:
                        raise _too_big()
            return super().call_binop(context, operator, left, right)

    env = Sandbox(undefined=StrictUndefined, autoescape=False)
    env.globals.clear()
    env.filters = {k: v for k, v in env.filters.items() if k in _SAFE_FILTERS}
    env.filters.update(replace=_replace, join=_join, sum=_sum)  # size-checked versions
    return env


def compile_expression(
    source: str, names: Iterable[str], *, purpose: str = "where"
) -> Callable[[BaseModel], Any]:
    """Compile ``source`` into a function of a payload model; check the names it uses.

    ``names`` are the fields every consumed type has. Raises :class:`ExpressionError` for
    syntax errors and unknown names (with a suggestion).
    """
    from jinja2 import TemplateSyntaxError, meta

    env = _environment()
    if not source.strip():
        raise ExpressionError(f"the {purpose} expression is empty")
    try:
        compiled = env.compile_expression(source, undefined_to_none=False)
        tree = env.parse("{{ " + source + " }}")
    except TemplateSyntaxError as exc:
        c_style = _c_operator(source)  # && || ! from other languages: name the word to use
        if c_style is not None:
            column, token, word = c_style
            raise ExpressionError(
                f"invalid {purpose} expression: '{token}' is not an operator",
                column=column,
                token=token,
                hint=f"use '{word}' (expressions use Python/Jinja operators: and, or, not)",
            ) from None
        message, hint = _explain(exc.message or "")
        raise ExpressionError(f"invalid {purpose} expression: {message}", hint=hint) from None
    except RecursionError:
        raise ExpressionError(f"the {purpose} expression is nested too deeply") from None
    _reject_private_attributes(tree, source, purpose)
    _reject_calls(tree, source, purpose)
    known = {*names, "payload"}
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in known:
            from flock_cli.errors import did_you_mean

            fields = ", ".join(sorted(known - {"payload"})) or "none"
            raise ExpressionError(
                f"the {purpose} expression uses '{name}', which is not a field of the payload",
                column=_column_of(source, name),
                token=name,
                hint=f"{did_you_mean(name, known).strip() or 'the fields are: ' + fields}",
            )

    def evaluate(model: BaseModel) -> Any:
        payload = model.model_dump()
        return compiled({**payload, "payload": payload})  # one mapping: any field name is safe

    evaluate.__name__ = f"{purpose}({source})"
    evaluate.__qualname__ = evaluate.__name__
    return evaluate


def _explain(message: str) -> tuple[str, str]:
    """Jinja's parser messages, in the words of an expression language; with a hint."""
    message = message.rstrip(".")
    if message == "unexpected 'end of template'":
        return "it ends too early", "finish the comparison, e.g. score > 3"
    if message.startswith("No filter named"):
        return message, f"filters: {', '.join(sorted(_SAFE_FILTERS))}"
    if "chunk after expression" in message or "end of print statement" in message:
        return "unexpected text after the expression", "compare with == (not =), combine with and / or"
    return message, ""


_C_OPERATORS = {"&&": "and", "||": "or", "!": "not"}


def _c_operator(source: str) -> tuple[int, str, str] | None:
    """The first ``&&``, ``||`` or ``!`` (not ``!=``) outside string literals: its 1-based column,
    the operator and the word that replaces it."""
    import re

    # a string literal is one match, so an operator inside one is never reported
    tokens = re.finditer(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|&&|\|\||!(?!=)", source)
    match = next((m for m in tokens if m.group() in _C_OPERATORS), None)
    return None if match is None else (match.start() + 1, match.group(), _C_OPERATORS[match.group()])


def _reject_private_attributes(tree: Any, source: str, purpose: str) -> None:
    from jinja2 import nodes

    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(attr, str) and attr.startswith("_"):
            raise ExpressionError(
                f"the {purpose} expression reads '{attr}'; private and dunder attributes are not allowed",
                column=_column_of(source, attr),
                token=attr,
            )


def _reject_calls(tree: Any, source: str, purpose: str) -> None:
    from jinja2 import nodes

    for node in tree.find_all(nodes.Call):
        name = node.node.attr if isinstance(node.node, nodes.Getattr) else getattr(node.node, "name", "")
        if name not in _CALLABLE_NAMES:
            raise ExpressionError(
                f"the {purpose} expression calls '{name or 'something'}', which expressions cannot call",
                column=_column_of(source, name) if name else 0,
                token=name,
                hint="methods allowed: " + ", ".join(sorted(_CALLABLE_NAMES)),
            )


def _column_of(source: str, name: str) -> int:
    import re

    # blank out string literals so a name is never found inside one
    masked = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", lambda m: " " * len(m.group()), source)
    match = (
        re.search(rf"(?<![\w.]){re.escape(name)}\b", masked)
        or re.search(re.escape(name), masked)
        or re.search(re.escape(name), source)  # a key written as a string: payload['_x']
    )
    return match.start() + 1 if match else 0
