"""How much of each kind of input Flock-Flow accepts, in one place.

Every limit is far above what a real recipe or payload needs and low enough that a hostile or
broken input (``/dev/zero``, a YAML alias bomb, a list nested a thousand deep) ends in a clear
error instead of exhausting memory, the stack or the user's patience. Each error names the limit
it hit; docs/recipes.md ("Limits") lists them all.

This module holds the numbers and the checks that apply to raw input before anything else reads
it: a bounded file read and a walk over plain data. It imports nothing heavy.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "EXPRESSION_VALUE_LIMIT",
    "MAX_EXPONENT",
    "MAX_EXPRESSION_DEPTH",
    "MAX_INT_BITS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "MAX_PAYLOAD_VALUES",
    "MAX_RECIPE_BYTES",
    "MAX_RECIPE_DEPTH",
    "MAX_RECIPE_VALUES",
    "MAX_RECORDING_BYTES",
    "MAX_TYPE_DEPTH",
    "TRACE_SQL_MAX_ROWS",
    "TRACE_SQL_MEMORY",
    "TRACE_SQL_TIMEOUT",
    "DuplicateKey",
    "InputRefused",
    "ValueChecker",
    "ValueProblem",
    "check_values",
    "format_value_path",
    "read_limited",
    "read_stream_limited",
    "unique_keys",
]

# -- recipes ---------------------------------------------------------------------------------------
MAX_RECIPE_BYTES = 4 * 1024 * 1024  # per file, root or include (a 4,000-agent recipe is 0.6 MB)
MAX_RECIPE_VALUES = 200_000  # YAML values per file, aliases expanded
MAX_RECIPE_DEPTH = 64  # nesting of mappings and lists in a recipe file
MAX_TYPE_DEPTH = 32  # declared types inside types, list[...] and dict[...] included
MAX_EXPRESSION_DEPTH = 50  # nesting of a where / join.by expression (operators, calls, brackets)
# Characters or items one evaluation of an expression may build in all (strings, lists, numbers
# by their digits): beyond it the expression fails, which counts as no match.
EXPRESSION_VALUE_LIMIT = 10_000_000
MAX_EXPONENT = 128  # the largest exponent ** takes
MAX_INT_BITS = 100_000  # the largest integer * and ** may build

# -- payloads (flock publish, flock run --input, and every artifact published) --------------------
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # a payload file or standard input
MAX_PAYLOAD_VALUES = 1_000_000  # values in one payload file, and in one artifact; aliases expanded
MAX_PAYLOAD_DEPTH = 100  # nesting of objects and lists in one artifact's payload

# -- recordings (flock run --replay-from, a recipe's recording:) ----------------------------------
MAX_RECORDING_BYTES = 64 * 1024 * 1024

# -- flock trace sql --------------------------------------------------------------------------------
TRACE_SQL_TIMEOUT = 60.0  # seconds (--timeout)
TRACE_SQL_MEMORY = "1GB"  # DuckDB's memory_limit (--memory-limit)
TRACE_SQL_MAX_ROWS = 100_000  # rows a query may return (--max-rows)


class InputRefused(Exception):
    """An input the limits refuse; ``str()`` says which limit and what to do."""


def read_limited(path: Path, limit: int, *, what: str, pipes: bool = True) -> bytes:
    """The bytes of ``path``, reading at most ``limit + 1`` of them.

    Regular files are read, and pipes when ``pipes`` (``<(command)``, a FIFO): both end. Devices
    (``/dev/zero`` never ends), sockets and directories are refused. Raises
    :class:`InputRefused` for those and for a file over ``limit`` bytes, ``FileNotFoundError``
    when it is missing, ``OSError`` when it cannot be read, ``ValueError`` for a NUL byte in the
    path.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise InputRefused(f"{what} {path} is a directory, not a file")
    if not (stat.S_ISREG(mode) or (pipes and stat.S_ISFIFO(mode))):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InputRefused(f"{what} {path} is {kind}, not a regular file")
    with open(path, "rb") as handle:
        return read_stream_limited(handle, limit, what=f"{what} {path}")


def read_stream_limited(stream: BinaryIO, limit: int, *, what: str) -> bytes:
    """At most ``limit`` bytes of ``stream``; one byte more raises :class:`InputRefused`."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputRefused(f"{what} is larger than {_size(limit)}, the limit for this input")
    return data


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"


@dataclass(frozen=True)
class ValueProblem:
    """Where a value breaks a limit (the path of keys and indexes to it) and how."""

    path: tuple[str | int, ...]
    message: str


_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN_PARTS = 12


def check_values(
    value: Any,
    *,
    max_values: int = MAX_PAYLOAD_VALUES,
    max_depth: int = MAX_PAYLOAD_DEPTH,
    string_keys: bool = False,
) -> ValueProblem | None:
    """The first thing in ``value`` that cannot be stored as JSON or breaks a limit, or None;
    see :class:`ValueChecker`."""
    return ValueChecker(max_values=max_values, max_depth=max_depth, string_keys=string_keys).check(value)


class ValueChecker:
    """Finds the first thing in plain data (dicts, lists, scalars) that cannot be stored as JSON
    or breaks a limit:

    - more than ``max_values`` values over every :meth:`check` of this checker (a list or dict
      reached twice, as YAML aliases do, counts each time, so an alias bomb stops here instead
      of being expanded);
    - nesting deeper than ``max_depth``;
    - NaN or infinity (JSON has no such numbers: they would be stored as null);
    - a lone surrogate in a string or key (not text: it cannot be written as UTF-8);
    - with ``string_keys``, a key that is not a string (JSON keys are strings).

    Anything else (dates, UUIDs, a model's own values) is left to the type's validation.
    """

    __slots__ = ("count", "max_depth", "max_values", "string_keys")

    def __init__(
        self,
        *,
        max_values: int = MAX_PAYLOAD_VALUES,
        max_depth: int = MAX_PAYLOAD_DEPTH,
        string_keys: bool = False,
    ) -> None:
        self.count = 0
        self.max_values = max_values
        self.max_depth = max_depth
        self.string_keys = string_keys

    def check(self, value: Any) -> ValueProblem | None:
        """The first problem in ``value`` (its path and what is wrong), or None."""
        found = self._walk(value, 0)
        if found is None:
            return None
        reversed_path, message = found
        path = tuple(reversed(reversed_path))
        if len(path) > _SHOWN_PARTS:  # a path 100 levels deep says nothing more than its start
            path = (*path[:_SHOWN_PARTS], "...")
        return ValueProblem(path, message)

    def _walk(self, value: Any, depth: int) -> tuple[list[str | int], str] | None:
        """The problem as (path from the problem up, message); recursion is bounded by max_depth."""
        self.count += 1
        if self.count > self.max_values:
            return [], f"more than {self.max_values:,} values (the limit; through YAML aliases?)"
        kind = type(value)
        if kind is str:
            return None if value.isascii() or not _SURROGATE.search(value) else ([], _NOT_TEXT)
        if kind is float:
            return None if math.isfinite(value) else ([], _NOT_FINITE)
        entries: Iterable[tuple[Any, Any]] | None = None
        if isinstance(value, dict):
            entries, keyed = value.items(), True
        elif isinstance(value, list | tuple):
            entries, keyed = enumerate(value), False
        if entries is not None:  # a container, empty or not
            if depth >= self.max_depth:
                return [], f"nested more than {self.max_depth} levels deep (the limit)"
            for key, item in entries:
                if keyed:
                    if type(key) is str:
                        if not key.isascii() and _SURROGATE.search(key):
                            return [_shown(key)], "this key is not text: " + _NOT_TEXT
                    elif self.string_keys:
                        return [repr(key)], f"keys must be strings, got {type(key).__name__} {key!r}"
                kind = type(item)
                # a plain value that is certainly fine needs no call of its own
                if kind in _PLAIN or (kind is str and item.isascii()) or (kind is float and _isfinite(item)):
                    self.count += 1
                    if self.count <= self.max_values:
                        continue
                    self.count -= 1  # counted again by the walk that reports it
                found = self._walk(item, depth + 1)
                if found is not None:
                    found[0].append(key if isinstance(key, str | int) else repr(key))
                    return found
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return [], _NOT_FINITE
        if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
            return [], _NOT_TEXT
        return None


_PLAIN = frozenset({int, bool, type(None)})

_isfinite = math.isfinite
_NOT_FINITE = "NaN and infinity are not allowed (JSON has no such numbers; they would be stored as null)"
_NOT_TEXT = "it holds a lone surrogate (\\ud800-\\udfff), which is not text and cannot be stored as UTF-8"


def _shown(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("ascii", "replace")


def format_value_path(path: Sequence[str | int]) -> str:
    """``("a", 0, "b")`` -> ``a.0.b`` (Pydantic's way of naming a field inside a payload)."""
    return ".".join(str(p) for p in path) or "<root>"


class DuplicateKey(ValueError):
    """A key written twice in one object of a payload (JSON or YAML)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object's dict, refusing a key written twice.
    A parser keeps the last one silently, and which of the two was meant is not ours to guess."""
    made = dict(pairs)
    if len(made) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"the key {twice!r} is written twice in one object")
    return made
