"""Recipe problems with their place in the source: file, line, column, key path and the lines.

Every phase of the loader reports through :class:`Diagnostic`; :class:`RecipeError` carries one
or more of them and renders like a compiler message::

    recipes/review.yaml:12:9: error: unknown key 'wher' at agents.reviewer.consumes[0]
       11 |     consumes:
       12 |       - wher: "language == 'python'"
          |         ^^^^
      hint: did you mean 'where'?
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flock_cli.errors import UserError, printable

__all__ = [
    "Diagnostic",
    "Mark",
    "Problem",
    "RecipeError",
    "format_path",
    "remember_source",
    "source_lines",
    "yaml_lines",
]

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Mark:
    """A place in a recipe file; ``line`` and ``column`` count from 1. ``end_column`` bounds the
    underline on ``line`` (0 when unknown)."""

    file: str
    line: int
    column: int
    end_column: int = 0


@dataclass(frozen=True)
class Diagnostic:
    """One problem: what is wrong (``message``), where (``mark``, ``path``) and how to fix it."""

    message: str
    mark: Mark | None = None
    path: str = ""
    hint: str = ""
    severity: Severity = "error"
    code: str = ""
    context: tuple[str, ...] = field(default=(), compare=False)

    def headline(self) -> str:
        """``file:line:col: error: message at key.path`` (what the recipe wrote is quoted with
        control characters escaped: one diagnostic, one line)."""
        where = f"{printable(self.mark.file)}:{self.mark.line}:{self.mark.column}: " if self.mark else ""
        at = f" at {printable(self.path, keep='')}" if self.path else ""
        return f"{where}{self.severity}: {printable(self.message, keep='')}{at}"

    def render(self) -> str:
        """The headline, the offending lines with a caret under the spot, and the hint."""
        out = [self.headline()]
        if self.mark is not None:
            out.extend(_snippet(self.mark))
        out.extend(f"  note: {line}" for line in self.context)
        if self.hint:
            out.append(f"  hint: {printable(self.hint, keep='')}")
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        """A plain mapping for ``--json`` output."""
        mark = self.mark
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "file": mark.file if mark else None,
            "line": mark.line if mark else None,
            "column": mark.column if mark else None,
            "hint": self.hint,
        }


class RecipeError(UserError):
    """A recipe could not be loaded; ``diagnostics`` lists every problem found in that phase."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=_position)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


def _position(d: Diagnostic) -> tuple[str, int, int]:
    return (d.mark.file, d.mark.line, d.mark.column) if d.mark else ("", 0, 0)


def format_path(parts: Sequence[str | int]) -> str:
    """``('agents', 'a', 'consumes', 0, 'where')`` -> ``agents.a.consumes[0].where``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_SOURCES: dict[str, list[str]] = {}


_YAML_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def yaml_lines(text: str) -> list[str]:
    """``text`` split where YAML counts lines (``str.splitlines`` also splits at \\x1c-\\x1e,
    \\v and \\f, which would put a diagnostic on the wrong line)."""
    lines = _YAML_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def remember_source(file: str, text: str) -> None:
    """Keep a file's lines so diagnostics can quote them even after the file changed."""
    _SOURCES[file] = yaml_lines(text)


def source_lines(file: str) -> list[str]:
    """The lines of ``file`` as the loader read it (or as it is on disk now; [] if unreadable)."""
    lines = _SOURCES.get(file)
    if lines is None:
        from flock_cli.limits import MAX_RECIPE_BYTES, InputRefused, read_limited

        try:  # bounded, regular files only: a diagnostic must never read /dev/zero
            text = read_limited(Path(file), MAX_RECIPE_BYTES, what="recipe file", pipes=False)
            lines = yaml_lines(text.decode("utf-8"))
        except (OSError, ValueError, InputRefused):
            return []
    return lines


_SHOWN_WIDTH = 160  # longer lines (a generated expression) are shown around the spot


def _snippet(mark: Mark) -> list[str]:
    lines = source_lines(mark.file)
    if not 1 <= mark.line <= len(lines):
        return []
    first = max(1, mark.line - 1)
    width = len(str(mark.line))
    start = mark.column - 1
    length = max(1, mark.end_column - mark.column) if mark.end_column > mark.column else 1
    shown = [_clipped(printable(lines[n - 1], keep="\t"), 0) for n in range(first, mark.line)]  # before
    line = printable(lines[mark.line - 1], keep="\t")
    low = max(0, min(start - 40, len(line) - _SHOWN_WIDTH)) if len(line) > _SHOWN_WIDTH else 0
    shown.append(_clipped(line, low))
    offset = (3 if low else 0) - low  # the caret moves with the text shown
    length = max(1, min(length, low + _SHOWN_WIDTH - start))
    out = [f"  {n:>{width}} | {line}" for n, line in zip(range(first, mark.line + 1), shown, strict=True)]
    out.append(f"  {' ' * width} | {' ' * (start + offset)}{'^' * length}")
    return out


def _clipped(line: str, low: int) -> str:
    """``_SHOWN_WIDTH`` characters of ``line`` from ``low``, with ... where text is left out."""
    if len(line) <= _SHOWN_WIDTH:
        return line
    end = low + _SHOWN_WIDTH
    return ("..." if low else "") + line[low:end] + ("..." if len(line) > end else "")


@dataclass(eq=False)
class Problem(Exception):
    """A problem found by a phase that knows the key path but not the file: the loader turns it
    into a :class:`Diagnostic` with the position of ``path`` in the file it came from.

    ``key`` points at the key rather than its value; ``column`` is an offset inside a scalar
    value (the column in an expression), 1-based, 0 for none.
    """

    path: tuple[str | int, ...]
    message: str
    hint: str = ""
    code: str = ""
    key: bool = False
    column: int = 0
    token: str = ""  # the text at ``column``, to check the column against the source
    severity: Severity = "error"
