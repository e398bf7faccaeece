"""A flock's session on its board: the run record, resume after a crash, and the definition
fingerprint that keeps a resume from mixing two different workflows.

On first use a Flock *attaches* to its store:

1. earlier runs still marked ``running`` are checked: one whose process is alive on this machine
   means another orchestrator owns the board (refused); a dead one is marked ``crashed`` and the
   leases it held are released (their attempt numbers stay, so its late completions are fenced);
2. if the board holds unfinished work (pending deliveries, gate or batch entries, unrouted
   artifacts) left by a run with a different definition fingerprint, resuming is refused unless
   forced;
3. gates and batches are rebuilt from their stored entries, pending deliveries are dispatched,
   unrouted artifacts are routed, and embargoed artifacts are offered again (claims make that
   idempotent).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import socket
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel

from flock_cli.core.router import NO_KEY, sub_key, typed_loader
from flock_cli.core.visibility import AfterVisibility
from flock_cli.errors import UserError
from flock_cli.store.contract import UNRESTRICTED, DeadLetter, DeadLetterReason, Delivery, DeliveryStatus
from flock_cli.store.records import RunRecord

if TYPE_CHECKING:
    from flock_cli.core.agent import Agent
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.scheduler import Scheduler

__all__ = ["BoardBusyError", "BoardSession", "ResumeRefusedError", "fingerprint"]


class BoardBusyError(UserError):
    """Another live orchestrator is running on this board."""


class ResumeRefusedError(UserError):
    """The board holds unfinished work of a different workflow definition."""


def _describe(value: Any) -> Any:
    """A stable, JSON-friendly description (callables by qualified name, never by address)."""
    if isinstance(value, BaseModel):
        return {"class": type(value).__qualname__, **{k: _describe(v) for k, v in value.__dict__.items()}}
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_describe(v) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if callable(value):
        name = getattr(value, "__qualname__", type(value).__qualname__)
        return f"{getattr(value, '__module__', '')}.{name}:{_source_hash(value)}"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    described = getattr(value, "fingerprint_description", None)
    if callable(described):
        return {"class": type(value).__qualname__, "description": _describe(described())}
    text = repr(value)
    if _ADDRESS.search(text):  # a default repr names a memory address: it differs in every process
        return f"{type(value).__module__}.{type(value).__qualname__}"
    return text


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


_SOURCE_HASHES: dict[Any, str] = {}
"""Source hashes by code object: ``inspect.getsource`` tokenizes the function's whole block, and a
flock often holds many closures of one function (100 agents' predicates cost 70 ms to describe)."""


def _source_hash(value: Any) -> str:
    code = getattr(value, "__code__", None)
    known = _SOURCE_HASHES.get(code) if code is not None else None
    if known is not None:
        return known
    try:
        source = inspect.getsource(value).strip()
    except (OSError, TypeError):
        source = ""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    if code is not None:
        _SOURCE_HASHES[code] = digest
    return digest


def fingerprint(declared: Iterable[Agent]) -> str:
    """A hash of everything that decides what a flock of these agents does with an artifact."""
    agents = []
    for agent in declared:
        agents.append(
            {
                "name": agent.name,
                "description": agent.description,
                "subscriptions": [
                    {
                        "types": list(s.type_names),
                        "where": _describe(list(s.where)),
                        "from_agents": _describe(s.from_agents),
                        "channels": _describe(s.channels),
                        "join": _describe(s.join),
                        "batch": _describe(s.batch),
                        "delivery": s.delivery,
                        "group": s.group,
                        "mode": s.mode,
                        "priority": s.priority,
                    }
                    for s in agent.subscriptions
                ],
                "outputs": [[o.type_name, _describe(o.visibility), o.count] for o in agent.outputs],
                "engines": _describe(agent.engines),
                "utilities": _describe(agent.utilities),
                "best_of": [agent.best_of_n, _describe(agent.best_of_score)],
                "calls": _describe(agent.calls_func),
                "labels": sorted(agent.labels),
                "tenant": agent.tenant_id,
                "retry": _describe(agent.retry_policy),
                "self_trigger": agent.prevent_self_trigger,
            }
        )
    text = json.dumps(agents, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_LIVE: weakref.WeakValueDictionary[str, BoardSession] = weakref.WeakValueDictionary()
"""Sessions of this process's flocks attached to some board, by owner id (gone when the flock is)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BoardSession:
    """Attaches one Flock to its store and records its run."""

    def __init__(self, runtime: Runtime, scheduler: Scheduler) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self.run: RunRecord | None = None
        self.resumed: dict[str, int] = {}

    async def attach(self, *, force: bool = False) -> RunRecord:
        """Check earlier runs, record this one, and restore unfinished work (see module docstring)."""
        if self.run is not None:
            return self.run
        runtime, store = self._runtime, self._runtime.store
        now = runtime.clock.now()
        host, pid = socket.gethostname(), os.getpid()
        runs = await store.runs()
        for earlier in runs:
            # On a shared board other orchestrators run legitimately; the dead ones are found by
            # their heartbeats instead (core/membership.py).
            if earlier.status != "running" or store.shared:
                continue
            same_process_live = earlier.pid == pid and earlier.owner in _LIVE
            if earlier.host == host and (same_process_live or (earlier.pid != pid and _alive(earlier.pid))):
                raise BoardBusyError(
                    f"Another orchestrator (pid {earlier.pid}, run {earlier.id}) is running on this board;"
                    " stop it first, or publish to the board instead of running a second orchestrator."
                )
            await store.release_leases(earlier.owner)
            await store.save_run(earlier.model_copy(update={"status": "crashed", "ended_at": now}))
        mine = fingerprint(runtime.agents.values())
        if store.shared:
            pass  # the live members' definitions are compared when joining (core/membership.py)
        elif runs and runs[-1].fingerprint != mine and not force and await self._unfinished():
            raise ResumeRefusedError(
                f"This board holds unfinished work of a different workflow definition (fingerprint"
                f" {runs[-1].fingerprint}, now {mine}). Resume with the original definition, or attach"
                " with force=True to let the new definition take the remaining work."
            )
        _LIVE[runtime.owner] = self
        self.run = RunRecord(
            id=runtime.new_id(),
            fingerprint=mine,
            owner=runtime.owner,
            pid=pid,
            host=host,
            started_at=now,
            heartbeat_at=now,
        )
        await store.save_run(self.run)
        if store.shared:
            # Work comes by lease; gathering state is restored when this process takes the routing lock.
            pass
        elif store.durable or runs:
            await self._restore()
        return self.run

    async def _unfinished(self) -> bool:
        store = self._runtime.store
        return bool(
            await store.deliveries(status=DeliveryStatus.PENDING)
            or await store.gate_entries()
            or await store.batch_entries()
            or await store.unrouted(limit=1)
        )

    async def reload_gathering(self) -> tuple[int, int]:
        """Rebuild every gate and batch from the store's entries (after a restart, or after a
        routing step failed to commit and memory may be ahead of the store)."""
        store = self._runtime.store
        router = self._scheduler.router
        for gate in router.gates.values():
            gate.groups.clear()
        for batcher in router.batchers.values():
            batcher.units.clear()
        subs = {sub_key(s): s for agent in self._runtime.agents.values() for s in agent.subscriptions}
        gate_entries = await store.gate_entries()
        batch_entries = await store.batch_entries()
        wanted: list[UUID] = [e.artifact_id for e in gate_entries]
        wanted += [i for e in batch_entries for i in e.artifact_ids]
        artifacts = {a.id: a for a in await store.get_many(wanted, viewer=UNRESTRICTED)}
        for entry in gate_entries:
            sub, artifact = subs.get(entry.sub_key), artifacts.get(entry.artifact_id)
            if sub is None or artifact is None or sub not in router.gates:
                continue
            key = router.join_key(artifact, sub, typed_loader(artifact, sub.models[artifact.type]))
            if key is not NO_KEY:
                router.gates[sub].add(artifact, key, entry.arrived_at)
        for batch_entry in batch_entries:
            sub = subs.get(batch_entry.sub_key)
            if sub is not None and sub in router.batchers:
                router.batchers[sub].units.append(
                    [artifacts[i] for i in batch_entry.artifact_ids if i in artifacts]
                )
        return len(gate_entries), len(batch_entries)

    async def restore_routing(self) -> None:
        """What a process that takes a shared board's routing lock does first: rebuild gates and
        batches from the board, re-arm their timers, route what is unrouted, and offer embargoed
        artifacts again (claims make that idempotent)."""
        scheduler = self._scheduler
        await scheduler.drop_routing_state()
        gates, batches = await self.reload_gathering()
        scheduler.rearm_timers()
        scheduler.restored = True  # from now on this process routes (its own outputs too)
        routed = 0
        while found := await scheduler.poll_board():
            routed += found
        embargoed = await self._reoffer_embargoed()
        self.resumed = {
            "gate_entries": gates,
            "batch_entries": batches,
            "unrouted": routed,
            "embargoed": embargoed,
        }

    async def _reoffer_embargoed(self) -> int:
        store, scheduler = self._runtime.store, self._scheduler
        embargoed = [
            a
            for a in (await store.query(viewer=UNRESTRICTED)).items
            if isinstance(a.visibility, AfterVisibility)
        ]
        before = scheduler.active
        await scheduler.route(embargoed)
        # embargoed work offered again: runs it started (the embargo lifted) or still waiting
        return scheduler.active - before + len(scheduler.embargoes)

    async def _restore(self) -> None:
        store = self._runtime.store
        scheduler = self._scheduler
        gates, batches = await self.reload_gathering()
        pending = await store.deliveries(status=DeliveryStatus.PENDING)
        wanted = [i for d in pending for i in d.artifact_ids]
        artifacts = {a.id: a for a in await store.get_many(wanted, viewer=UNRESTRICTED)}
        for delivery in pending:
            if not self._runnable(delivery):
                await self.orphan(delivery, "the resumed definition no longer has this agent or subscription")
                continue
            inputs = [artifacts[i] for i in delivery.artifact_ids if i in artifacts]
            if not scheduler.resume_delivery(delivery, inputs):
                await self.orphan(
                    delivery,
                    "no agent that may take this delivery can see all of its artifacts now",
                    reason="denied",
                )
        scheduler.rearm_timers()
        routed = 0
        while found := await scheduler.poll_board():  # a page at a time, until none is left
            routed += found
        self.resumed = {
            "gate_entries": gates,
            "batch_entries": batches,
            "deliveries": len(pending),
            "unrouted": routed,
            "embargoed": await self._reoffer_embargoed(),
        }

    def _runnable(self, delivery: Delivery) -> bool:
        agents = self._runtime.agents
        if delivery.agent.startswith("group:"):
            return bool(self._scheduler.router.group_members(delivery.agent.removeprefix("group:")))
        agent = agents.get(delivery.agent)
        return agent is not None and delivery.subscription < len(agent.subscriptions)

    async def orphan(
        self, delivery: Delivery, why: str, reason: DeadLetterReason = "failed", attempt: int | None = None
    ) -> None:
        """A delivery the resumed definition cannot run (its agent or subscription was dropped, or
        no agent that may see its artifacts can take it): keep it as a dead letter. ``attempt``
        is the lease held on it (leased from a shared board), else it is pending."""
        runtime, store = self._runtime, self._runtime.store
        letter = DeadLetter(
            id=runtime.new_id(),
            agent=delivery.agent,
            artifact_ids=delivery.artifact_ids,
            reason=reason,
            error=why,
            stage="resume",
            created_at=runtime.clock.now(),
            delivery_id=delivery.id,
            subscription=delivery.subscription,
        )
        await store.bury(delivery.id, attempt, letter)
        self._scheduler.collector.dead.append(letter)

    async def finish(self) -> None:
        """Mark this run finished (at shutdown)."""
        _LIVE.pop(self._runtime.owner, None)
        if self.run is not None:
            now = self._runtime.clock.now()
            self.run = self.run.model_copy(
                update={"status": "finished", "ended_at": now, "heartbeat_at": now}
            )
            await self._runtime.store.save_run(self.run)
