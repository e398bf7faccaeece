"""The SQLite board's group commit: the writes of one event-loop turn committed together.

Each write is a function of the connection. Writes queued during one turn run at its end in one
short ``BEGIN IMMEDIATE … COMMIT`` inside a single callback, so the write lock is never held
across other code and never upgraded mid-transaction (no SQLITE_BUSY halfway through). The batch
runs optimistically, without savepoints; when one write fails, the batch is rolled back and run
again with each write in a savepoint of its own, so that only the failing one is lost. Each
write's caller resumes, with its result or its error, once the commit is done. A writer thread
was measured and rejected: GIL hand-offs made it slower.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["GroupCommit", "Write"]

Write = Callable[[sqlite3.Connection], Any]
"""One write: it runs inside the group's transaction and returns its caller's result."""

_Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]
_Queued = tuple[Write, bool, "asyncio.Future[Any]"]


class GroupCommit:
    """The write queue of one SQLite connection (the board's ``_write``, ``sync`` and ``close``)."""

    def __init__(self, conn: sqlite3.Connection, where: Path) -> None:
        self._conn = conn
        self._where = where
        self.closed = False
        self._queue: list[_Queued] = []
        self._unsynced: list[asyncio.Future[Any]] = []  # routing steps, waited for by ``sync``

    @property
    def queued(self) -> int:
        """Writes waiting for the end of this loop turn."""
        return len(self._queue)

    def write(self, write: Write, *, single: bool = False) -> asyncio.Future[Any]:
        """Queue a write; the future resolves to its result once it is committed.

        ``single=True`` marks a one-statement write, which SQLite already makes atomic: it needs
        no savepoint when the batch is replayed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.closed:  # a straggler (a cancelled run's last write): fail it, never touch the file
            future.set_exception(sqlite3.ProgrammingError(f"the board {self._where} is closed"))
            return future
        self._queue.append((write, single, future))
        if len(self._queue) == 1:
            loop.call_soon(self.flush)
        return future

    def write_step(self, write: Write) -> None:
        """Queue a routing step: its caller goes on at once, and :meth:`sync` waits for it."""
        self._unsynced.append(self.write(write))

    async def sync(self) -> None:
        """Wait until every routing step queued so far has committed (raising the first failure)."""
        pending, self._unsynced = self._unsynced, []
        if len(pending) == 1:  # the usual case (one routing pass): no gathering future
            await pending[0]
        elif pending:
            await asyncio.gather(*pending)

    def flush(self) -> None:
        """Commit what is queued now (at the end of the loop turn, or when the board closes)."""
        batch, self._queue = self._queue, []
        if not batch:
            return
        conn = self._conn
        try:
            try:
                outcomes = _commit(conn, batch, isolated=False)
            except _WriteFailed:
                # Replay the batch, each write in a savepoint of its own, so that only the failing
                # one rolls back: failures are rare, and a savepoint costs two statements per write.
                outcomes = _commit(conn, batch, isolated=True)
        except sqlite3.Error as exc:  # the transaction as a whole failed (lock timeout, disk)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, _, future in batch]
        for future, value, error in outcomes:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def close(self) -> None:
        """Commit what is queued; later writes fail (the connection is about to close)."""
        self.flush()
        self.closed = True


class _WriteFailed(Exception):
    """A write of an optimistic group commit failed; the transaction was rolled back."""


def _commit(conn: sqlite3.Connection, batch: list[_Queued], *, isolated: bool) -> list[_Outcome]:
    """One ``BEGIN IMMEDIATE … COMMIT`` of every queued write.

    Optimistic (``isolated=False``): the writes run one after the other with no savepoints; the
    first that fails rolls the whole transaction back and raises :class:`_WriteFailed`, so the
    caller replays the batch isolated. Writes are functions of the connection alone, so running
    them again after the rollback gives the same result. Isolated: each write with several
    statements runs in a savepoint, and a failing one rolls back alone.
    """
    outcomes: list[_Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    for write, single, future in batch:
        if isolated:
            outcomes.append((future, *_apply(conn, write, single)))
            continue
        try:
            outcomes.append((future, write(conn), None))
        except Exception:
            conn.execute("ROLLBACK")
            raise _WriteFailed from None
    conn.execute("COMMIT")
    return outcomes


def _apply(conn: sqlite3.Connection, write: Write, single: bool) -> tuple[Any, BaseException | None]:
    """Run one queued write inside the open transaction; a failing write rolls back alone."""
    if single:
        try:
            return write(conn), None
        except Exception as exc:
            return None, exc
    conn.execute("SAVEPOINT write")
    try:
        value = write(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO write")
        conn.execute("RELEASE write")
        return None, exc
    conn.execute("RELEASE write")
    return value, None
