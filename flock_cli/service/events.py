"""What ``GET /v1/events`` streams: the board's artifacts as they appear, and this process's runs.

Two sources, one stream:

* :class:`BoardTail` follows the board by position (one poller per process, however many clients
  listen). Every process writing the board shows up here, so an API-only replica streams what the
  orchestrators elsewhere publish. On a board many processes write, a lower position can commit
  after a higher one; the tail remembers such gaps for ``hole_grace`` seconds and streams them
  when they fill.
* :class:`ActivityHub` keeps this process's agent runs (started, finished, failed), dead letters
  and streamed model text: they happen in memory, so a client sees those of the replica it is
  connected to.

An event id is ``<board position>:<hub epoch>:<hub number>``. A client that reconnects with
``Last-Event-ID`` gets every artifact after that position, from the board, whatever replica it
reaches; run events too when it reaches the same process (same epoch) and they are still kept.
The position is a low-water mark: while a gap below it may still fill (PostgreSQL), it stays
below the gap, so a resumed stream gets the gap's artifact, and may get again the few after it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.store.contract import ArtifactQuery

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.visibility import AgentIdentity
    from flock_cli.service.access import Access
    from flock_cli.service.tail import BoardTail, Notifier
    from flock_cli.store.contract import BlackboardStore
    from flock_cli.tracing.tracer import Activity, StreamChunk

__all__ = ["ActivityHub", "EventFilter", "EventStream"]

KEEPALIVE_S = 15.0
"""Seconds between comment lines on a quiet stream (proxies close idle connections)."""

HOLD_S = 2.0
"""Longest a run event waits for the tail to see its inputs (so that a client gets an artifact
before the runs it starts); after that it is sent anyway."""


@dataclass(frozen=True, slots=True)
class LocalEvent:
    """One run event of this process."""

    number: int
    kind: str
    data: dict[str, Any]
    inputs: tuple[Artifact, ...] = ()
    artifact_ids: tuple[UUID, ...] = ()
    """The artifacts of a dead letter (a viewer must be allowed all of them)."""
    at: float = 0.0
    """When it happened (Unix seconds): where it goes among artifacts a stream catches up on."""


class ActivityHub:
    """Keeps this process's recent run events (``Flock.on_activity`` and ``on_stream``)."""

    FORWARDED = frozenset({"run.started", "run.finished", "run.failed", "run.retry", "dead_letter"})

    def __init__(self, notifier: Notifier, kept: int = 10_000) -> None:
        self.epoch = secrets.token_hex(4)
        self.count = 0
        self._notifier = notifier
        self._kept: deque[LocalEvent] = deque(maxlen=kept)
        self._runs: dict[str, tuple[Artifact, ...]] = {}  # running run -> its inputs (for model text)

    def on_activity(self, activity: Activity) -> None:
        """Keep a run start or end, a retry or a dead letter."""
        if activity.kind not in self.FORWARDED:
            return
        data: dict[str, Any] = {"agent": activity.agent}
        if activity.run is not None:
            data["run"] = activity.run
        inputs = activity.inputs or self._runs.get(activity.run or "", ())  # a retry: its run's inputs
        if inputs:
            data["inputs"] = [str(a.id) for a in inputs]
            data["correlation_id"] = _text(inputs[0].correlation_id)
        data.update({k: _json_safe(v) for k, v in activity.attributes.items()})
        if activity.kind == "run.started" and activity.run is not None:
            self._runs[activity.run] = activity.inputs
        elif activity.kind in ("run.finished", "run.failed") and activity.run is not None:
            self._runs.pop(activity.run, None)
        ids: tuple[UUID, ...] = ()
        named = activity.attributes.get("artifacts")
        if isinstance(named, list | tuple) and named:
            ids = tuple(UUID(str(i)) for i in named)  # a dead letter's artifacts
        elif isinstance(activity.artifact_id, UUID):
            ids = (activity.artifact_id,)
        if ids:
            data["artifact_id"] = str(ids[0])
        self._add(activity.kind, data, inputs, ids)

    def on_stream(self, chunk: StreamChunk) -> None:
        """Keep a piece of streamed model text (shown to those who may see the run's inputs)."""
        inputs = self._runs.get(chunk.run, ())
        data = {"agent": chunk.agent, "run": chunk.run, "text": chunk.text, "done": chunk.done}
        if inputs:
            data["correlation_id"] = _text(inputs[0].correlation_id)
        self._add("model.text", data, inputs, ())

    def _add(
        self, kind: str, data: dict[str, Any], inputs: tuple[Artifact, ...], ids: tuple[UUID, ...]
    ) -> None:
        self.count += 1
        self._kept.append(LocalEvent(self.count, kind, data, inputs, ids, time.time()))
        self._notifier.notify()

    def since(self, number: int) -> list[LocalEvent]:
        """The kept events after ``number`` (older ones may have been dropped)."""
        if number >= self.count or not self._kept:
            return []
        start = max(0, number + 1 - self._kept[0].number)  # numbers are consecutive
        return list(itertools.islice(self._kept, start, None))


@dataclass
class EventFilter:
    """What a client asked to follow: one correlation id, some types (empty: all)."""

    correlation_id: UUID | None = None
    types: frozenset[str] = field(default_factory=frozenset)

    def query(self) -> ArtifactQuery:
        """The board query of the artifacts this filter follows."""
        return ArtifactQuery(correlation_id=self.correlation_id, types=self.types or None)


@dataclass
class _Cursor:
    position: int  # the low-water mark: every artifact up to it was sent (or is not for us)
    epoch: str
    number: int

    def text(self) -> str:
        return f"{self.position}:{self.epoch}:{self.number}"


def parse_event_id(text: str | None) -> tuple[int, str, int] | None:
    """``(position, epoch, number)`` of an event id, or None when it is not one of ours."""
    if not text:
        return None
    parts = text.strip().split(":")
    if len(text) > 80 or len(parts) != 3 or not all(_is_count(parts[i]) for i in (0, 2)):
        return None
    return int(parts[0]), parts[1], int(parts[2])


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdecimal() and len(text) <= 19


class EventStream:
    """The server-sent events of one client, until ``closing`` is set or it goes away."""

    def __init__(
        self,
        *,
        store: BlackboardStore,
        tail: BoardTail,
        hub: ActivityHub,
        notifier: Notifier,
        access: Access,
        viewer: AgentIdentity,
        operator: bool,
        wanted: EventFilter,
        last_event_id: str | None,
        after: int | None,
        closing: asyncio.Event,
        now: Callable[[], datetime],
    ) -> None:
        self._store, self._tail, self._hub, self._notifier = store, tail, hub, notifier
        self._access, self._viewer, self._operator = access, viewer, operator
        self._wanted, self._query = wanted, wanted.query()
        self._last_event_id, self._after = last_event_id, after
        self._closing, self._now = closing, now
        self._sent_high = 0  # the highest position sent
        self._sent: set[int] = set()  # positions sent at or below the tail's start (late fills)
        self._released: set[UUID] = set()  # inputs a run event no longer waits for
        self._pending: list[int] = []  # positions of a catch-up not sent yet

    async def events(self) -> AsyncIterator[str]:
        """The stream's text, frame by frame."""
        tail, hub = self._tail, self._hub
        if not await _first(tail.started, self._closing):
            yield _frame("0:-:0", "stream.closed", {"reason": "the server is shutting down"})
            return
        resumed = parse_event_id(self._last_event_id)
        if resumed is not None:
            position, epoch, number = resumed
            cursor = _Cursor(position, hub.epoch, number if epoch == hub.epoch else hub.count)
        else:
            # A client following one correlation gets it from its start; otherwise from now on.
            start = (
                self._after
                if self._after is not None
                else (0 if self._wanted.correlation_id else tail.cursor)
            )
            cursor = _Cursor(start, hub.epoch, hub.count)
        self._cursor = cursor
        self._sent_high = cursor.position
        yield "retry: 1000\n\n"
        # A client following one workflow from its start gets the run events this process still
        # holds too, placed among the artifacts by time (it may have published before it asked).
        # The tail first takes in what was committed before them, so each run's inputs are there.
        from_start = resumed is None and self._wanted.correlation_id is not None
        if from_start:
            await tail.sync()
        held = hub.since(0) if from_start else []
        index, upto = tail.count, tail.cursor
        self._upto = upto
        snapshot = hub.count
        if held:
            cursor.number = held[0].number - 1  # ids count up through the merge below
        caught: list[tuple[float, int, Any]] = [(e.at, 1, e) for e in held]
        async for position, artifact in _board_since(self._store, cursor.position, upto, self._query):
            if held:
                caught.append((artifact.created_at.timestamp(), 0, (position, artifact)))
                continue
            for text in await self._artifact(artifact, position):
                yield text
        merged = sorted(caught, key=lambda c: (c[0], c[1]))
        self._pending = sorted(item[0] for _, is_event, item in merged if not is_event)
        deferred = False
        for _, is_event, item in merged:
            if not is_event:
                self._pending.remove(item[0])
                for text in await self._artifact(item[1], item[0]):
                    yield text
                continue
            if deferred or any(tail.known.get(a.id, 0) > index for a in item.inputs):
                deferred = True  # its inputs come later, live: so does it, and every event after it
                continue
            cursor.number = item.number
            if await self._shows(item):
                yield _frame(self._id(), item.kind, self._data(item))
        self._pending = []
        if held and not deferred:
            cursor.number = snapshot
        last_beat = time.monotonic()
        held_since: float | None = None
        held_polls = 0
        while not self._closing.is_set():
            fresh = tail.since(index)
            if fresh is None:  # fell behind what the tail keeps: read the board again
                index, upto = tail.count, tail.cursor
                async for position, artifact in _board_since(self._store, self._sent_high, upto, self._query):
                    for text in await self._artifact(artifact, position):
                        yield text
                fresh = []
            for seen in fresh:
                index = seen.index
                if seen.position in self._sent or not self._query.matches(seen.artifact):
                    continue
                for text in await self._artifact(seen.artifact, seen.position):
                    yield text
            holding = False
            for event in hub.since(cursor.number):
                if any(tail.known.get(a.id, 0) > index for a in event.inputs):
                    break  # the tail has its inputs, this stream not yet: send those first
                waiting = [
                    a.id for a in event.inputs if a.id not in tail.known and a.id not in self._released
                ]
                if waiting:
                    # The run's inputs are on the board but the tail has not taken them in yet:
                    # wait for it, so the artifact comes before the runs it starts.
                    if held_since is None:
                        held_since, held_polls = time.monotonic(), tail.polls
                        tail.wake(held=True)
                    if tail.polls < held_polls + 2 and time.monotonic() - held_since < HOLD_S:
                        holding = True
                        break
                    # Two polls since: the inputs are older than the tail (a resumed run).
                    self._release(waiting)
                held_since = None
                cursor.number = event.number
                if await self._shows(event):
                    yield _frame(self._id(), event.kind, self._data(event))
            if time.monotonic() - last_beat >= KEEPALIVE_S:
                last_beat = time.monotonic()
                yield ": keepalive\n\n"
            if tail.since(index):
                continue
            if holding:
                await self._notifier.wait(0.05)
                continue
            if hub.since(cursor.number):
                continue
            await _first(self._notifier.next(), self._closing, timeout=KEEPALIVE_S)
        yield _frame(self._id(), "stream.closed", {"reason": "the server is shutting down"})

    def _id(self) -> str:
        # Not past a gap that may still fill: a resumed stream must get what fills it.
        lows = [self._sent_high]
        low = self._tail.low_water()
        if low is not None:
            lows.append(low)
        if self._pending:  # a catch-up sent out of position order: not past what it still owes
            lows.append(self._pending[0] - 1)
        self._cursor.position = min(lows)
        return self._cursor.text()

    def _release(self, ids: list[UUID]) -> None:
        if len(self._released) > 10_000:
            self._released.clear()
        self._released.update(ids)

    async def _artifact(self, artifact: Artifact, position: int) -> list[str]:
        self._sent_high = max(self._sent_high, position)
        if position <= self._upto and position > self._upto - self._tail.hole_span:
            self._sent.add(position)  # a late fill of the tail may bring it again
        if not await self._access.readable([artifact], self._viewer, self._now()):
            return []  # the refusal is recorded; the client learns nothing of the artifact
        data = {"position": position, "artifact": artifact.model_dump(mode="json")}
        return [_frame(self._id(), "artifact.published", data)]

    async def _shows(self, event: LocalEvent) -> bool:
        """Whether the viewer may see ``event``: it must be allowed every input of the run (every
        artifact of a dead letter), and the event must match the filter."""
        inputs = event.inputs
        if not inputs and event.artifact_ids:
            found = await self._store.get_many(list(event.artifact_ids), viewer=self._viewer, now=self._now())
            if len(found) != len(set(event.artifact_ids)):
                return False
            inputs = tuple(found)
        if not inputs:
            return False  # model text of a run this hub did not see start: nothing to check it against
        now = self._now()
        if not self._access.may_see_all(inputs, self._viewer, now):
            return False
        if event.kind == "model.text" and not self._text_allowed(event, now):
            return False
        wanted = self._wanted
        if wanted.correlation_id is not None and inputs[0].correlation_id != wanted.correlation_id:
            return False
        return not wanted.types or any(a.type in wanted.types for a in inputs)

    def _text_allowed(self, event: LocalEvent, now: datetime) -> bool:
        agent = event.data.get("agent")
        return self._operator or self._access.may_read_output(agent, self._viewer, now)

    def _data(self, event: LocalEvent) -> dict[str, Any]:
        """The event's data, without an error message the viewer may not read (it can quote
        the run's output, which may be more private than its inputs)."""
        if "error" in event.data and not self._text_allowed(event, self._now()):
            return {k: v for k, v in event.data.items() if k != "error"} | {"error": "(hidden)"}
        return event.data


async def _first(*waits: Any, timeout: float | None = None) -> bool:
    """Wait for the first of ``waits`` (events or awaitables); True unless only the timeout ended
    it. The waiting tasks are cancelled however this ends (a client that went away cancels it)."""
    tasks = [asyncio.ensure_future(w.wait() if isinstance(w, asyncio.Event) else w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done) and tasks[0] in done


async def _board_since(
    store: BlackboardStore, after: int, upto: int, query: ArtifactQuery
) -> AsyncIterator[tuple[int, Artifact]]:
    while after < upto:
        rows = await store.feed(after, query, limit=500)
        rows = [(p, a) for p, a in rows if p <= upto]
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1][0]


def _frame(event_id: str, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)
