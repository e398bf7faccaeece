"""Opening the DuckDB trace store without ever showing its lock to a user.

DuckDB lets one process hold a database file for writing, and while it does, no other process can
open the file at all, not even read-only (research/backend.md, §5). So Flock-Flow keeps the file
open no longer than it must: the writer opens it for each batch (about 50 ms every half second)
and readers open it for each query. Whoever finds it locked waits a little and tries again; the
waits are short because every Flock-Flow holder lets go within milliseconds. Outside readers (a
notebook, a dashboard) may hold it for minutes: the writer then hands its batches to the spool
(``spool.py``) rather than wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from flock_cli.errors import TraceStoreBusyError, TraceStoreError

if TYPE_CHECKING:
    import duckdb

__all__ = ["DEFAULT_TRACE_PATH", "attach", "check_trace_path", "connect", "is_lock_error", "unusable"]

DEFAULT_TRACE_PATH = Path(".flock") / "traces.duckdb"

# DuckDB's own wording: another process holds the file, or this process opened it differently.
# (A bare "lock" would also match paths like ".flock/traces.duckdb" in unrelated errors.)
_LOCK_MARKERS = ("could not set lock", "conflicting lock", "different configuration")
_MAGIC = b"DUCK"
T = TypeVar("T")


def check_trace_path(path: Path, *, must_exist: bool = False) -> None:
    """Refuse paths that cannot hold a trace store, before any thread or DuckDB import.

    Raises TraceStoreError for a directory, a file that is not a DuckDB database, or (with
    ``must_exist``) a missing file.
    """
    if path.is_dir():
        raise TraceStoreError(f"trace store {path} is a directory; give a file path")
    if not path.exists():
        if must_exist:
            raise TraceStoreError(f"no trace store at {path}: run a recipe first, or pass --traces")
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except OSError as exc:
        raise TraceStoreError(f"trace store {path} cannot be read: {exc.strerror or exc}") from exc
    if not head:
        head = _once_created(path)
    if not head:  # DuckDB makes no store of an empty file (it refuses to open it), nor do we
        raise TraceStoreError(
            f"{path} is an empty file, not a DuckDB trace store; remove it or give another path"
        )
    if head[8:12] != _MAGIC:
        raise TraceStoreError(f"{path} is not a DuckDB trace store")


def _once_created(path: Path, patience: float = 1.0) -> bytes:
    """The first bytes of ``path``, given up to ``patience`` seconds to appear: a store another
    process is creating is an empty file for the moment between DuckDB creating it and writing
    its header (12 KB, within milliseconds), and a reader polling for it (``flock top``, a
    script) must not be told to remove it."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with path.open("rb") as handle:
                head = handle.read(12)
        except OSError:
            return b""
        if head:
            return head
    return b""


def unusable(path: Path) -> str | None:
    """Why the store at ``path`` cannot be opened, other than another process holding it (a
    damaged file), or None: it opens, or it is only busy."""
    try:
        connect(path, read_only=True, wait=0).close()
    except TraceStoreBusyError:
        return None
    except TraceStoreError as exc:
        return str(exc)
    return None


def is_lock_error(exc: BaseException) -> bool:
    """True when DuckDB refused a connection because another connection holds the file."""
    import duckdb

    if not isinstance(exc, duckdb.IOException | duckdb.ConnectionException):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


STORAGE_VERSION = "v1.0.0"
"""The storage format new trace stores are written in: what DuckDB 1.0 and every later release
read, so that the DuckDB shells users have (pip's, distributions') open the store. The writer's
own default (DuckDB 2.0's format) is readable only by DuckDB 2.0 and later."""


def connect(
    path: Path, *, read_only: bool, wait: float, config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the store, waiting up to ``wait`` seconds while others hold it.

    Raises TraceStoreBusyError when the wait runs out, TraceStoreError when the file is unusable.
    """
    import duckdb

    settings = dict(config or {})
    if not read_only:
        settings.setdefault("storage_compatibility_version", STORAGE_VERSION)
    return _waiting(path, wait, lambda: duckdb.connect(str(path), read_only=read_only, config=settings))


def attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, *, wait: float) -> None:
    """Attach the store at ``path`` read-only to ``con`` as ``alias``, with the waits and errors
    of :func:`connect`."""
    quoted, name = str(path).replace("'", "''"), alias.replace('"', '""')
    _waiting(path, wait, lambda: con.execute(f"ATTACH '{quoted}' AS \"{name}\" (READ_ONLY)"))


def _waiting(path: Path, wait: float, open_once: Callable[[], T]) -> T:
    import duckdb

    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return open_once()
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise TraceStoreError(f"trace store {path} cannot be opened: {_first_line(exc)}") from exc
            if time.monotonic() >= deadline:
                raise TraceStoreBusyError(
                    f"trace store {path} stayed busy for {wait:g} s (other flock processes hold it)"
                ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
