"""What ``flock top`` shows of a shared board: its orchestrator processes and its open work.

A PostgreSQL board lists every orchestrator process working it (core/membership.py): host, pid,
heartbeat, whether it drains, and which one holds the routing lock. The store is asynchronous and
its connections belong to one event loop, so :class:`BoardReader` keeps a thread of its own with
its own loop: the dashboard's workers hand it one read per refresh and wait for the answer off the
UI thread, and the connections are reused from one refresh to the next.

A board that cannot be reached is not an error of the dashboard: the read returns the reason,
which the panel shows, and the next refresh tries again. So a lost server is not waited for (the
store would otherwise reconnect for a minute before answering).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.text import Text

from flock_cli.errors import FlockError, printable

if TYPE_CHECKING:
    from flock_cli.store.postgres_shared import ProcessRecord, SharedBoardMixin

__all__ = ["BoardReader", "BoardSnapshot", "process_rows", "work_line"]

CLOSE_WAIT = 5.0
"""Seconds closing waits for the board's connections to close before leaving them to the OS."""


@dataclass(frozen=True)
class BoardSnapshot:
    """One read of the board: its live processes, oldest first, and its open work (``pending``
    and ``leased`` deliveries, artifacts not routed yet); or ``error``, why it could not be read."""

    processes: tuple[ProcessRecord, ...] = field(default_factory=tuple)
    pending: int = 0
    leased: int = 0
    unrouted: int = 0
    error: str | None = None


class BoardReader:
    """Reads a shared board (``store.shared``) for ``flock top``, on a thread and loop of its own.

    Args:
        store: the board, not yet connected; the reader owns it from now on and closes it.
        stale_after: seconds after which a heartbeat shows as stale: the board's lease TTL, past
            which the other processes reap the process as dead.
    """

    def __init__(self, store: SharedBoardMixin, *, stale_after: float) -> None:
        self.store = store
        self.where = store.where
        self.stale_after = stale_after
        # One refresh is one try: the dashboard's next refresh is the retry, so a lost server is
        # reported at once instead of after the store's reconnect timeout.
        store.pool.reconnect_timeout = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flock-top-board", daemon=True)
        self._thread.start()
        self._busy = threading.Lock()
        self._closed = False

    def read(self) -> BoardSnapshot | None:
        """Read the board once (blocking: call it off the UI thread). None when a read is already
        under way (a slow board is not asked again meanwhile) or the reader is closed."""
        if self._closed or not self._busy.acquire(blocking=False):
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
            try:
                return future.result()
            except concurrent.futures.CancelledError:  # closed while reading
                return None
        finally:
            self._busy.release()

    async def _read(self) -> BoardSnapshot:
        import psycopg

        try:
            processes = await self.store.processes()
            pending, leased, unrouted = await self.store.open_work()
        except (FlockError, psycopg.Error) as exc:  # unreachable, refused, a schema it cannot read
            return BoardSnapshot(error=_first_line(exc))
        return BoardSnapshot(tuple(processes), pending, leased, unrouted)

    def close(self) -> None:
        """Stop reading (a read under way is cancelled), close the connections, end the thread.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout=CLOSE_WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_WAIT)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        reads = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        await self.store.close()


def process_rows(
    snapshot: BoardSnapshot, now_s: float, stale_after: float
) -> list[tuple[str, list[str | Text]]]:
    """The processes panel's rows, keyed by owner: host, pid, owner, role, leases, heartbeat age
    and state. The age is ``now_s`` (seconds since the epoch) minus the UTC heartbeat; one older
    than ``stale_after`` is *stale*: the process stopped beating and is about to be reaped."""
    rows: list[tuple[str, list[str | Text]]] = []
    for p in snapshot.processes:
        age = max(0.0, now_s - p.heartbeat_at.timestamp())  # a clock a little ahead is not "-1s"
        stale = age > stale_after
        if stale:
            state = Text("stale", style="bold red")
        elif p.draining:
            state = Text("draining", style="yellow")
        else:
            state = Text("live", style="green")
        role = Text("leader", style="bold cyan") if p.leader else Text("member", style="dim")
        beat = Text(_age(age), style="red" if stale else "")
        # Text, not str: a DataTable reads a string as markup, and these come from the board
        host, owner = Text(printable(p.host)), Text(printable(p.owner))
        rows.append((p.owner, [host, str(p.pid), owner, role, str(p.leases), beat, state]))
    return rows


def work_line(snapshot: BoardSnapshot | None, where: str) -> Text:
    """The line above the processes: the board's open work, or why it could not be read."""
    if snapshot is None:
        return Text(f"reading {where}…", style="dim")
    if snapshot.error is not None:
        return Text(snapshot.error, style="bold red")
    line = Text.assemble(
        ("open work ", "dim"),
        f"{snapshot.pending} pending  {snapshot.leased} leased  {snapshot.unrouted} unrouted",
    )
    if not snapshot.processes:
        line.append("  no orchestrator process works this board", style="yellow")
    elif not any(p.leader for p in snapshot.processes):
        line.append("  nobody holds the routing lock", style="yellow")
    return line


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
