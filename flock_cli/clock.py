"""Injectable time and identifiers.

The runtime never reads the wall clock or generates ids directly: it asks a :class:`Clock` and an
id factory. Production uses :class:`SystemClock` and :func:`uuid.uuid4`; tests inject
:class:`ManualClock` (time moves only when told to) and :class:`SequentialIds`, so join windows,
embargoes and retry back-off are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "IdFactory", "ManualClock", "SequentialIds", "SystemClock", "random_uuid4"]

IdFactory = Callable[[], uuid.UUID]
"""A zero-argument callable returning a fresh UUID."""


class Clock(Protocol):
    """What the runtime needs from time."""

    def now(self) -> datetime:
        """Current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock: wall time and :func:`asyncio.sleep`."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when the test says so.

    ``await clock.advance(5)`` moves time forward and wakes every sleeper whose deadline passed, in
    deadline order. With ``auto_advance=True`` a sleep returns at once after moving time forward by
    its duration, which suits code paths (retry back-off) that should not block a test.
    """

    def __init__(self, start: datetime | None = None, *, auto_advance: bool = False) -> None:
        self._now = start or datetime(2025, 1, 1, tzinfo=UTC)
        self.auto_advance = auto_advance
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced past ``now + seconds``."""
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        if self.auto_advance:
            self._now += timedelta(seconds=seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and let the woken sleepers run."""
        for _ in range(5):  # let just-created tasks reach their sleep first
            await asyncio.sleep(0)
        target = self._now + timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            # Let the woken task run before later deadlines fire, as real time would.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)

    @property
    def pending_sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())


class SequentialIds:
    """Deterministic UUIDs: 00000000-0000-4000-8000-000000000001, …002, … ."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def __call__(self) -> uuid.UUID:
        """The next id."""
        return uuid.UUID(int=(0x4000 << 64) | (0x8 << 60) | next(self._counter))


_VERSION_4 = (0x4 << 76) | (0x2 << 62)
_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_id_rng = random.Random()


def _reseed() -> None:
    _id_rng.seed(os.urandom(32))


_reseed()
os.register_at_fork(after_in_child=_reseed)  # a forked child must not repeat its parent's ids


def random_uuid4() -> uuid.UUID:
    """A random version-4 UUID from a PRNG seeded by the OS (re-seeded after fork).

    About twice as fast as :func:`uuid.uuid4`, which makes a system call per id. Ids only need to be
    unique, not unpredictable: 122 random bits make a collision practically impossible.
    """
    # What UUID(int=...) does, minus its argument checks (the value is in range by construction):
    # three ids per agent run made the checks about 2 % of a no-LLM pipeline's time.
    made = _new_object(uuid.UUID)
    _set_attribute(made, "int", (_id_rng.getrandbits(128) & _CLEAR) | _VERSION_4)
    _set_attribute(made, "is_safe", _UNKNOWN_SAFETY)
    return made


_new_object = object.__new__
_set_attribute = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown  # an enum member read through a descriptor: read once
