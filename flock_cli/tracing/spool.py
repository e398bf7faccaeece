"""The trace spool: batches the store could not take yet, kept in files until someone can.

DuckDB lets one process write a database file, and none at all while any other process holds it
open, even read-only (a notebook, Grafana, the DuckDB shell). A writer that waited for such a
reader would hold the flock up; one that gave up would lose traces. So what cannot be written
now is handed off: each batch becomes one file in a folder beside the store (``<store>.spool/``),
and the next process that opens the store for writing writes the waiting files first, oldest
first: a flock's ingest process before its own batches, ``flock trace`` and ``flock top`` before
they read (``TraceReader``).

Layout: ``<store>.spool/<stamp>-<host>-<pid>-<n>.batch``, where ``stamp`` is the time in
nanoseconds, so names sort in the order the batches were made. A file holds a header (magic and
the CRC-32 of what follows) and one or more frames of :mod:`~flock_cli.tracing.frames`. Files
are written under a hidden temporary name, synced and renamed, so a file with a ``.batch`` name
is always complete; the folder and files are owner-only, like the store (they hold payloads).

Exactly once: an ingester first claims a file by renaming it to ``<name>.claim-<owner>`` (a
rename succeeds for one ingester only), then, in one transaction, checks the store's ``meta``
table for the key ``spooled`` with the file's name, writes the rows and records the name, and
deletes the file after the commit. An ingester killed before the commit leaves no rows; one
killed after it leaves a name the next one finds recorded, so the rows are never written twice.
A claim whose owner died (same host, process gone) or is older than ``STALE_CLAIM`` seconds is
taken over. A file that cannot be read (a disk error, a hand edit) is renamed ``<name>.bad`` and
reported; the others are written all the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from flock_cli.private_files import FILE_MODE, make_private_dirs
from flock_cli.tracing.frames import Item, encode_frame, read_frame

__all__ = [
    "META_KEY",
    "STALE_CLAIM",
    "Drained",
    "SpoolFileError",
    "being_written",
    "count_waiting",
    "drain",
    "log_problems",
    "notice",
    "read_batch",
    "spool_dir",
    "take_problems",
    "write_frames",
    "write_items",
]

META_KEY = "spooled"
"""The ``meta`` key under which the name of every ingested spool file is recorded."""
STALE_CLAIM = 600.0
"""Seconds after which a claim is taken over even when its owner cannot be seen to have died
(another host's process, or a process id reused since)."""

_BATCH = ".batch"
_CLAIM = ".claim-"
_BAD = ".bad"
_MAGIC = b"FLKSPL1\n"
_HEADER = struct.Struct(">8sI")  # magic, CRC-32 of the frames
_HOST = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname()) or "host"  # no dots: names split on them
_stamp_lock = threading.Lock()
_last_stamp = 0
_counter = 0


class SpoolFileError(Exception):
    """A spool file that cannot be ingested as it is (unreadable, truncated, or not trace records)."""


@dataclass
class Drained:
    """What one pass over a spool did: files written to the store, files still waiting after it
    (claimed by another ingester, past the budget, or left because the store failed), and what
    went wrong."""

    written: int = 0
    waiting: int = 0
    problems: list[str] = field(default_factory=list)


def spool_dir(store: Path) -> Path:
    """The spool folder of the trace store ``store``: ``<store>.spool`` beside it."""
    return store.with_name(store.name + ".spool")


_PROBLEMS = ".problems.log"  # what a detached ingest process could not say to its flock


def log_problems(store: Path, problems: list[str]) -> None:
    """Keep problems nobody is listening for (a flock's ingest process writing a hand-off after
    the flock ended) for the next reader to report (:func:`take_problems`)."""
    folder = spool_dir(store)
    with contextlib.suppress(OSError):
        make_private_dirs(folder)
        descriptor = os.open(folder / _PROBLEMS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        with os.fdopen(descriptor, "a", encoding="utf-8") as log:
            log.writelines(f"{' '.join(problem.split())}\n" for problem in problems)


def take_problems(store: Path) -> list[str]:
    """The problems :func:`log_problems` kept, once: the log is removed as it is read."""
    path = spool_dir(store) / _PROBLEMS
    taken = path.with_name(f"{_PROBLEMS}.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(path, taken)  # one reader takes them, whoever else looks at the same moment
    except OSError:
        return []
    try:
        return [line for line in taken.read_text(encoding="utf-8").splitlines() if line]
    except OSError:
        return []
    finally:
        with contextlib.suppress(OSError):
            taken.unlink()


def notice(store: Path, waiting: int) -> str:
    """The one line a reader shows while batches wait in the spool of ``store``."""
    return (
        f"{waiting} trace batches are waiting in {spool_dir(store)} (the store is held by another"
        " process); they are written when it is free"
    )


# -- writing -------------------------------------------------------------------------------------


def write_items(store: Path, items: list[tuple[Any, ...]]) -> Path:
    """Spool one batch of flattened records; returns the file. Raises OSError (the records are
    then not spooled)."""
    plain: list[Item] = [*items]
    return write_frames(store, [encode_frame(0, plain)])


def write_frames(store: Path, frames: list[bytes]) -> Path:
    """Spool frames (as :func:`~flock_cli.tracing.frames.encode_frame` made them) as one file,
    atomically and durably: when this returns, the file survives a crash; when it raises
    (OSError), no ``.batch`` file was made."""
    folder = spool_dir(store)
    make_private_dirs(folder)
    body = b"".join(frames)
    name = _new_name()
    temp = folder / f".{name}.tmp"  # hidden: never listed as waiting, even if left by a crash
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken more; never less
        view = memoryview(_HEADER.pack(_MAGIC, zlib.crc32(body)) + body)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)  # the data is on disk before the name says the file is complete
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    os.close(fd)
    target = folder / (name + _BATCH)
    os.rename(temp, target)
    _sync_folder(folder)  # ... and so is the rename
    return target


def _new_name() -> str:
    # Names sort in the order this process made them even if the clock steps back.
    global _last_stamp, _counter
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        _counter += 1
        return f"{_last_stamp:020d}-{_HOST}-{os.getpid()}-{_counter:06d}"


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder; the rename stands
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading -------------------------------------------------------------------------------------


def read_batch(path: Path) -> list[tuple[Any, ...]]:
    """The records of a spool file. Raises SpoolFileError when it is not a whole, unaltered one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpoolFileError(f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) < _HEADER.size:
        raise SpoolFileError("is truncated (no header)")
    magic, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if magic != _MAGIC:
        raise SpoolFileError("is not a trace spool file")
    if zlib.crc32(body) != crc:
        raise SpoolFileError("is damaged or truncated (checksum mismatch)")
    stream, items = BytesIO(body), []
    try:
        while stream.tell() < len(body):
            frame = read_frame(stream)
            if frame is None:
                raise SpoolFileError("is truncated (a partial frame)")
            items.extend(frame[2])
    except (ValueError, EOFError, TypeError) as exc:
        raise SpoolFileError(f"holds an unreadable frame: {exc}") from exc
    if not all(isinstance(item, tuple) and item for item in items):
        raise SpoolFileError("does not hold trace records")
    return items


def count_waiting(store: Path) -> int:
    """How many batches wait in the spool of ``store`` (0 when it has none, or cannot be read)."""
    return len(_listing(store))


def being_written(store: Path) -> bool:
    """Whether a live ingester holds a claim on a batch of the spool of ``store`` right now (a
    flock's ingest process writing what it handed off): a reader may wait for it."""
    claims = [path for _, path in _listing(store) if _CLAIM in path.name]
    return any(not _claim_is_stale(path, "") for path in claims)


def _listing(store: Path) -> list[tuple[str, Path]]:
    """The waiting files, ``(batch name, path)`` in batch order: unclaimed ones and claimed ones."""
    try:
        entries = os.listdir(spool_dir(store))
    except OSError:  # no spool (the usual case), or one this user cannot read
        return []
    found = []
    for entry in entries:
        if entry.startswith("."):
            continue
        if entry.endswith(_BATCH):
            found.append((entry[: -len(_BATCH)], spool_dir(store) / entry))
        elif _CLAIM in entry:
            found.append((entry.partition(_CLAIM)[0], spool_dir(store) / entry))
    return sorted(found)


# -- ingesting -----------------------------------------------------------------------------------


def drain(
    store: Path, write: Callable[[list[tuple[Any, ...]], str], bool], *, budget: float | None = None
) -> Drained:
    """Ingest every waiting file of the spool of ``store``, oldest first; with a ``budget``, no
    file but the first is started after that many seconds (the rest wait for the next pass: a
    long spool must not hold the store for long; a budget of 0 writes one file a pass).

    The caller holds the store open for writing. ``write(items, name)`` writes one file's records
    in one transaction that also records ``name`` under ``META_KEY`` (and writes nothing when the
    name is recorded already); it raises SpoolFileError when the records themselves are at fault,
    anything else when the store is (the pass then stops, leaving that file and later ones).
    """
    result = Drained()
    deadline = None if budget is None else time.monotonic() + budget
    _remove_stale_temporaries(store)
    listing = _listing(store)
    for index, (name, path) in enumerate(listing):
        if deadline is not None and index > 0 and time.monotonic() > deadline:
            result.waiting += len(listing) - index
            return result
        claimed = _claim(name, path)
        if claimed is None:  # another ingester has it
            result.waiting += 1
            continue
        try:
            written = write(read_batch(claimed), name)
        except SpoolFileError as exc:
            result.problems.append(_set_aside(claimed, name, str(exc)))
            continue
        except Exception as exc:
            # The store failed, not the file: it goes back for a later pass, in its place.
            with contextlib.suppress(OSError):
                os.rename(claimed, claimed.with_name(name + _BATCH))
            result.problems.append(
                f"writing spooled traces {name} to {store} failed: {type(exc).__name__}: {exc}"
            )
            result.waiting += len(listing) - index
            return result
        _delete(claimed)
        result.written += written  # (not when an earlier ingester wrote it and died before deleting)
    return result


def _claim(name: str, path: Path) -> Path | None:
    """Take ``path`` for this thread by renaming it; None when it is not free to take."""
    owner = f"{os.getpid()}.{threading.get_ident()}@{_HOST}"
    target = path.with_name(f"{name}{_CLAIM}{owner}")
    if path.name != name + _BATCH and not _claim_is_stale(path, owner):
        return None
    try:
        os.rename(path, target)  # atomic: of two ingesters, one renames and the other finds it gone
    except OSError:
        return None
    return target


def _claim_is_stale(path: Path, owner: str) -> bool:
    """Whether a claimed file may be taken over: its owner is gone, or has had it too long."""
    claimer = path.name.partition(_CLAIM)[2]
    if claimer == owner:
        return False  # this very thread: cannot be in two places
    process, _, host = claimer.partition("@")
    try:
        if time.time() - path.stat().st_ctime > STALE_CLAIM:  # a rename sets ctime
            return True
    except OSError:
        return False  # gone meanwhile: ingested by its owner
    if host != _HOST:
        return False  # another machine's process: only its age tells
    try:
        pid = int(process.partition(".")[0])
    except ValueError:
        return True  # not a claim this code made
    if pid == os.getpid():
        return False  # another thread of this process, still at it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def _set_aside(path: Path, name: str, reason: str) -> str:
    """Move an unreadable file out of the way (kept for a human to look at); the report."""
    target = path.with_name(name + _BAD)
    try:
        os.rename(path, target)
    except OSError as exc:
        return f"spooled traces {path} {reason}; it could not be moved aside: {exc.strerror or exc}"
    return f"spooled traces {path.with_name(name + _BATCH)} {reason}; moved aside as {target}"


def _delete(path: Path) -> None:
    """Remove an ingested file (its name is recorded in the store, so a leftover is harmless)."""
    with contextlib.suppress(OSError):
        path.unlink()


def _remove_stale_temporaries(store: Path) -> None:
    """Temporary files a spooling process left when it died mid-write: never complete, never
    acknowledged (their records were spooled again, or reported lost), so only clutter."""
    folder = spool_dir(store)
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if entry.startswith(".") and entry.endswith(".tmp"):
                path = folder / entry
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > STALE_CLAIM:
                        path.unlink()
