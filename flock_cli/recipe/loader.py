"""The recipe loader: YAML file(s) in, a checked :class:`Recipe` out.

Phases, in order (each stops the load when it finds errors, after reporting all of them):

1. **read** the root file and every ``include``, relative to the including file;
2. **parse** YAML with the position of every key and value (duplicate keys are errors);
3. **validate** each file against the recipe model (unknown keys, wrong kinds, bad values);
4. **merge** the included files into the root (a type or agent declared twice is an error);
5. **resolve** names: imports, types, agents, tools, expressions, functions, components;
6. **graph**: build the subscription graph (type -> agent -> type);
7. **check**: static analysis; errors stop the load, warnings and notes are kept;
8. **compile** (:meth:`Recipe.build`): the same runtime objects the Python API makes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flock_cli.errors import closest
from flock_cli.recipe.checks import static_checks
from flock_cli.recipe.diagnostics import (
    Diagnostic,
    Mark,
    Problem,
    RecipeError,
    format_path,
    remember_source,
    source_lines,
)
from flock_cli.recipe.graph import SubscriptionGraph, build_graph
from flock_cli.recipe.model import RecipeDef
from flock_cli.recipe.model_checks import model_conflicts
from flock_cli.recipe.resolve import ResolvedRecipe, resolve
from flock_cli.recipe.source import Document, parse_yaml
from flock_cli.recipe.validation import diagnose

if TYPE_CHECKING:
    from flock_cli.core.orchestrator import Flock
    from flock_cli.engines.recording import Recording
    from flock_cli.store.contract import BlackboardStore

__all__ = ["PHASES", "Recipe", "load_recipe"]

PHASES = ("read", "parse", "validate", "merge", "resolve", "graph", "check", "compile")
_ROOT_ONLY = ("name", "description", "model", "dspy", "budget", "recording", "settings", "mcp_servers")


@dataclass
class Recipe:
    """A loaded, checked recipe. ``findings`` holds the static checks' warnings and notes."""

    path: Path
    definition: RecipeDef
    resolved: ResolvedRecipe
    graph: SubscriptionGraph
    findings: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    _locator: _Locator | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The recipe's ``name``, or its file name without the suffix."""
        return self.definition.name or self.path.stem

    def build(
        self,
        *,
        store: BlackboardStore | None = None,
        model: str | None = None,
        engine_override: str | None = None,
        replay: Recording | None = None,
        **flock_options: Any,
    ) -> Flock:
        """Compile into a :class:`~flock_cli.Flock` (phase 8); see
        :func:`flock_cli.recipe.compiler.compile_recipe` for the arguments."""
        from flock_cli.recipe.compiler import compile_recipe

        return compile_recipe(
            self, store=store, model=model, engine_override=engine_override, replay=replay, **flock_options
        )

    @property
    def recording_path(self) -> Path | None:
        """The file of the recipe's ``recording:`` (relative to the recipe), if it names one."""
        recording = self.definition.recording
        return None if recording is None else (self.path.parent / recording)

    @property
    def uses_dspy(self) -> bool:
        """True when some agent has a dspy engine (the ones ``--model`` applies to)."""
        from flock_cli.recipe.model import DSPyEngineDef

        return any(
            isinstance(engine, DSPyEngineDef)
            for a in self.resolved.agents.values()
            for engine, _ in a.engines
        )

    def check_compilable(
        self, engine_override: str | None = None, model: str | None = None, replay: Recording | None = None
    ) -> None:
        """Raise what :meth:`build` would refuse, without building anything."""
        from flock_cli.recipe.compiler import check_compilable

        check_compilable(self, engine_override, model, replay)

    def diagnostic(self, problem: Problem) -> Diagnostic:
        """Place a problem found after loading (for example by the compiler) in its file."""
        assert self._locator is not None
        return self._locator.place(problem)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Load ``path`` through every phase; raise :class:`RecipeError` listing what is wrong."""
    root = Path(path)
    documents = _read_all(root)
    definitions = _validate_all(documents)
    merged, locator = _merge(documents, definitions)
    problems: list[Problem] = []
    with _import_path(*(Path(d.file).parent for d in documents)):
        resolved = resolve(merged, problems)
    problems.extend(model_conflicts(merged))
    _raise_errors(problems, locator)
    graph = build_graph(resolved)
    findings = static_checks(resolved, graph)
    _raise_errors(findings, locator)
    return Recipe(
        path=root,
        definition=merged,
        resolved=resolved,
        graph=graph,
        findings=[locator.place(p) for p in findings],
        files=[d.file for d in documents],
        _locator=locator,
    )


def _read_all(root: Path) -> list[Document]:
    documents: list[Document] = []
    stack: list[Path] = []

    def read(path: Path, mark: Mark | None) -> None:
        from flock_cli.limits import MAX_RECIPE_DEPTH

        try:
            resolved = path.resolve()
        except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte; a symlink loop
            reason = "it holds a NUL byte" if isinstance(exc, ValueError) else str(exc)
            message = f"{str(path)!r} is not a valid file path ({reason})"
            raise RecipeError([Diagnostic(message, mark, code="read")]) from None
        if resolved in stack:
            chain = " -> ".join(p.name for p in [*stack, resolved])
            raise RecipeError([Diagnostic(f"include cycle: {chain}", mark, code="include-cycle")])
        if len(stack) >= MAX_RECIPE_DEPTH:
            message = f"includes nest more than {MAX_RECIPE_DEPTH} files deep (the limit)"
            raise RecipeError([Diagnostic(message, mark, code="read")])
        if any(Path(d.file).resolve() == resolved for d in documents):
            return  # included twice through different files: merge it once
        text = _read_recipe_file(path, mark, root=not stack)
        doc = parse_yaml(text, str(path))
        if not isinstance(doc.data, dict):
            raise RecipeError(
                [
                    Diagnostic(
                        "a recipe must be a mapping of keys (types:, agents:, ...)",
                        doc.values.get(()),
                        code="not-a-mapping",
                    )
                ]
            )
        documents.append(doc)
        stack.append(resolved)
        includes = doc.data.get("include", [])
        for i, item in enumerate(includes if isinstance(includes, list) else [includes]):
            if isinstance(item, str):
                where = doc.locate(("include", i) if isinstance(includes, list) else ("include",))[0]
                if not item.strip():  # "" would name the including file's folder: "included file ."
                    raise RecipeError(
                        [Diagnostic("an include names no file (an empty path)", where, code="read")]
                    )
                read(path.parent / item, where)
        stack.pop()

    read(root, None)
    return documents


def _nearby_file(path: Path) -> str:
    """ "Did you mean" for a misspelt recipe path: the closest YAML file in its folder, or in the
    closest folder when the folder itself is misspelt (one level, so nothing large is scanned)."""
    folder = path.parent
    if not folder.is_dir():
        near = closest(folder.name, _listing(folder.parent, Path.is_dir))
        if near is None:
            return ""
        folder = folder.parent / near
    files = _listing(folder, lambda p: p.suffix in (".yaml", ".yml") and p.is_file())
    stems = {Path(name).stem: name for name in reversed(files)}  # compared without the suffix
    stem = closest(path.stem, stems)
    return f"Did you mean '{folder / stems[stem]}'?" if stem else ""


def _listing(folder: Path, keep: Callable[[Path], bool]) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if keep(p))
    except OSError:
        return []


def _read_recipe_file(path: Path, mark: Mark | None, *, root: bool) -> str:
    """The text of one recipe file, at most ``MAX_RECIPE_BYTES`` of it. The root recipe may be a
    pipe (``flock validate <(generate)``); an include must be a regular file: a FIFO could keep
    the load waiting forever, and a device (``/dev/zero``) never ends."""
    from flock_cli.limits import MAX_RECIPE_BYTES, InputRefused, read_limited

    what = "recipe file" if root else "included file"
    try:
        return read_limited(path, MAX_RECIPE_BYTES, what=what, pipes=root).decode("utf-8")
    except FileNotFoundError:
        # a link to nowhere exists: "not found" with a look-alike name to open sent users astray
        hint = (
            f"it is a symbolic link to {os.readlink(path)}, which does not exist" if path.is_symlink() else ""
        )
        missing = Diagnostic(
            f"recipe file not found: {path}", mark, hint=hint or _nearby_file(path), code="not-found"
        )
        raise RecipeError([missing]) from None
    except InputRefused as exc:
        message, code = str(exc), "read"
    except UnicodeDecodeError as exc:
        raise RecipeError([_not_utf8(path, exc)]) from None
    except OSError as exc:
        message, code = f"cannot read {path}: {exc.strerror or exc}", "read"
    raise RecipeError([Diagnostic(message, mark, code=code)])


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> Diagnostic:
    """The bad byte placed at its line and column of ``path`` (a byte offset alone sends the user
    counting), with that line shown, the undecodable bytes replaced."""
    data = bytes(exc.object)
    line = data.count(b"\n", 0, exc.start) + 1
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
    remember_source(str(path), data.decode("utf-8", "replace"))
    message = f"not UTF-8 text: byte 0x{data[exc.start]:02x} ({exc.reason})"
    hint = "save the file as UTF-8 (it may be Latin-1 or Windows-1252)"
    return Diagnostic(message, Mark(str(path), line, column), code="read", hint=hint)


def _validate_all(documents: list[Document]) -> list[RecipeDef]:
    diagnostics: list[Diagnostic] = []
    definitions: list[RecipeDef] = []
    for doc in documents:
        try:
            definitions.append(RecipeDef.model_validate(doc.data))
        except ValidationError as exc:
            diagnostics.extend(diagnose(exc, doc))
    if diagnostics:
        raise RecipeError(diagnostics)
    return definitions


class _Locator:
    """Maps a key path of the merged recipe to the file and path it was written at."""

    def __init__(self, root: Document) -> None:
        self.root = root
        self.sections: dict[tuple[str | int, ...], tuple[Document, tuple[str | int, ...]]] = {}

    def origin(self, path: tuple[str | int, ...]) -> tuple[Document, tuple[str | int, ...]]:
        for size in (3, 2):
            hit = self.sections.get(path[:size])
            if hit is not None:
                doc, prefix = hit
                return doc, (*prefix, *path[size:])
        return self.root, path

    def place(self, problem: Problem) -> Diagnostic:
        doc, path = self.origin(problem.path)
        mark, _ = doc.locate(path, key=problem.key)
        if mark is not None and problem.column:
            mark = _inside_scalar(mark, problem)
        if not problem.path:
            mark = None
        return Diagnostic(
            problem.message,
            mark,
            format_path((*problem.path[: len(problem.path) - len(path)], *doc.display_path(path))),
            hint=problem.hint,
            severity=problem.severity,
            code=problem.code,
        )


def _inside_scalar(mark: Mark, problem: Problem) -> Mark:
    """Point at ``problem.column`` inside the scalar at ``mark``, when the source shows the
    expression as written (one line, no escapes); otherwise keep pointing at the whole value."""
    line = _line(mark.file, mark.line)
    start = mark.column - 1
    quoted = line[start : start + 1] in ("'", '"')
    column = start + problem.column - 1 + (1 if quoted else 0)  # 0-based
    token = problem.token or line[column : column + 1]
    if token and line[column : column + len(token)] == token:
        return Mark(mark.file, mark.line, column + 1, column + 1 + len(token))
    return mark


def _line(file: str, number: int) -> str:
    lines = source_lines(file)
    return lines[number - 1] if 0 < number <= len(lines) else ""


def _merge(documents: list[Document], definitions: list[RecipeDef]) -> tuple[RecipeDef, _Locator]:
    root_doc, root = documents[0], definitions[0]
    locator = _Locator(root_doc)
    types = dict(root.types)
    agents = dict(root.agents)
    imported_types = list(root.imports.types)
    imported_tools = list(root.imports.tools)
    for section in ("types", "agents"):
        for name in getattr(root, section):
            locator.sections[(section, name)] = (root_doc, (section, name))
    for kind, items in (("types", imported_types), ("tools", imported_tools)):
        for i in range(len(items)):
            locator.sections[("imports", kind, i)] = (root_doc, ("imports", kind, i))
    problems: list[Diagnostic] = []
    for doc, definition in zip(documents[1:], definitions[1:], strict=True):
        for key in _ROOT_ONLY:
            if key in definition.model_fields_set:
                problems.append(
                    Diagnostic(
                        f"'{key}' can only be set in the root recipe ({root_doc.file})",
                        doc.locate((key,), key=True)[0],
                        key,
                        code="include-root-only",
                    )
                )
        for section, target in (("types", types), ("agents", agents)):
            for name, value in getattr(definition, section).items():
                if name in target:
                    first_doc, first_path = locator.sections[(section, name)]
                    first = first_doc.locate(first_path, key=True)[0]
                    where = f"{first.file}:{first.line}" if first else first_doc.file
                    problems.append(
                        Diagnostic(
                            f"{section[:-1]} '{name}' is declared twice",
                            doc.locate((section, name), key=True)[0],
                            f"{section}.{name}",
                            hint=f"it is first declared at {where}",
                            code="duplicate-name",
                        )
                    )
                    continue
                target[name] = value
                locator.sections[(section, name)] = (doc, (section, name))
        for kind, items in (("types", imported_types), ("tools", imported_tools)):
            for i, ref in enumerate(getattr(definition.imports, kind)):
                if ref not in items:
                    locator.sections[("imports", kind, len(items))] = (doc, ("imports", kind, i))
                    items.append(ref)
    if problems:
        raise RecipeError(problems)
    merged = root.model_copy(
        update={
            "types": types,
            "agents": agents,
            "imports": root.imports.model_copy(update={"types": imported_types, "tools": imported_tools}),
        }
    )
    return merged, locator


def _raise_errors(problems: list[Problem], locator: _Locator) -> None:
    errors = [locator.place(p) for p in problems if p.severity == "error"]
    if errors:
        raise RecipeError(errors)


@contextmanager
def _import_path(*folders: Path) -> Iterator[None]:
    """Let ``module:Name`` references find modules next to the recipe files and in the current
    directory."""
    candidates = dict.fromkeys(str(p) for p in (*(f.resolve() for f in folders), Path.cwd()))
    added = [p for p in candidates if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
