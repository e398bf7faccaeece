"""A flock serving its board: attaching (and resuming), watching, waiting for idle, shutting down.

Each way of waiting ends in the run summary of everything since the previous one, with every gate
still open explained (:mod:`flock_cli.core.stall`). ``Flock`` is the facade of these methods.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from flock_cli.core.stall import explain_pending
from flock_cli.core.summary import RunSummary
from flock_cli.errors import FlockClosedError, IdleTimeoutError, UsageError
from flock_cli.store.records import RunRecord

if TYPE_CHECKING:
    from flock_cli.core.dead_letters import DeadLetters
    from flock_cli.core.membership import Membership
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler
    from flock_cli.core.session import BoardSession

__all__ = ["Serving"]


class Serving:
    """Attach, watch, run until idle and shut down, for one Flock of role ``role``."""

    def __init__(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        session: BoardSession,
        letters: DeadLetters,
        role: str,
        membership: Membership | None = None,
    ) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self._session = session
        self._letters = letters
        self._role = role
        self._state = runtime.state
        self._membership = membership  # set on a board many processes share
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None  # made on the loop it serves

    async def ready(self) -> None:
        """Attach if not attached yet (every publish and run starts with this)."""
        await self.attach()  # binds to the running loop; a no-op once attached

    async def attach(self, *, force: bool = False) -> RunRecord:
        """Attach to the board and resume unfinished work (see ``Flock.attach``)."""
        if self._state.closed:
            raise FlockClosedError("This flock was shut down; it takes no new work.")
        self._orchestrator_only()
        self._scheduler.bind()
        session, membership = self._session, self._membership
        if session.run is not None and (membership is None or membership.joined):
            return session.run  # attached already: every publish passes here
        # One attach at a time. A caller that comes while an attach is under way (a publish beside
        # ``watch``, or several publishes gathered at start) waits for it rather than attaching
        # again: a second attach would record a second run, restore gates and batches over the
        # routing the first one already started, and register twice on a shared board.
        async with self._attach_lock():
            run = await session.attach(force=force)
            if membership is not None:
                await membership.join(session, force=force)
        return run

    def _attach_lock(self) -> asyncio.Lock:
        loop, lock = asyncio.get_running_loop(), self._lock
        if lock is None or self._lock_loop is not loop:  # a lock serves the loop it was made on
            lock = self._lock = asyncio.Lock()
            self._lock_loop = loop
        return lock

    def _orchestrator_only(self) -> None:
        if self._role != "orchestrator":
            raise UsageError("This flock is a publisher: it appends to the board and runs nothing")

    async def watch(
        self, *, poll_interval: float, stop: asyncio.Event | None, idle_exit: float | None
    ) -> RunSummary:
        """Route and run what other processes publish to the board (see ``Flock.watch``)."""
        await self.ready()
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not (stop is not None and stop.is_set()):
            # On a shared board the routing lock's holder routes, woken by notifications.
            found = 0 if self._membership is not None else await self._scheduler.poll_board()
            if found or self._scheduler.active:
                quiet_since = loop.time()
            elif idle_exit is not None and loop.time() - quiet_since >= idle_exit:
                break
            # Runs go on in the background; partial batches wait for their size or ``within``
            # timer while serving, and are flushed when watching ends.
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_interval)
            else:
                await asyncio.sleep(poll_interval)
        if stop is None or not stop.is_set():
            await self._scheduler.settle("idle")
        return self.take_summary()

    async def run_until_idle(self, timeout: float | None) -> RunSummary:
        """Wait until nothing is queued, running or backing off (see ``Flock.run_until_idle``)."""
        if not self._state.closed and self._role == "orchestrator":
            await self.ready()
        try:
            async with asyncio.timeout(timeout):
                await self._scheduler.settle("idle")
                if self._membership is not None and self._membership.joined:
                    await self._settle_board()
        except TimeoutError:
            raise IdleTimeoutError(timeout or 0.0, self.take_summary()) from None
        return self.take_summary()

    async def _settle_board(self) -> None:
        """On a shared board: wait until the board has no work left that anyone could run
        (nothing pending, leased or unrouted) and this process runs nothing."""
        board = self._membership.board if self._membership is not None else None
        assert board is not None
        scheduler = self._scheduler
        while True:
            await scheduler.settle("idle")
            if scheduler.active == 0 and sum(await board.open_work()) == 0:
                return
            await asyncio.sleep(0.2)

    def take_summary(self) -> RunSummary:
        """The summary of everything since the previous one, with every open gate explained."""
        scheduler = self._scheduler
        embargoes = scheduler.pending_embargoes()
        pending = explain_pending(
            scheduler.router.pending(), self._runtime.agents, embargoes, in_flight=scheduler.active > 0
        )
        summary = scheduler.collector.build(pending, embargoes)
        scheduler.collector.reset()
        scheduler.iterations.clear()
        return summary

    async def shutdown(self, timeout: float | None, *, release_interrupted: bool, drain: bool) -> RunSummary:
        """Stop taking work and return the last summary (see ``Flock.shutdown``)."""
        scheduler = self._scheduler
        scheduler.bind()
        self._state.closed = True
        self._state.release_interrupted = release_interrupted
        membership = self._membership
        if membership is not None and membership.joined:
            membership.stop_leasing()  # the others carry on with the rest of the board's work
        try:
            async with asyncio.timeout(timeout):
                await (scheduler.settle("shutdown") if drain else scheduler.stop_starting("shutdown"))
        except TimeoutError:
            await scheduler.abort_runs()
        await scheduler.timers.stop()
        if membership is not None and membership.joined:
            await membership.leave()
        if not self._runtime.store.durable:  # a durable board offers embargoed artifacts again on resume
            for embargo in list(scheduler.embargoes.values()):
                await self._letters.keep_embargoed(embargo)
            scheduler.embargoes.clear()
        await self._session.finish()
        if self._runtime.tool_servers is not None:  # MCP server processes end with the flock
            await self._runtime.tool_servers.aclose()
        summary = self.take_summary()  # on a durable board it lists what still waits for an embargo
        scheduler.embargoes.clear()
        if not self._state.run_scopes:  # else the traced run closes the tracer when its block ends
            await asyncio.to_thread(self._runtime.tracer.close)
        return summary
