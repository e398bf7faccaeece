"""Where a board is, and how to open it.

A board is named by one string, whoever gives it (``--board``, ``FLOCK_BOARD``, a recipe's
``settings.board``, Python code):

- ``postgresql://...`` or ``postgres://...``: a PostgreSQL database, the board many processes
  share (:class:`~flock_cli.store.postgres.PostgresBlackboardStore`, the ``postgres`` extra);
- ``:memory:``: the in-memory store, which keeps nothing;
- anything else: the path of a SQLite file.

Any other ``scheme://`` is refused rather than taken for a file name: ``mysql://h/db`` or
``sqlite:///x.db`` would otherwise become a folder called ``mysql:`` with a board in it.

A URL may hold a password, so whatever shows a board shows :func:`redact` of it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from flock_cli.errors import UsageError
from flock_cli.store.board_url import HIDDEN, SCHEME, is_password, redact, url_parts

if TYPE_CHECKING:
    from flock_cli.store.contract import BlackboardStore

__all__ = [
    "MEMORY",
    "SCHEMES",
    "NoBoardError",
    "board_damage",
    "is_database_url",
    "open_store",
    "redact",
]

MEMORY = ":memory:"
SCHEMES = ("postgresql", "postgres")
"""The URL schemes of a PostgreSQL board: libpq's two spellings."""

POSTGRES_EXTRA = "the PostgreSQL board needs the postgres extra: pip install 'flock-flow[postgres]'"


class NoBoardError(UsageError):
    """A board that must already exist (for reading) is not there."""


def is_database_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL board (``postgresql://`` or ``postgres://``, in any
    case) rather than a file. Any other ``scheme://`` is a :class:`UsageError` that lists what a
    board can be."""
    match = SCHEME.match(target)
    if match is None:
        return False
    scheme = match.group(1).lower()
    if scheme in SCHEMES:
        return True
    driver = " without a driver name" if scheme.startswith(SCHEMES) else ""  # postgresql+psycopg://
    raise UsageError(
        f"unsupported board {redact(target)}: a board is the path of a SQLite file or a"
        f" postgresql:// (or postgres://) URL{driver}"
    )


def open_store(target: str, *, must_exist: bool) -> BlackboardStore:
    """The store ``target`` names (see the module's docstring), not yet connected.

    ``must_exist`` is for commands that read a board: a missing SQLite file is then a
    :class:`NoBoardError` instead of a new, empty board, and ``:memory:`` (which never holds
    anything to read) is refused. A PostgreSQL board cannot be checked without connecting, and
    connecting waits for the first read: a database without a board then reads as an empty board
    (its tables are created), while an unreachable server, an unknown database or a refused login
    is a :class:`~flock_cli.errors.BoardUnavailableError` at that first read.

    Every mistake is a :class:`UsageError`: an unsupported scheme, a malformed URL, a PostgreSQL
    board without the ``postgres`` extra, a path that cannot be a SQLite board.
    """
    if is_database_url(target):
        return _postgres(target)
    if target == MEMORY:
        if must_exist:
            raise NoBoardError("':memory:' holds no board to read; use a board file or URL")
        from flock_cli.store.memory import InMemoryBlackboardStore

        return InMemoryBlackboardStore()
    if must_exist and not Path(target).exists():
        raise NoBoardError(f"no board at {target}")
    return _sqlite(target)


def _sqlite(path: str) -> BlackboardStore:
    import sqlite3

    from flock_cli.store.sqlite import SQLiteBlackboardStore

    try:
        return SQLiteBlackboardStore(path)
    except (sqlite3.Error, OSError) as exc:
        damage = board_damage(exc, path)
        raise UsageError(
            damage
            or f"cannot open the board {path}: {exc} (is it a directory, another kind of file, or read-only?)"
        ) from None


def board_damage(exc: BaseException, path: str | None) -> str | None:
    """What to say when SQLite found the board file at ``path`` damaged (SQLITE_CORRUPT: a bad page,
    which SQLite reports only when a query reaches it), or None for any other error."""
    import sqlite3

    corrupt = getattr(exc, "sqlite_errorname", None) == "SQLITE_CORRUPT"
    if not isinstance(exc, sqlite3.DatabaseError) or not corrupt:
        return None
    where = f"the board {path}" if path else "the board"
    salvage = f"sqlite3 {path} .recover | sqlite3 recovered.db" if path else "sqlite3's .recover"
    return f"{where} is damaged ({exc}). Restore it from a copy, or salvage what it holds with `{salvage}`"


def _postgres(url: str) -> BlackboardStore:
    scheme, sep, rest = url.partition("://")
    url = scheme.lower() + sep + rest  # libpq knows the schemes in lower case only
    try:
        import psycopg  # noqa: F401 - the store imports it when it connects: fail here, not there
    except ImportError as exc:  # not installed, or installed without a libpq it can load
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{POSTGRES_EXTRA} ({reason})") from None
    _check_url(url)
    from flock_cli.store.postgres import PostgresBlackboardStore

    return PostgresBlackboardStore(url)


def _check_url(url: str) -> None:
    """Refuse, before anything connects, a URL that libpq cannot parse, whose port is not one, or
    whose password libpq would read differently from the way it is shown hidden.

    libpq reads ``#`` as a plain character and ends the user part at the first ``@``, where URL
    parsers end the URL at ``#`` and the user part at the last ``@``: such a password could be
    printed in part by code that parses the URL the usual way, so it must be percent-encoded."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    def malformed(problem: str) -> UsageError:
        return UsageError(f"malformed board URL {redact(url)}: {problem}")

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if redact(url) != url:  # libpq quotes what it stopped at: the URL, or a piece of a password
            detail = re.sub(r'"[^"]*"', f'"{HIDDEN}"', detail)
        raise malformed(detail) from None
    if "#" in url:
        raise malformed("write '#' as %23 (a URL ends at '#')")
    _, _, password, rest = url_parts(url) or ("", "", None, "")
    in_query = any(is_password(p.partition("=")[0]) for p in rest.partition("?")[2].split("&"))
    misread = not in_query and unquote(password or "") != params.get("password", "")
    if password and (misread or "?" in password):  # (a ?password= parameter overrides the user part's)
        raise malformed("percent-encode '/', '?' and '@' in the user name and password (%2F, %3F, %40)")
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise malformed("a port is not a number from 1 to 65535")
