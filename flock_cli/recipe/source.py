"""Phase 2 of the loader: YAML text -> plain data, with the position of every key and value.

PyYAML's composer gives nodes with marks; we build the Python values ourselves so that every
mapping key and value keeps its file:line:column, and so that a key written twice is an error
instead of the last one silently winning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flock_cli.limits import MAX_RECIPE_DEPTH, MAX_RECIPE_VALUES
from flock_cli.recipe.diagnostics import (
    Diagnostic,
    Mark,
    RecipeError,
    format_path,
    remember_source,
    yaml_lines,
)

__all__ = ["Document", "Path", "parse_yaml"]

Path = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"  # the tag PyYAML's resolver gives a plain `<<` key


@dataclass
class Document:
    """One parsed recipe file: its data and where each part of it was written."""

    file: str
    data: Any
    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[Mark | None, Path]:
        """The mark of the deepest part of ``path`` that exists, and that part's path.

        Parts that do not exist in the data (a key that is missing, or a step a validator added,
        such as the tag of an engine kind) are skipped, so the mark always points at real text.
        """
        node: Any = self.data
        found: list[str | int] = []
        for part in path:
            in_mapping = isinstance(node, dict) and isinstance(part, str) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if not (in_mapping or in_list):
                continue  # not in the text: a tag or a key that is missing
            node = node[part]
            found.append(part)
        where = tuple(found)
        marks = self.keys if key else self.values
        mark = marks.get(where) or self.values.get(where) or self.keys.get(where)
        return mark, where

    def display_path(self, path: Sequence[str | int]) -> tuple[str | int, ...]:
        """``path`` as the YAML spells it: steps missing from the text are dropped, except a
        final key name (a missing or unknown key is still worth naming)."""
        _, found = self.locate(path)
        last = path[-1] if path else None
        if isinstance(last, str) and found[-1:] != (last,) and isinstance(self._node(found), dict):
            return (*found, last)
        return found

    def _node(self, path: Sequence[str | int]) -> Any:
        node = self.data
        for part in path:
            node = node[part]
        return node


def parse_yaml(text: str, file: str) -> Document:
    """Parse ``text``; YAML syntax errors and duplicate keys raise :class:`RecipeError`."""
    import yaml  # lazy: `flock --help` does not need a YAML parser

    remember_source(file, text)
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "end of stream" in (exc.problem or ""):
            mark = exc.context_mark  # an unclosed quote or bracket: point where it opened
        where = None
        if mark is not None:
            lines = yaml_lines(text) or [""]
            line = min(mark.line + 1, len(lines))  # an error at the end of the file: its last line
            column = mark.column + 1 if line == mark.line + 1 else len(lines[-1]) + 1
            where = Mark(file, line, column)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        hint = ""
        if "expected ',' or '}'" in problem or "expected ',' or ']'" in problem:
            hint = 'a { or [ is not closed, or a value inside holds a bracket or comma: quote it, "list[str]"'
        elif "end of stream" in problem:
            hint = "a quote or bracket opened here is never closed"
        elif where is not None and "\t" in _indent(text, where.line):  # PyYAML's words never say "tab"
            hint = "this line is indented with a tab: YAML indents with spaces only"
        elif "mapping values are not allowed" in problem:  # an over-indented key, or "a: b: c"
            hint = (
                "a key indented under a plain value, or ': ' inside a value: align the key or quote the value"
            )
        elif "did not find expected key" in problem and "block mapping" in context:
            hint = "this line is indented to no key above it: line it up with the keys of its mapping"
        raise RecipeError(
            [Diagnostic(f"YAML syntax error: {problem}{context}", where, hint=hint, code="yaml-syntax")]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: placed, one line
        before = yaml_lines(text[: exc.position] + "|")
        where = Mark(file, len(before), len(before[-1]))
        shown = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"YAML error: unacceptable character {shown}: {exc.reason}"
        raise RecipeError([Diagnostic(message, where, code="yaml-syntax")]) from None
    except yaml.YAMLError as exc:
        message = f"YAML error: {' '.join(str(exc).split())}"
        raise RecipeError([Diagnostic(message, Mark(file, 1, 1), code="yaml-syntax")]) from None
    except RecursionError:  # PyYAML's pure-Python composer, without libyaml's own nesting limit
        message = f"the recipe nests more than {MAX_RECIPE_DEPTH} levels deep (the limit)"
        raise RecipeError([Diagnostic(message, Mark(file, 1, 1), code="yaml-size")]) from None
    doc = Document(file=file, data=None)
    if node is None:
        doc.data = {}
        return doc
    builder = _Builder(doc, yaml.SafeLoader(""))
    doc.data = builder.build(node, ())
    if builder.problems:
        raise RecipeError(builder.problems)
    return doc


class _Builder:
    def __init__(self, doc: Document, constructor: Any) -> None:
        self.doc = doc
        self.constructor = constructor
        self.problems: list[Diagnostic] = []
        self.count = 0
        self.open: set[int] = set()  # mapping and list nodes being built (an alias cycle meets one)
        self.merges: dict[int, list[tuple[Any, Any]]] = {}  # mapping node -> the pairs it merges in

    def mark(self, node: Any) -> Mark:
        start, end = node.start_mark, node.end_mark
        end_column = end.column + 1 if end.line == start.line else 0
        return Mark(self.doc.file, start.line + 1, start.column + 1, end_column)

    def build(self, node: Any, path: Path) -> Any:
        import yaml

        self.count += 1
        if self.count > MAX_RECIPE_VALUES:  # YAML aliases can expand a small file into billions of values
            raise RecipeError(
                [Diagnostic(f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values (the limit;"
                            " through YAML aliases?)", self.mark(node), format_path(path), code="yaml-size")]
            )  # fmt: skip
        if len(path) > MAX_RECIPE_DEPTH:  # building is recursive: a deep file would exhaust the stack
            raise RecipeError(
                [Diagnostic(f"the recipe nests more than {MAX_RECIPE_DEPTH} levels deep here (the limit)",
                            self.mark(node), format_path(path[:8]) + " ...", code="yaml-size")]
            )  # fmt: skip
        self.doc.values.setdefault(path, self.mark(node))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self.open:
                self.problem("a YAML alias refers to a value that contains it", node, path, "yaml-alias")
                return None
            self.open.add(id(node))
            try:
                if isinstance(node, yaml.SequenceNode):
                    return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
                return self.mapping(node, path)
            finally:
                self.open.discard(id(node))
        return self.scalar(node, path)

    def mapping(self, node: Any, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                self.entry(result, key_node, value_node, path, merged=False)
        # YAML merge keys (`<<: *defaults`) copy the keys this mapping does not set itself
        for key_node, value_node in self.merged_pairs(node, path, ()):
            self.entry(result, key_node, value_node, path, merged=True)
        return result

    def entry(
        self, result: dict[str, Any], key_node: Any, value_node: Any, path: Path, *, merged: bool
    ) -> None:
        """Add one key to ``result``; a merged key that is already set gives way silently."""
        import yaml

        key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
            self.problem(
                f"keys must be plain strings, got {shown}",
                key_node,
                path,
                "yaml-key",
                hint="YAML reads yes, no, on, off, true and false as booleans: put the key in quotes"
                if isinstance(key, bool)
                else "",
            )
            return
        child = (*path, key)
        if key in result:
            if merged:
                return
            first = self.doc.keys[child]
            self.problem(
                f"duplicate key '{key}'",
                key_node,
                child,
                "duplicate-key",
                hint=f"it is first set on line {first.line}; a YAML key may appear once",
            )
            return
        self.doc.keys[child] = self.mark(key_node)
        result[key] = self.build(value_node, child)

    def merged_pairs(self, node: Any, path: Path, stack: tuple[int, ...]) -> list[tuple[Any, Any]]:
        """The key and value nodes the merge keys of mapping ``node`` bring in, earlier sources
        first (they win, as in YAML), merges inside the sources expanded.

        Memoised per node, so mappings merging each other many times over stay linear, and
        ``stack`` catches a mapping that merges itself.
        """
        import yaml

        if id(node) in self.merges:
            return self.merges[id(node)]
        pairs: list[tuple[Any, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(
                        "a merge key (<<) takes a mapping or a list of mappings",
                        source,
                        path,
                        "yaml-value",
                        hint="merge an anchored mapping: <<: *defaults",
                    )
                    continue
                if id(source) in stack or source is node:
                    self.problem(
                        "a YAML alias refers to a value that contains it", source, path, "yaml-alias"
                    )
                    continue
                own = [(k, v) for k, v in source.value if k.tag != _MERGE_TAG]
                pairs.extend(own + self.merged_pairs(source, path, (*stack, id(node))))
        # keep the first pair of each key (the one that wins): mappings merging several copies
        # of each other, level after level, would otherwise multiply their pairs at each level
        seen: set[tuple[str, str]] = set()
        unique = []
        for key_node, value_node in pairs:
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    continue
                seen.add((key_node.tag, key_node.value))
            unique.append((key_node, value_node))
        self.merges[id(node)] = unique
        return unique

    def scalar(self, node: Any, path: Path) -> Any:
        try:
            return self.constructor.construct_object(node)
        except Exception as exc:  # !!int abc, an impossible date, an unknown !tag
            self.problem(f"cannot read this value: {str(exc).splitlines()[0]}", node, path, "yaml-value")
            return None

    def problem(self, message: str, node: Any, path: Path, code: str, *, hint: str = "") -> None:
        self.problems.append(Diagnostic(message, self.mark(node), format_path(path), hint=hint, code=code))


def _indent(text: str, line: int) -> str:
    """The leading whitespace of line ``line`` (1-based) of ``text``."""
    lines = text.splitlines()
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    return row[: len(row) - len(row.lstrip(" \t"))]
