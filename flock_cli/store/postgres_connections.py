"""The PostgreSQL board's connections: a small pool that survives event-loop changes, and the
reconnect-and-retry rule for a database that goes away for a while.

psycopg_pool's ``AsyncConnectionPool`` is bound to the event loop that opened it and can only be
closed from that loop. A Flock is used from several loops (``Flock.run`` makes one per call), so
the board keeps its own pool: idle connections in a list, a semaphore for the size, and on a loop
change the old loop's connections are closed at the libpq level (which needs no loop).

When the server restarts or a connection is cut (``pg_terminate_backend``, a network loss), the
broken connection is thrown away and a new one is made, with back-off, for up to
``reconnect_timeout`` seconds; then the operation is tried again if it is safe to repeat (every
read, and every write whose outcome the caller can recognise, see ``PostgresBlackboardStore``).
Past the timeout, :class:`BoardConnectionError` says which board and why; a board that cannot be
reached when first used is a :class:`BoardUnavailableError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flock_cli.errors import BoardConnectionError, BoardUnavailableError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["ConnectionPool", "is_connection_error"]

log = logging.getLogger("flock_cli.board")


class _CleanupNoise(logging.Filter):
    """psycopg's "error ignored ..." warnings: a pipeline, transaction or rollback it could not
    close on a connection that is already gone. The pool says once that the board was lost and
    once that it is back; these, several lines each and one per connection, went to stderr
    unformatted (psycopg's logger has no handler). They go to the board's log at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("error ignored"):
            return True
        log.debug("psycopg: %s", " ".join(message.split()))
        return False


for _name in ("psycopg", "psycopg.transaction"):  # the loggers those warnings come from
    logging.getLogger(_name).addFilter(_CleanupNoise())

T = TypeVar("T")


def is_connection_error(error: BaseException) -> bool:
    """True for a lost or refused connection (worth a reconnect), False for an SQL error."""
    import psycopg

    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    # A server shutting down (admin_shutdown, crash_shutdown, cannot_connect_now): class 57P.
    sqlstate = getattr(error, "sqlstate", None) or ""
    return isinstance(error, psycopg.Error) and sqlstate.startswith(("57P", "08"))


class ConnectionPool:
    """Up to ``size`` autocommit connections to ``url``, each set to UTC."""

    def __init__(self, url: str, where: str, *, size: int, connect_timeout: float, reconnect_timeout: float):
        self.url = url
        self.where = where  # the URL with its password hidden, for messages
        self.size = size
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self._idle: list[AsyncConnection[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(size)
        self._closed = False
        self._open: set[AsyncConnection[Any]] = set()  # every connection made and not closed yet
        self._lost_at: float | None = None  # when the board was lost (said once per outage)
        self.regained_at: float | None = None  # when it was last back after an outage (monotonic)

    async def connect(self) -> AsyncConnection[Any]:
        """A new connection (not from the pool), or BoardUnavailableError at once if refused."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name=f"flock-flow pid {os.getpid()}",  # who is who in pg_stat_activity
            )
        except psycopg.Error as exc:
            raise BoardUnavailableError(f"cannot reach the board {self.where}: {_first_line(exc)}") from None
        self._open.add(conn)
        try:
            await conn.execute("SET TIME ZONE 'UTC'")
        except BaseException:
            self.discard(conn)
            raise
        return conn

    def discard(self, conn: AsyncConnection[Any]) -> None:
        """Close ``conn`` at once, without the event loop (it may be broken, mid-query, or made
        on a loop that is gone)."""
        self._open.discard(conn)
        conn.pgconn.finish()

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        for conn in self._idle:  # made on a loop that is gone: close them without one
            self.discard(conn)
        self._idle = []
        self._loop = loop
        self._slots = asyncio.Semaphore(self.size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection for one operation; a broken one is discarded, a good one goes back."""
        if self._closed:
            raise BoardUnavailableError(f"the board {self.where} is closed")
        self._bind()
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.connect()
            try:
                yield conn
            except BaseException:
                if _reusable(conn) and not self._closed:
                    self._idle.append(conn)
                else:  # broken, or cut off mid-query (a cancellation): never reuse it
                    self.discard(conn)
                raise
            if not _reusable(conn) or self._closed:
                self.discard(conn)
            else:
                self._idle.append(conn)

    async def run(self, operation: Callable[[AsyncConnection[Any], bool], Awaitable[T]]) -> T:
        """Run ``operation(conn, repeat)`` on a pooled connection. On a lost connection, reconnect
        with back-off until ``reconnect_timeout`` and run it again with ``repeat=True``: a write
        cut off at its commit may have happened, and the operation must recognise its own work
        (each store operation says how). Past the timeout, :class:`BoardConnectionError`."""
        deadline = time.monotonic() + self.reconnect_timeout
        delay, repeat = 0.05, False
        while True:
            try:
                async with self.connection() as conn:
                    result = await operation(conn, repeat)
                if self._lost_at is not None:
                    log.warning(
                        "the board %s is back after %.1f s", self.where, time.monotonic() - self._lost_at
                    )
                    self._lost_at, self.regained_at = None, time.monotonic()
                return result
            except BoardUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise BoardConnectionError(str(exc)) from None
                self._lost(exc)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._discard_idle()  # the others went with the same server
                self._lost(exc)
                repeat = True
                if time.monotonic() >= deadline:
                    raise BoardConnectionError(
                        f"lost the board {self.where} for over {self.reconnect_timeout:g} s:"
                        f" {_first_line(exc)}"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _lost(self, error: BaseException) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning(
                "lost the board %s (%s); reconnecting for up to %g s",
                self.where, _first_line(error), self.reconnect_timeout,
            )  # fmt: skip

    def _discard_idle(self) -> None:
        for conn in self._idle:
            self.discard(conn)
        self._idle = []

    async def close(self) -> None:
        """Close every connection this pool made (those in use too: the board is going away)."""
        self._closed = True
        idle, self._idle = self._idle, []
        same_loop = self._loop is asyncio.get_running_loop()
        for conn in idle:
            if same_loop:
                self._open.discard(conn)
                await _close(conn)
        for conn in list(self._open):
            self.discard(conn)


def _reusable(conn: AsyncConnection[Any]) -> bool:
    from psycopg.pq import TransactionStatus

    return not (conn.closed or conn.broken) and conn.info.transaction_status == TransactionStatus.IDLE


async def _close(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
