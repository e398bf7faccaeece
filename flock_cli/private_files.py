"""Files that hold artifact payloads are readable by their owner only.

The board (SQLite) and the trace store (DuckDB) keep the full payload of every artifact, private
and tenant-scoped ones included, so whoever can read the files sees everything. They are created
owner-only (files 0600, folders 0700) whatever the umask; files and folders that exist keep the
mode they have (an operator may have opened them to a group on purpose).

SQLite creates its ``-wal`` and ``-shm`` files with the mode of the database file, so creating that
file first is enough. DuckDB refuses an empty file and creates its WAL and temporary files with
the process's umask, so every DuckDB connection that may write runs inside :func:`owner_only_umask`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "create_private_file", "make_private_dirs", "owner_only_umask"]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_private_dirs(path: Path) -> None:
    """Create the folder ``path`` and any missing parents, each owner-only; existing ones are left
    as they are. Raises OSError as ``mkdir`` does."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode goes through the umask, which may remove more


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty and owner-only unless it exists; True when this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    os.chmod(path, FILE_MODE)  # as for folders: the umask may have taken more than it should
    return True


@contextlib.contextmanager
def owner_only_umask() -> Iterator[None]:
    """Within the block, files and folders this process creates are owner-only (umask 077).

    The umask belongs to the process, so other threads creating files meanwhile get owner-only
    ones too: stricter, never looser. Only trace-store writes use it (the ingest process, and
    ``flock trace prune``), where no other thread creates files.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
