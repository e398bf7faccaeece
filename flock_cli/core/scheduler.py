"""The scheduler: routes artifacts to subscriptions, turns ready runs into deliveries, runs them,
and knows when the flock is idle.

It owns everything bound to an event loop (the idle event, the routing lock, timers and run
tasks). ``bind()`` re-creates those when the flock is used from a new loop, as ``Flock.run()``
does on every call, and re-arms the timers that were lost with the old loop. Routing passes are
its base class (:mod:`flock_cli.core.routing`); this module holds the event loop, idle accounting
and the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.breaker import BreakerCounts
from flock_cli.core.dispatcher import Dispatcher, Job
from flock_cli.core.routing import Routing
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import Failure, LiveStatus, SummaryCollector
from flock_cli.core.timers import Timers
from flock_cli.errors import BoardConnectionError
from flock_cli.gc_policy import tune_for_runs
from flock_cli.store.contract import Delivery, StaleLeaseError

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime

__all__ = ["Runs", "Scheduler"]


class Runs(Protocol):
    """What the scheduler asks of the runner (:class:`~flock_cli.core.runner.RunExecutor`)."""

    async def attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool
    ) -> float | None:
        """One attempt at a delivery; the back-off delay when it should be retried."""
        ...

    async def abandon(self, agent: Agent, delivery: Delivery, run: ReadyRun, why: str) -> None:
        """Keep a run that was cancelled mid-flight."""
        ...

    async def leave(self, agent: str, delivery: Delivery, run: ReadyRun) -> None:
        """Keep a run the flock stopped before it started."""
        ...


class Scheduler(Routing):
    """Routing, dispatching and idle detection for one Flock.

    Built in two steps, since the runner and the board session need the scheduler too:
    ``connect`` hands it the runs it starts and how to rebuild gates and batches from the store.
    """

    _runs: Runs

    def __init__(self, runtime: Runtime, max_concurrency: int | None) -> None:
        super().__init__(runtime, SummaryCollector(), Timers(runtime, self.report_crash))
        self.dispatcher = Dispatcher(self._start_job, max_concurrency)
        self.iterations = BreakerCounts()  # runs per (agent, workflow), for the circuit breaker
        self.direct: dict[UUID, asyncio.Future[list[Artifact]]] = {}
        self.active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever a unit of work ends or waits in a queue
        self._stopping = asyncio.Event()  # set when the flock starts no new runs
        self._tasks: set[asyncio.Task[Any]] = set()

    def connect(self, runs: Runs, reload_gathering: Callable[[], Awaitable[object]]) -> None:
        """Hand the scheduler the runner of its jobs and the board session's ``reload_gathering``
        (called when a routing step failed to commit and memory may be ahead of the store)."""
        self._runs = runs
        self._reload_gathering = reload_gathering

    # -- the event loop --------------------------------------------------------------------------

    def bind(self) -> None:
        """Attach to the running event loop (re-creating loop-bound state after a loop change)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        first = self._loop is None
        if first:
            tune_for_runs()  # once per process: the collector suited to many small objects
        self._loop = loop
        self._idle = asyncio.Event()
        self._progress, self._stopping = asyncio.Event(), asyncio.Event()
        self._route_lock = asyncio.Lock()
        self._tasks = set()
        self.timers.rebind()
        if self.active:
            # Runs of a closed loop were cancelled with it; their work is reported, not pretended.
            self.report_crash(RuntimeError(f"{self.active} runs were abandoned when their event loop closed"))
            self.active = 0
        self._idle.set()
        if not first:
            self.rearm_timers()

    # -- idle accounting -------------------------------------------------------------------------

    def hold(self) -> None:
        """One more unit of work in flight."""
        self.active += 1
        self._idle.clear()

    def release(self) -> None:
        """One unit of work finished."""
        self.active -= 1
        self._progress.set()
        if self.active == 0:
            self._idle.set()

    async def stop_starting(self, flush_trigger: str) -> None:
        """Start no new runs: flush partial batches (their runs wait like the others), wait until
        every run in flight is over, then leave the waiting runs (``RunExecutor.leave``)."""
        self.dispatcher.paused = True
        self._stopping.set()
        while True:
            if any(b.units for b in self.router.batchers.values()):
                await self.flush_all(flush_trigger)
            if self.active <= self.dispatcher.queued:  # everything left is waiting for a slot
                break
            self._progress.clear()
            await self._progress.wait()
        await self.leave_queued()

    async def abort_runs(self) -> None:
        """Cancel every run in flight and leave the waiting ones (a shutdown that timed out)."""
        self.dispatcher.paused = True  # cancelled runs free slots: nothing may take them
        self._stopping.set()
        await self.cancel_runs()
        await self.leave_queued()

    async def wait_for_progress(self, timeout: float) -> None:
        """Wait until a unit of work ends (or waits in a queue), or ``timeout`` seconds pass."""
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)

    async def leave_queued(self) -> None:
        """Hand every queued run to ``RunExecutor.leave``: kept on a durable board, else a dead letter."""
        runs = self._runs
        for job in self.dispatcher.take_queued():
            delivery, run, _ = job.payload
            try:
                await runs.leave(job.agent or run.subscription.agent, delivery, run)
            finally:
                self.release()

    async def backoff(self, seconds: float) -> None:
        """Sleep before a retry, cut short when the flock stops (the retry then waits in the queue)."""
        if self._stopping.is_set():
            return
        sleeper = asyncio.ensure_future(self._runtime.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def settle(self, flush_trigger: str) -> None:
        """Wait until nothing is queued, running or backing off; flush partial batches on the way."""
        while True:
            await self._idle.wait()
            if any(b.units for b in self.router.batchers.values()):
                await self.flush_all(flush_trigger)
                continue
            if self.active == 0:
                return

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a tracked background task."""
        tasks = self._tasks
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def report_crash(self, error: BaseException) -> None:
        """Record an exception that escaped a background task (a runtime bug or a broken store)."""

        self.collector.failures.append(
            Failure(
                agent="<runtime>",
                error_type=type(error).__name__,
                error=str(error),
                stage="runtime",
                attempts=0,
                artifact_ids=[],
            )
        )

    async def cancel_runs(self) -> None:
        """Cancel every run task (a shutdown that timed out)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> LiveStatus:
        """What runs and waits now, and the counters of the current summary period."""
        by_queue = self.dispatcher.queued_by_queue()
        queued = {name: by_queue.pop(name, 0) for name in self._runtime.agents}
        # what is left waits for any member of an exclusive group
        queued.update((f"group {name}", count) for name, count in by_queue.items())
        return self.collector.live(dict(self.dispatcher.running_by_agent), queued)

    # -- running ---------------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        self.hold()  # released once, when the job's run is over
        self.dispatcher.submit(job)

    def _starts_at_once(self, candidates: Iterable[str]) -> bool:
        return self.dispatcher.starts_at_once(candidates)

    def resume_delivery(self, delivery: Delivery, artifacts: list[Artifact]) -> bool:
        """Dispatch a delivery found pending in the store (after a restart) to the agents that may
        take it: for an exclusive group, only the members that can see its artifacts and accept
        them, as when it was routed. False when no agent may take it (nothing is dispatched)."""
        agent_subs: dict[str, Subscription] = {}
        if delivery.agent.startswith("group:"):
            agent_subs = dict(self.router.group_members(delivery.agent.removeprefix("group:")))
        else:
            agent = self._runtime.agent(delivery.agent)
            agent_subs = {agent.name: agent.subscriptions[delivery.subscription]}
        agent_subs = self.router.eligible(artifacts, agent_subs, self._runtime.clock.now())
        if not agent_subs:
            return False
        first = next(iter(agent_subs.values()))
        groups, at = [], 0
        for size in delivery.group_sizes:
            groups.append(artifacts[at : at + size])
            at += size
        run = ReadyRun(first, artifacts, groups, delivery.batch_trigger)
        self._start(self._job(delivery, run, agent_subs))
        return True

    def _start_job(self, job: Job) -> None:
        self.spawn(self._run_job(job))

    async def _run_job(self, job: Job) -> None:
        assert job.agent is not None
        agent = self._runtime.agents[job.agent]
        delivery, run, members = job.payload
        sub = members[agent.name]
        if sub is not run.subscription:  # a group member took a run another member claimed
            run = ReadyRun(sub, run.artifacts, run.groups, run.batch_trigger)
        first_try = not job.started
        job.started = True
        resubmitted = False
        runs = self._runs
        try:
            try:
                retry_in = await runs.attempt(agent, delivery, run, count_run=first_try)
            finally:
                self.dispatcher.finished(agent.name)
            if retry_in is not None:
                await self.backoff(retry_in)  # without holding a slot
                self.dispatcher.submit(job)
                resubmitted = True  # the job stays counted as active work
                self._progress.set()
        except asyncio.CancelledError:
            await runs.abandon(agent, delivery, run, "cancelled at shutdown")
            raise
        except (StaleLeaseError, BoardConnectionError) as error:
            # Handing the delivery back (a retry's release, a dead letter) found it taken over,
            # or the board unreachable past its reconnect limit: the run's lease is gone or
            # lapses, and the delivery runs again where it is leased next. Not a failure here.
            self.collector.leases_lost += 1
            self.resolve_direct(delivery.id, error=error)
        except Exception as error:
            self.report_crash(error)
            self.resolve_direct(delivery.id, error=error)
        finally:
            if not resubmitted:
                self.release()  # exactly once per job, whatever happened

    def resolve_direct(
        self, delivery_id: UUID, outputs: list[Artifact] | None = None, error: BaseException | None = None
    ) -> None:
        """Settle the future of a direct (``arun``) delivery, if there is one."""
        future = self.direct.get(delivery_id)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outputs or [])
