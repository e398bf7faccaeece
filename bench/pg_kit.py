"""A throwaway PostgreSQL server for the benchmarks, so that they need no server set up.

It is the test suite's server (tests/postgres_server.py): a cluster of its own in a temporary
folder, listening on a free port of 127.0.0.1 only, gone when the benchmark ends however it ends.
Each measured run gets a fresh database (:func:`fresh_database`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.postgres_server lives in the repository, not the package

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer


@contextlib.contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    """Start a server for the benchmark; exit with the reason when psycopg or the binaries are missing."""
    from tests.postgres_server import PostgresServer, PostgresUnavailable, find_binaries, require_psycopg

    try:
        require_psycopg()
        binaries = find_binaries()
    except PostgresUnavailable as exc:
        raise SystemExit(f"cannot run the PostgreSQL benchmarks: {exc}") from None
    server = PostgresServer.create(binaries)
    try:
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database, dropped afterwards."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
