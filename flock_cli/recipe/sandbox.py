"""The sandbox ``where`` and ``join.by`` expressions run in, and the bound on what they build.

Jinja2's immutable sandbox already keeps expressions from reaching private attributes or
mutating values. On top of it, this module keeps an expression from building huge values:

- calls: only the read-only methods in ``METHODS`` (``title.startswith('A')``);
- filters: only ``SAFE_FILTERS``;
- every operation that builds a value charges what it builds to a budget of
  ``EXPRESSION_VALUE_LIMIT`` per evaluation: new text by its characters, new lists by their
  items (a list refers to its items, so ``[big] * 3`` costs 3), numbers by their digits.
  Operations whose result can be far larger than their operands (``*``, ``+``, ``**``, and
  everything that turns values into text: ``~``, ``string``, ``join``, ``lower``, ... charged
  the full text of what they convert) are charged before they run, so a bomb like
  ``(['a' * 100000] * 100000) | string`` never allocates; copies (slices, ``sort``, ``split``)
  are checked against what is left before and charged after. Going over the budget raises
  ``SecurityError``, which the runtime counts as "no match" and records as a predicate error.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date
from functools import cache
from typing import Any

from flock_cli.limits import EXPRESSION_VALUE_LIMIT, MAX_EXPONENT, MAX_INT_BITS

__all__ = ["CONCAT_FILTER", "METHODS", "SAFE_FILTERS", "budget", "environment", "weight"]

# Filters that only transform values; everything else Jinja ships (and every global) is removed.
SAFE_FILTERS = frozenset(
    {
        "abs", "capitalize", "count", "default", "first", "float", "int", "join", "last", "length",
        "list", "lower", "max", "min", "replace", "reverse", "round", "sort", "string", "sum",
        "title", "trim", "truncate", "unique", "upper", "wordcount",
    }
)  # fmt: skip
# Filters that turn their input into text first: charged the input's size before they run.
_TEXT_FILTERS = frozenset(
    {"capitalize", "lower", "string", "title", "trim", "truncate", "upper", "wordcount"}
)
# Filters that copy their input: charged the result's size after they run.
_COPY_FILTERS = frozenset({"list", "reverse", "sort", "unique"})
# `a ~ b` is compiled as this filter on the list [a, b] (see expressions.py): a name no
# expression can write, so only the compiler reaches it.
CONCAT_FILTER = "~concat"

# Methods an expression may call on payload values; they read, and their results are no
# larger than the value itself. Anything else (str.center, str.format, int.to_bytes, ...) is
# refused: several of them can build gigabytes from a short expression.
METHODS: dict[type, frozenset[str]] = {
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
_COPY_METHODS = frozenset(
    {"lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize", "casefold", "split", "rsplit",
     "splitlines"}
)  # fmt: skip

_spent: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("expression_budget", default=None)


@contextmanager
def budget() -> Iterator[None]:
    """One evaluation's budget: what the expression builds inside counts against one limit."""
    token = _spent.set([0])
    try:
        yield
    finally:
        _spent.reset(token)


def _too_big() -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(
        f"the expression would build more than {EXPRESSION_VALUE_LIMIT:,} characters or items (the limit)"
    )


def _charge(amount: int) -> None:
    spent = _spent.get()
    if spent is None:  # evaluated outside budget(): this operation alone is measured
        spent = [0]
    spent[0] += amount
    if spent[0] > EXPRESSION_VALUE_LIMIT:
        raise _too_big()


def _fits(amount: int) -> None:
    """Refuse an operation whose input is already larger than what is left (checked before a
    copy is made; the copy itself is charged after)."""
    if amount > _left():
        raise _too_big()


def _left() -> int:
    spent = _spent.get()
    return EXPRESSION_VALUE_LIMIT - (spent[0] if spent else 0)


def weight(value: Any, limit: int = EXPRESSION_VALUE_LIMIT) -> int:
    """About how many characters ``value`` takes as text, or items in memory; the walk stops
    once it passes ``limit`` (so measuring a huge value costs no more than the limit)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float | date):
            total += 26
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        else:
            total += 16
    return total


def _items(value: Any) -> int:
    """The characters or items a copy of ``value`` holds itself (what it refers to is shared)."""
    return len(value) if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) else 1


def _concat(items: list[Any]) -> str:
    _charge(sum(weight(item, _left()) for item in items))
    return "".join(item if isinstance(item, str) else str(item) for item in items)


def _times(left: Any, right: Any) -> None:
    """Charge ``left * right`` before it is computed."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
            _charge(len(seq) * max(times, 0))  # a list repeats references: its items, not their size
            return
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise _int_too_big()
        _charge(bits * 3 // 10)


def _int_too_big() -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(f"the result would exceed {MAX_INT_BITS:,} bits (the limit)")


def _power(left: Any, right: Any) -> None:
    from jinja2.exceptions import SecurityError

    if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT} (the limit)")
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = abs(left).bit_length() * right
        if bits > MAX_INT_BITS:
            raise _int_too_big()
        _charge(bits * 3 // 10)


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` charged to the budget: text filters for their input, copying ones for their result."""
    value_at = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0  # after env / context

    @functools.wraps(fn)  # keeps jinja_pass_arg, so Jinja passes the same arguments
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > value_at and name in _TEXT_FILTERS:
            _charge(weight(args[value_at], _left()))
        elif len(args) > value_at and name in _COPY_FILTERS:
            _fits(_items(args[value_at]))
        result = fn(*args, **kwargs)
        if name in _COPY_FILTERS:
            _charge(_items(result))
        return result

    return bounded


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    _charge(weight(value, _left()))
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None:
        hits = min(hits, max(count, 0))
    _charge(max(0, hits * (len(new) - len(old))))
    return text.replace(old, new, -1 if count is None else count)


def _join(value: Any, d: str = "") -> str:
    _fits(_items(value))  # list() of a long text makes an object per character
    items = list(value)
    _charge(sum(weight(v, _left()) for v in items) + weight(d) * len(items))
    return str(d).join(str(v) for v in items)


def _sum(value: Any, start: Any = 0) -> Any:
    from jinja2.exceptions import SecurityError

    _fits(_items(value))
    items = list(value)
    numbers = [start, *items]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise SecurityError("sum adds numbers only")
    return sum(items, start)


@cache
def environment() -> Any:
    """The sandbox: Jinja's immutable sandbox without globals, with the safe filters only, and
    with operators, filters and method calls charged to the evaluation's budget."""
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
            owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
            if name not in METHODS.get(type(owner), ()):
                raise SecurityError(f"calling {name or type(obj).__name__} is not allowed in an expression")
            if name in _COPY_METHODS:  # new text (split: new strings) about as long as the owner
                _fits(_items(owner))
            result = super().call(context, obj, *args, **kwargs)
            if name in _COPY_METHODS:
                _charge(weight(result, _left()))
            return result

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "%" and isinstance(left, str | bytes):
                raise SecurityError("string formatting with % is not allowed; build strings with ~")
            if operator == "**":
                _power(left, right)
            elif operator == "*":
                _times(left, right)
            elif operator == "+":
                sized = (str, bytes, list, tuple)
                if isinstance(left, sized) and isinstance(right, sized):
                    _charge(len(left) + len(right))
            return super().call_binop(context, operator, left, right)

        def getitem(self, obj: Any, argument: Any) -> Any:
            if isinstance(argument, slice) and isinstance(obj, str | bytes | list | tuple):
                with suppress(TypeError, ValueError):  # a slice Python refuses: the subscript raises
                    _fits(len(range(*argument.indices(len(obj)))))  # items the copy will hold
            result = super().getitem(obj, argument)
            if isinstance(argument, slice):  # a copy
                _charge(_items(result))
            return result

    env = Sandbox(undefined=StrictUndefined, autoescape=False)
    env.globals.clear()
    filters = {k: v for k, v in env.filters.items() if k in SAFE_FILTERS}
    filters.update(replace=_replace, join=_join, sum=_sum)  # size-checked versions
    env.filters = {name: _bounded_filter(name, fn) for name, fn in filters.items()}
    env.filters[CONCAT_FILTER] = _concat
    return env
