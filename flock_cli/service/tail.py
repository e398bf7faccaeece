"""Following the board from one process: :class:`BoardTail` polls the board by position for every
event stream of the process, and :class:`Notifier` wakes the streams when something arrives.

On a board many processes write, a lower position can commit after a higher one (PostgreSQL
takes a sequence value at insert, not at commit): the tail remembers such gaps for
``hole_grace`` seconds and takes their artifacts in when they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.store.contract import BlackboardStore

__all__ = ["BoardTail", "Notifier"]

log = logging.getLogger("flock_cli.service")


class Notifier:
    """Wakes every waiter when something new arrives (an event that is replaced once set)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake the current waiters."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Wait for the next notification, or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.next(), timeout)

    def next(self) -> Coroutine[Any, Any, Any]:
        """An awaitable of the next notification, bound now (a notification between this call
        and the first wait is not missed)."""
        return self._event.wait()


@dataclass(frozen=True, slots=True)
class _Seen:
    index: int  # the tail's own count of what it took in
    position: int
    artifact: Artifact


class BoardTail:
    """Follows the board's new artifacts for every stream of this process."""

    def __init__(
        self,
        store: BlackboardStore,
        notifier: Notifier,
        *,
        poll_s: float = 0.2,
        kept: int = 10_000,
        hole_grace: float = 30.0,
        batch: int = 1000,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._poll_s = poll_s
        self._hole_grace = hole_grace
        self._batch = batch
        self._kept: deque[_Seen] = deque(maxlen=kept)
        self.known: dict[UUID, int] = {}
        """The index of each artifact kept, by id (a stream holds a run event back until it has
        passed its inputs)."""
        self._holes: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._held = False
        self.cursor = 0
        """The highest position taken in."""
        self.count = 0
        """How many artifacts the tail took in (the index of the newest)."""
        self.polls = 0
        """How many polls of the board the tail finished."""
        self.started = asyncio.Event()
        self.problem: str | None = None
        """Why the tail cannot read the board now (None when it can)."""

    def wake(self, *, held: bool = False) -> None:
        """Poll now (this process just published, or a stream waits for the inputs of a run);
        ``held``: notify the streams after the poll even if it found nothing."""
        self._held = self._held or held
        self._wake.set()

    async def sync(self, timeout: float = 2.0) -> None:
        """Wait until a poll that began after this call has finished (what was committed before
        the call is then taken in), or ``timeout`` seconds."""
        target = self.polls + 2  # the poll going on now may have read before the call
        deadline = time.monotonic() + timeout
        while self.polls < target and time.monotonic() < deadline and self.problem is None:
            self.wake(held=True)
            await self._notifier.wait(0.05)

    hole_span = 1000
    """Widest gap the tail watches for late commits (wider ones are rolled-back transactions)."""

    def low_water(self) -> int | None:
        """Below the lowest gap that may still fill, or None when no gap is open."""
        return min(self._holes) - 1 if self._holes else None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the board until ``stop`` is set. A failed read is logged and retried (with a
        growing pause); ``problem`` says what failed until a read succeeds again."""
        pause = self._poll_s
        while not stop.is_set():
            try:
                if not self.started.is_set():
                    await self._start()
                taken = await self.poll()
            except Exception as exc:  # the board went away: streams wait, readiness says why
                if self.problem is None:
                    log.warning("flock serve: cannot follow the board: %s (retrying)", exc)
                self.problem = f"cannot follow the board: {exc}"
                pause = min(5.0, pause * 2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                continue
            if self.problem is not None:
                log.warning("flock serve: following the board again")
            self.problem, pause = None, self._poll_s
            if taken < self._batch:
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                _, pending = await asyncio.wait(
                    waiters, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()

    async def _start(self) -> None:
        """Start at the board's head, watching the positions just below it: a transaction that
        took one of them may still commit."""
        head = await self._store.head()
        below = max(0, head - self.hole_span)
        present = {p for p, _ in await self._store.feed(below, limit=self.hole_span)}
        now = time.monotonic()
        self._holes = {p: now for p in range(below + 1, head + 1) if p not in present}
        self.cursor = head
        self.started.set()

    async def poll(self) -> int:
        """Take in what is new; returns how many artifacts."""
        self._held = False
        rows = await self._store.feed(self.cursor, limit=self._batch, also=sorted(self._holes))
        now = time.monotonic()
        for position, artifact in rows:
            if position in self._holes:
                del self._holes[position]
            elif position > self.cursor:
                # Positions between are not visible yet: a transaction that took them may still
                # commit (or it rolled back, and they stay empty until the grace ends).
                for missing in range(max(self.cursor + 1, position - self.hole_span), position):
                    self._holes[missing] = now
                self.cursor = position
            else:
                continue  # seen already
            self.count += 1
            if len(self._kept) == self._kept.maxlen:
                self.known.pop(self._kept[0].artifact.id, None)
            self._kept.append(_Seen(self.count, position, artifact))
            self.known[artifact.id] = self.count
        for position, since in list(self._holes.items()):
            if now - since > self._hole_grace:
                del self._holes[position]
        self.polls += 1
        if rows or self._held:
            self._notifier.notify()
        return len(rows)

    def since(self, index: int) -> list[_Seen] | None:
        """What the tail took in after its ``index``-th artifact, or None when some of it is no
        longer kept (the caller reads the board instead)."""
        if index >= self.count:
            return []
        if not self._kept or self._kept[0].index > index + 1:
            return None
        start = index + 1 - self._kept[0].index
        return list(itertools.islice(self._kept, start, None))
