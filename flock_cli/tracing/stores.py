"""Several trace stores read as one, and the store each process writes in a shared folder.

Every flock process writes a trace store of its own (DuckDB lets one process write a file at a
time, and a store per process means no process ever waits for another's writes). Readers take
any number of them: a file, a folder (every ``*.duckdb`` in it) or a glob, given once or more.

Writing: a ``traces`` path that is an existing folder, or that ends with ``/``, makes the process
write ``<host>-<pid>.duckdb`` inside it, so processes on one machine, or on several sharing the
folder, never contend for one file.

Reading several: an in-memory DuckDB attaches every store read-only (a database of its own, so
connections never share attachments, nor meet another connection's settings for the same file);
the tables ``runs``, ``spans``, ``artifacts``, ``events``, ``status`` and ``meta`` become
temporary views, ``UNION ALL`` over every store that has them, with one more column, ``store``,
naming the file each row came from, and the ``v_*`` views of ``schema.py`` are made over those.
Every query of :class:`~flock_cli.tracing.reader.TraceReader` and every ``flock trace sql`` query
then runs unchanged over all of them. The first store becomes
the default database, so a query's unqualified ``CREATE`` or ``INSERT`` meets a read-only store,
and external access is turned off before any query runs: a query reaches these files and no
others.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flock_cli.errors import TraceStoreError
from flock_cli.tracing import schema
from flock_cli.tracing.duck import attach, check_trace_path

if TYPE_CHECKING:
    import duckdb

__all__ = ["STORE_PATTERN", "is_folder", "open_stores", "process_store", "resolve_stores", "writes_folder"]

STORE_PATTERN = "*.duckdb"
_GLOB = re.compile(r"[*?\[]")


def writes_folder(named: str | os.PathLike[str]) -> bool:
    """Whether a ``traces`` path names a folder to write a per-process store in: an existing
    folder, or a path written with a trailing separator (the folder is then created)."""
    text = os.fspath(named)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def process_store(folder: Path) -> Path:
    """The store this process writes in ``folder``: ``<host>-<pid>.duckdb``."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname()) or "host"
    return folder / f"{host}-{os.getpid()}.duckdb"


def is_folder(path: Path) -> bool:
    """Whether ``path`` stands for several stores (a folder or a glob) rather than one file."""
    return path.is_dir() or bool(_GLOB.search(str(path)))


def resolve_stores(names: Sequence[Path]) -> list[Path]:
    """The store files ``names`` stand for, in order, each once: a file as it is (whether it exists
    is checked when it is opened), a folder as every ``*.duckdb`` in it, a glob as the files it
    matches. A folder or a glob that gives none raises TraceStoreError."""
    found: list[Path] = []
    for name in names:
        if _GLOB.search(str(name)):
            matches = sorted(Path(m) for m in glob.glob(str(name)) if Path(m).is_file())
            if not matches:
                raise TraceStoreError(f"no trace store matches {name}")
            found += matches
        elif name.is_dir():
            matches = sorted(p for p in name.glob(STORE_PATTERN) if p.is_file())
            if not matches:
                raise TraceStoreError(f"no trace stores ({STORE_PATTERN}) in the folder {name}")
            found += matches
        else:
            found.append(name)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def open_stores(paths: Sequence[Path], *, wait: float) -> duckdb.DuckDBPyConnection:
    """One read-only connection over every store in ``paths`` (see the module's docstring),
    waiting up to ``wait`` seconds for each one a writer holds. Raises TraceStoreError for a
    store that is missing or cannot be read."""
    import duckdb

    for path in paths:
        check_trace_path(path, must_exist=True)
    con = duckdb.connect(":memory:")
    try:
        aliases = [f"flock_store_{i}" for i in range(len(paths))]
        for alias, path in zip(aliases, paths, strict=True):
            attach(con, path, alias, wait=wait)
        present: dict[str, list[tuple[str, Path]]] = {table: [] for table in schema.TABLES}
        rows = con.execute("SELECT database_name, table_name FROM duckdb_tables() WHERE schema_name = 'main'")
        tables = set(rows.fetchall())
        for alias, path in zip(aliases, paths, strict=True):
            for table in schema.TABLES:
                if (alias, table) in tables:
                    present[table].append((alias, path))
        for table, sources in present.items():
            if sources:  # a table no store has yet stays missing, as in a store not written to yet
                union = " UNION ALL BY NAME ".join(
                    f"SELECT *, {_literal(str(path))} AS store FROM {_ident(alias)}.main.{table}"
                    for alias, path in sources
                )
                con.execute(f"CREATE TEMP VIEW {table} AS {union}")
        for statement in schema.view_ddl(temporary=True):  # the v_* views, over the union
            # Its tables (or columns) in none of the stores yet: the view is left out.
            with contextlib.suppress(duckdb.Error):
                con.execute(statement)
        con.execute(f"USE {aliases[0]}")
        con.execute("SET enable_external_access = false")
    except BaseException:
        con.close()
        raise
    return con


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
