"""Timers: actions run after a delay of the flock's clock, and the embargoes that wait on them.

An embargo lifting, a join window closing and a partial batch timing out are timers. They do not
hold the flock busy (``run_until_idle`` returns while they wait), a timer that fires after
``shutdown`` does nothing, and a new event loop re-arms them (``Scheduler.bind``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flock_cli.core.artifact import Artifact
from flock_cli.core.subscription import Subscription

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime

__all__ = ["Embargo", "Timers"]


@dataclass(eq=False)
class Embargo:
    """An artifact that will be offered to ``claim`` (an agent, or an exclusive group shared by
    several agents) when its embargo lifts, through ``subscriptions`` (every subscription of the
    agent or its group's members that the embargo held back; they are offered together, in one
    routing step, so the artifact is claimed once)."""

    artifact: Artifact
    claim: str
    subscriptions: list[Subscription]
    lifts_at: datetime


class Timers:
    """The pending timers of one flock, on its clock; an action that raises is reported."""

    def __init__(self, runtime: Runtime, report_crash: Callable[[BaseException], None]) -> None:
        self._runtime = runtime
        self._report_crash = report_crash
        self._tasks: set[asyncio.Task[Any]] = set()

    def rebind(self) -> None:
        """Forget the timers of a closed event loop (they were lost with it)."""
        self._tasks = set()

    def after(self, delay: float, action: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``action(*args)`` after ``delay`` seconds of the flock's clock; timers do not hold idle."""
        runtime = self._runtime

        async def timer() -> None:
            await runtime.clock.sleep(delay)
            if runtime.state.closed:
                return
            try:
                await action(*args)
            except Exception as error:
                self._report_crash(error)

        coro, tasks = timer(), self._tasks
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def stop(self) -> None:
        """Cancel every pending timer (at shutdown)."""
        for timer in list(self._tasks):
            timer.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
