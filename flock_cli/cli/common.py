"""What every command shares: consoles, exit codes, error reporting, JSON output, which board."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from uuid import UUID

    from pydantic import BaseModel
    from rich.console import Console

    from flock_cli.core.orchestrator import Flock
    from flock_cli.engines.recording import Recording
    from flock_cli.recipe.diagnostics import Diagnostic
    from flock_cli.recipe.loader import Recipe
    from flock_cli.store.contract import BlackboardStore

__all__ = [
    "BOARD_ENV",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Board",
    "board_path",
    "console",
    "emit_json",
    "err_console",
    "fail",
    "load",
    "load_or_report",
    "open_board",
    "parse_uuid",
    "print_diagnostics",
    "recipe_type",
    "reports_errors",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found failures (a run with dead letters, check findings)
EXIT_USAGE = 2  # the user's input is wrong: bad recipe, payload, option or file
EXIT_INTERRUPTED = 130  # a run stopped by Ctrl-C (128 + SIGINT), as shells report it

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def console() -> Console:
    """Rich console on stdout (created on first use: Rich is not needed for ``--help``)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, emoji=False)  # "r.yaml:100:3" is no 💯


@functools.cache
def err_console() -> Console:
    """Rich console on stderr, for errors and progress."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class _BoardNotes(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            err_console().print(f"board: {record.getMessage()}", markup=False)
        except OSError:
            pass  # stderr is gone (a closed pipe): the note has nowhere to go, the work goes on
        except Exception:
            self.handleError(record)


def show_board_notes(*, quiet: bool) -> None:
    """Print, as it happens, what a member of a shared board reports (leases taken over from a
    dead process, leadership, a lost and regained connection): one ``board:`` line each on
    stderr; warnings always, the rest unless ``quiet``."""
    logger = logging.getLogger("flock_cli.board")
    if not any(isinstance(h, _BoardNotes) for h in logger.handlers):
        logger.addHandler(_BoardNotes())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


class CommandFailed(Exception):
    """Raised by :func:`fail`; :func:`reports_errors` prints it and exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command: ``error: message`` on stderr (and, with ``--json``, a JSON error object
    on stdout), exit ``code``, no traceback."""
    raise CommandFailed(message, code)


def _stop(message: str, code: int, as_json: bool) -> NoReturn:
    from rich.markup import escape

    from flock_cli.errors import printable

    err_console().print(f"[bold red]error:[/] {escape(printable(message))}")
    if as_json:  # scripts reading stdout get an answer too
        emit_json({"ok": False, "error": message, "exit_code": code})
    raise typer.Exit(code)


def reports_errors(fn: F) -> F:
    """Turn Flock-Flow's errors into one readable message and an exit code: user mistakes exit 2,
    failures while running exit 1. Nothing else is caught: a bug still shows its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flock_cli.errors import RunError, UserError
        from flock_cli.recipe.diagnostics import RecipeError

        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except CommandFailed as exc:
            _stop(exc.message, exc.code, as_json)
        except RecipeError as exc:  # a recipe that fails to compile (loading reports itself)
            print_diagnostics(exc.diagnostics)
            if as_json:
                emit_json(
                    {"ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics], "exit_code": 2}
                )
            raise typer.Exit(EXIT_USAGE) from None
        except UserError as exc:
            _stop(str(exc), EXIT_USAGE, as_json)
        except RunError as exc:
            _stop(str(exc), EXIT_FAILED, as_json)
        except Exception as exc:
            damage = _board_damage(exc)
            if damage is None:
                raise  # a bug: its traceback is what helps
            _stop(damage, EXIT_FAILED, as_json)

    return wrapper  # type: ignore[return-value]


_opened: list[Board] = []  # the board this command opened last (one), for a message about a damaged one


def _board_damage(exc: BaseException) -> str | None:
    """The message for a board file SQLite found damaged once the command was under way (see
    :func:`flock_cli.store.locate.board_damage`), naming the board this command opened."""
    from flock_cli.store.locate import board_damage

    return board_damage(exc, _opened[0].target if _opened else None)  # only a SQLite file says so


def emit_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout (plain text, no Rich markup)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def load(path: Path) -> Recipe:
    """Load a recipe (every loader phase up to the static checks)."""
    from flock_cli.recipe import load_recipe

    return load_recipe(path)


def load_or_report(path: Path, as_json: bool) -> Recipe:
    """Load a recipe; on errors print them (or ``{"valid": false, "diagnostics": [...]}`` with
    ``--json``), each with its place and hint, and exit 2."""
    from flock_cli.recipe import RecipeError

    try:
        return load(path)
    except RecipeError as exc:
        if as_json:
            emit_json({"valid": False, "diagnostics": [d.to_json() for d in exc.diagnostics]})
        else:
            print_diagnostics(exc.diagnostics)
            count = len(exc.diagnostics)
            err_console().print(f"[bold red]{path}: {count} error{'s' if count != 1 else ''}[/]")
        raise typer.Exit(EXIT_USAGE) from None


def print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    """Each diagnostic on stderr as the loader renders it, its severity in colour."""
    from rich.markup import escape

    colors = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    for d in diagnostics:
        head, _, rest = d.render().partition("\n")
        text = escape(head).replace(f"{d.severity}:", f"[{colors[d.severity]}]{d.severity}:[/]", 1)
        err_console().print(text + ("\n" + escape(rest) if rest else ""))


def parse_uuid(text: str, option: str) -> UUID:
    """``text`` as a UUID, or a usage error naming ``option``."""
    from uuid import UUID

    try:
        return UUID(text)
    except ValueError:
        fail(f"{option} must be a UUID, got {text!r}")


BOARD_DIR = Path(".flock")
BOARD_ENV = "FLOCK_BOARD"  # the board of every command that takes --board, when --board is not given


def recipe_type(recipe: Recipe, type_name: str) -> type[BaseModel]:
    """The artifact type ``type_name`` of ``recipe``, or a usage error naming the types it has."""
    model = recipe.resolved.types.get(type_name)
    if model is None:
        from flock_cli.errors import UsageError, did_you_mean

        known = sorted(n for n in recipe.resolved.types if "." not in n)  # bare names, not module paths
        names = ", ".join(known) or "none"
        raise UsageError(
            f"{recipe.path} has no type '{type_name}'.{did_you_mean(type_name, known)} Its types: {names}."
        )
    return model


class Board(NamedTuple):
    """The board a command uses: ``target`` (a SQLite path, ``:memory:`` or a PostgreSQL URL; see
    :mod:`flock_cli.store.locate`) and ``origin``, what chose it when the command line does not
    show it (``FLOCK_BOARD``, a recipe's ``settings.board``), for messages."""

    target: str
    origin: str | None = None

    def shown(self) -> str:
        """The target as it may be printed (a URL's password hidden)."""
        from flock_cli.store.locate import redact

        return redact(self.target)


def board_path(option: str | None, recipe: Recipe | None) -> Board:
    """The board to use: ``--board``, else ``$FLOCK_BOARD``, else the recipe's ``settings.board``,
    else the recipe's own board ``.flock/<recipe name>.db``. Each recipe gets its own file by
    default, so running one recipe never meets the unfinished work of another.

    Without a recipe (``flock board``), the one board in ``.flock/`` is used; several are an error.
    """
    if option:
        return Board(option)
    if env := os.environ.get(BOARD_ENV):
        return Board(env, BOARD_ENV)
    if recipe is not None:
        if recipe.definition.settings.board:  # relative to the working directory, like --board
            return Board(recipe.definition.settings.board, f"settings.board of {recipe.path}")
        return Board(str(BOARD_DIR / f"{_slug(recipe.name)}.db"))
    boards = sorted(BOARD_DIR.glob("*.db"))
    if len(boards) == 1:
        return Board(str(boards[0]))
    choose = f"pass --board PATH or --recipe FILE, or set {BOARD_ENV}"
    if not boards:
        fail(f"no board in {BOARD_DIR}/ (run a recipe first, or {choose})")
    names = ", ".join(str(b) for b in boards)
    fail(f"several boards in {BOARD_DIR}/: {names}; {choose}")


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "board"


def open_board(board: Board, *, must_exist: bool) -> BlackboardStore:
    """Open the board ``board`` names, not connecting yet; with ``must_exist`` (commands that
    read) a missing board file is a usage error, not a new board. A PostgreSQL board is checked
    when first used (:func:`flock_cli.store.locate.open_store` says how)."""
    from flock_cli.errors import UsageError
    from flock_cli.store.locate import MEMORY, NoBoardError, open_store

    given = f"{board.origin}: " if board.origin else ""
    _opened[:] = [board]  # only the last: a program may run many commands in one process
    try:
        return open_store(board.target, must_exist=must_exist)
    except NoBoardError as exc:
        hint = "" if given or board.target == MEMORY else " (run a recipe first, or pass --board PATH)"
        fail(f"{given}{exc}{hint}")
    except UsageError as exc:
        fail(f"{given}{exc}")


def build_on_board(
    loaded: Recipe,
    board: Board,
    *,
    model: str | None,
    engine: str | None,
    replay: Recording | None,
    traces: Path | None,
    no_traces: bool,
    role: str = "orchestrator",
) -> Flock:
    """The recipe's flock on ``board`` (a board file is created when missing), as ``flock run``,
    ``flock serve`` and ``flock mcp`` build it from their options."""
    return loaded.build(
        store=open_board(board, must_exist=False),
        model=model,
        engine_override=engine,
        replay=replay,
        traces=False if no_traces else traces,
        role=role,
    )
