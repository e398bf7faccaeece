"""A flock's membership of a shared board: one of many orchestrator processes on one PostgreSQL
board (``store.shared``).

Each member process:

* **registers** itself (host, pid, definition fingerprint) and is refused when a live member runs
  a different definition, unless forced;
* **beats**: every ``lease_ttl / 3`` seconds it renews the leases it holds and stamps its
  heartbeat, in one transaction, and reaps members whose heartbeat is older than ``lease_ttl``
  (their leases become pending again; their attempt numbers fence any late completion);
* **competes for work**: woken by ``LISTEN/NOTIFY`` (or a slow catch-up poll), it leases the next
  deliveries of its agents up to its free capacity, ``FOR UPDATE SKIP LOCKED``, and runs them;
* **routes while it leads**: the member holding the board's routing lock routes every artifact
  (published by anyone, or output by any member's run), keeps the gates, batches, embargoes and
  their timers, and commits its routing steps on the lock's own connection. A member that takes
  the lock over rebuilds that state from the board first, exactly as a resume does;
* **drains** when it stops: it takes no new leases, finishes (or, when told, hands back) what it
  holds, gives the routing lock up and leaves the list of members; the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from flock_cli.core.session import ResumeRefusedError, fingerprint
from flock_cli.errors import BoardConnectionError
from flock_cli.store.contract import UNRESTRICTED

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler
    from flock_cli.store.contract import DeadLetterReason, Delivery
    from flock_cli.store.postgres_shared import SharedBoardMixin

__all__ = ["DEFAULT_CAPACITY", "Membership", "Restoring"]

# What an operator wants to know as it happens (takeovers, leadership): `flock run` shows it.
log = logging.getLogger("flock_cli.board")

DEFAULT_CAPACITY = 32
"""Deliveries one member leases at most at a time when the flock sets no ``max_concurrency``
(otherwise the first member to wake would lease every pending delivery of the board)."""

CATCH_UP_POLL = 2.0
"""Seconds between looks for work and unrouted artifacts when no notification came (a member
that was reconnecting may have missed one)."""


class Restoring(Protocol):
    """What a member that takes the routing lock over asks of the board session."""

    async def restore_routing(self) -> None:
        """Rebuild gates and batches from the board, re-arm timers, route what waits."""
        ...

    async def orphan(
        self, delivery: Delivery, why: str, reason: DeadLetterReason = "failed", attempt: int | None = None
    ) -> None:
        """Keep a delivery no agent here may take as a dead letter."""
        ...


class Membership:
    """One flock's part in a shared board (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        preleased: dict[Any, int],
        held_leases: Callable[[], list[UUID]],
    ) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self._preleased = preleased  # delivery id -> attempt, leased here and not started yet
        self._held_leases = held_leases  # the deliveries this process works on: heartbeats renew these
        self._tasks: list[asyncio.Task[None]] = []
        self._session: Restoring | None = None
        self.draining = False
        self.joined = False
        self.heartbeat = max(0.05, runtime.lease_ttl / 3)

    @property
    def board(self) -> SharedBoardMixin:
        return self._runtime.store  # type: ignore[return-value]  # shared stores only

    async def join(self, session: Restoring, *, force: bool) -> None:
        """Register, check definitions, then start beating, listening, leading and leasing."""
        if self.joined:
            return
        from flock_cli.store.postgres_shared import ProcessRecord, this_host

        runtime, board = self._runtime, self.board
        now = runtime.clock.now()
        await self._reap(now)
        mine = fingerprint(runtime.agents.values())
        others = [p for p in await board.processes() if p.fingerprint != mine and p.owner != runtime.owner]
        if others and not force:
            names = ", ".join(f"{p.host} pid {p.pid} ({p.fingerprint})" for p in others)
            raise ResumeRefusedError(
                f"The board {board.where} is worked by orchestrators of a different definition"
                f" (this one is {mine}; {names}). Start this one with the same recipe, or force it"
                " (--force) to work beside them."
            )
        if others:
            log.warning(
                "forced to join orchestrators of a different definition (this one is %s; %s):"
                " whichever process holds the routing lock routes every artifact by its own"
                " definition, so an agent it does not know is offered nothing it routes. Force a"
                " join for a rolling upgrade of one flow, not to run another recipe on this board.",
                mine, ", ".join(f"{p.host} pid {p.pid} ({p.fingerprint})" for p in others),
            )  # fmt: skip
        await board.register_process(
            ProcessRecord(
                owner=runtime.owner, host=this_host(), pid=os.getpid(), fingerprint=mine,
                started_at=now, heartbeat_at=now,
            )
        )  # fmt: skip
        self._session = session
        self.joined = True
        await board.listen()
        for loop in (self._beat, self._lead, self._work):
            self._tasks.append(asyncio.ensure_future(self._guarded(loop)))

    async def _guarded(self, loop: Any) -> None:
        """Run one of the member's loops; a failure is reported, and the loop starts again. A
        board still unreachable past its reconnect limit is not this process's failure: it is
        said (once per loop and outage) and the loop goes on trying, its runs' leases lapsing
        meanwhile for whoever reaches the board first."""
        said_after: float | None = -1.0  # the outage said: the time the board was last regained before it
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except BoardConnectionError as exc:
                regained = self.board.pool.regained_at
                if said_after != regained:
                    log.warning("%s; still trying (%s)", exc, getattr(loop, "__name__", "a loop").strip("_"))
                    said_after = regained
            except Exception as exc:
                self._scheduler.report_crash(exc)
            await asyncio.sleep(1.0)

    # -- heartbeats ------------------------------------------------------------------------------

    async def _beat(self) -> None:
        from flock_cli.store.postgres_shared import ProcessRecord, this_host

        runtime, board = self._runtime, self.board

        async def beat(now: datetime) -> int | None:
            return await board.heartbeat(
                runtime.owner, now=now, ttl=runtime.lease_ttl, held=self._held_leases(),
                draining=self.draining,
            )  # fmt: skip

        while True:
            await asyncio.sleep(self.heartbeat)
            asked = runtime.clock.now()
            held = await beat(asked)
            now = runtime.clock.now()
            if held is not None and (now - asked).total_seconds() > self.heartbeat:
                # The board answered late (its connections were reconnecting): the time just
                # written is as old as the wait, and a member reaping now would take this
                # process for dead. Stamp the time it is now, before anyone looks.
                held = await beat(now)
                now = runtime.clock.now()
            if held is None:  # reaped as dead (a long pause, a cut network): join again
                log.warning(
                    "this process was taken for dead (no heartbeat for over %g s) and joins the"
                    " board again; the runs it held were handed to others, and their results here"
                    " will be refused",
                    runtime.lease_ttl,
                )
                await board.register_process(
                    ProcessRecord(
                        owner=runtime.owner, host=this_host(), pid=os.getpid(),
                        fingerprint=fingerprint(runtime.agents.values()), started_at=now, heartbeat_at=now,
                        draining=self.draining,
                    )
                )  # fmt: skip
            await self._reap(now)

    async def _reap(self, now: datetime) -> None:
        """Take back the leases of members whose heartbeat stopped, and say so; not within a
        lease TTL of this process getting the board back after losing it: the other members
        lost it too, and their heartbeats come back up to a reconnect back-off later than ours
        (reaping them then took live members for dead after every outage)."""
        runtime = self._runtime
        regained = self.board.pool.regained_at
        if regained is not None and time.monotonic() - regained < runtime.lease_ttl:
            return
        for gone in await self.board.reap(now=now, stale_after=runtime.lease_ttl):
            silent = (now - gone.heartbeat_at).total_seconds()
            log.warning(
                "%s pid %d stopped beating %.0f s ago: its %d lease(s) are pending again for any"
                " process to take",
                gone.host, gone.pid, silent, gone.leases,
            )  # fmt: skip
            # Its last heartbeat says how long the process lived: flock trace groups its run with
            # the runs it overlapped while alive (board_runs.py), though it wrote nothing lately.
            runtime.tracer.event(
                "board.reaped", owner=gone.owner, host=gone.host, pid=gone.pid, leases=gone.leases,
                heartbeat_ns=_epoch_ns(gone.heartbeat_at),
            )  # fmt: skip

    # -- routing leadership ----------------------------------------------------------------------

    async def _lead(self) -> None:
        from flock_cli.store.postgres_shared import ARTIFACTS

        board, scheduler = self.board, self._scheduler
        while not self.draining:
            if not board.leading or not scheduler.restored:
                if not board.leading:
                    scheduler.restored = False  # nothing is routed here until the state is rebuilt
                    if scheduler.router.holds_state() or scheduler.embargoes:
                        await scheduler.drop_routing_state()  # another member routes now: forget ours
                    await board.wait_to_lead(self._runtime.owner)  # PostgreSQL queues the waiters
                assert self._session is not None
                try:
                    await self._session.restore_routing()
                except Exception:
                    # A leader that cannot rebuild the routing state routes nothing: let another
                    # member lead meanwhile (the failure is reported, and this loop tries again).
                    await board.resign()
                    raise
                log.info("this process routes the board's artifacts now (it holds the routing lock)")
                self._runtime.tracer.event("board.leading", owner=self._runtime.owner)
            token = board.wake_token(ARTIFACTS)
            await scheduler.poll_board()  # artifacts appended by anyone
            await board.wait_for_wakeup(token, CATCH_UP_POLL)

    # -- competing for work ----------------------------------------------------------------------

    def capacity(self) -> int:
        """How many more deliveries this member may lease now."""
        scheduler = self._scheduler
        limit = self._runtime.max_concurrency or DEFAULT_CAPACITY
        return limit - scheduler.dispatcher.running - scheduler.dispatcher.queued

    def targets(self) -> list[str]:
        """The queues this member serves: its agents, and the exclusive groups they belong to."""
        router = self._scheduler.router
        names = [name for name, agent in self._runtime.agents.items() if agent.subscriptions]
        groups = [f"group:{g}" for g in router.shared_groups()]
        return names + groups

    async def _work(self) -> None:
        from flock_cli.store.postgres_shared import WORK

        board, runtime = self.board, self._runtime
        while not self.draining:
            token = board.wake_token(WORK)
            free = self.capacity()
            if free <= 0:
                # Full: look again when a run ends. The look at the capacity and the start of the
                # wait are one step, so runs that ended while the last lease was being taken (their
                # slots are free already) are leased for at once, not when yet another run ends.
                await self._scheduler.wait_for_progress(CATCH_UP_POLL)
                continue
            leased = await board.lease_next(
                runtime.owner, self.targets(), limit=free, now=runtime.clock.now(), ttl=runtime.lease_ttl
            )
            await self._dispatch(leased)
            if len(leased) < free:  # the board had no more for this member: wait for new work
                await board.wait_for_wakeup(token, CATCH_UP_POLL)

    async def _dispatch(self, leased: list[Delivery]) -> None:
        if not leased:
            return
        wanted = [i for d in leased for i in d.artifact_ids]
        artifacts = {a.id: a for a in await self.board.get_many(wanted, viewer=UNRESTRICTED)}
        for delivery in leased:
            inputs = [artifacts[i] for i in delivery.artifact_ids if i in artifacts]
            self._preleased[delivery.id] = delivery.attempts
            if not self._scheduler.resume_delivery(delivery, inputs):
                self._preleased.pop(delivery.id, None)
                assert self._session is not None
                await self._session.orphan(
                    delivery,
                    "no agent that may take this delivery can see all of its artifacts now",
                    reason="denied",
                    attempt=delivery.attempts,
                )

    # -- leaving ---------------------------------------------------------------------------------

    def stop_leasing(self) -> None:
        """Take no new leases (the first step of draining)."""
        self.draining = True
        for task in self._tasks[1:]:  # keep beating: the leases still held must stay ours
            task.cancel()

    async def leave(self) -> None:
        """After the runs are over: hand back leases not started, resign, leave the members."""
        self.stop_leasing()
        board, runtime = self.board, self._runtime
        for delivery_id, attempt in list(self._preleased.items()):
            with contextlib.suppress(Exception):
                await board.release(delivery_id, attempt)
            self._preleased.pop(delivery_id, None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await board.resign()
        with contextlib.suppress(Exception):
            await board.unregister_process(runtime.owner)
        self.joined = False


def _epoch_ns(moment: datetime) -> int:
    """A time (timezone-aware) in nanoseconds since the epoch, as the trace store keeps times."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
