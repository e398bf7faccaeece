"""Status snapshots for the trace store: what a flock is doing right now.

``flock top`` shows them for a run in another process: runs going and queued per agent, the
concurrency in use, breaker counts, and the joins and batches still gathering. The trace writer
asks for one before each batch, from its own thread, so the snapshot is taken on the flock's
event loop (where that state lives) and handed back.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import TYPE_CHECKING, Any

from flock_cli.tracing.records import StatusRecord

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler

__all__ = ["pending_by_agent", "status_snapshot", "threadsafe_status"]


def status_snapshot(runtime: Runtime, scheduler: Scheduler) -> dict[str, Any]:
    """The flock's state now, as JSON-ready data (call on the flock's event loop)."""
    dispatcher = scheduler.dispatcher
    queued = dispatcher.queued_by_queue()
    highest = scheduler.iterations.highest_by_agent()  # the breaker counts per workflow
    agents = {
        name: {
            "running": dispatcher.running_by_agent.get(name, 0),
            "queued": queued.pop(name, 0),
            "limit": dispatcher._limits.get(name),
            "iterations": highest.get(name, 0),
        }
        for name in runtime.agents
    }
    batches = [
        {"agent": sub.agent, "subscription": sub.index, "items": len(batcher.units),
         "size": sub.batch.size if sub.batch else None}
        for sub, batcher in scheduler.router.batchers.items()
        if batcher.units
    ]  # fmt: skip
    return {
        "agents": agents,
        "groups_queued": queued,  # exclusive groups' queues
        "running": dispatcher.running,
        "max_concurrency": dispatcher.global_limit,
        "max_agent_iterations": runtime.max_agent_iterations,
        "pending_groups": [g.model_dump(mode="json") for g in scheduler.router.pending()],
        "batches": batches,
        "embargoed": len(scheduler.embargoes),
        "closed": runtime.state.closed,
    }


def pending_by_agent(scheduler: Scheduler) -> dict[str, int]:
    """Runs waiting for a slot per queue; safe from any thread (it reads a copy of the queues)."""
    queues = dict(scheduler.dispatcher._queues)  # one C-level copy: no resize mid-read
    return {name: len(queue) for name, queue in queues.items() if queue}


def threadsafe_status(runtime: Runtime, scheduler: Scheduler, timeout: float = 0.5) -> StatusRecord | None:
    """A snapshot taken on the flock's loop, for another thread; None when the loop is not running."""
    loop = scheduler._loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    result: concurrent.futures.Future[tuple[str | None, dict[str, Any]]] = concurrent.futures.Future()

    def take() -> None:
        try:
            scopes = runtime.state.run_scopes  # read on the loop, which is the only place they change
            result.set_result((scopes[-1].trace_id if scopes else None, status_snapshot(runtime, scheduler)))
        except Exception as exc:
            result.set_exception(exc)

    try:
        loop.call_soon_threadsafe(take)
        trace_id, snapshot = result.result(timeout)
    except (RuntimeError, concurrent.futures.TimeoutError):
        return None  # the loop closed meanwhile, or is too busy: the next batch tries again
    return StatusRecord(trace_id, time.time_ns(), os.getpid(), snapshot)
