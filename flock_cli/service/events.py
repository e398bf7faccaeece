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
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.service.tail import BoardTail, Notifier
from flock_cli.store.contract import ArtifactQuery, visible

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.visibility import AgentIdentity
    from flock_cli.store.contract import BlackboardStore
    from flock_cli.tracing.tracer import Activity, StreamChunk

__all__ = ["ActivityHub", "EventFilter", "event_stream"]

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
    artifact_id: UUID | None = None
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
        if activity.inputs:
            data["inputs"] = [str(a.id) for a in activity.inputs]
            data["correlation_id"] = _text(activity.inputs[0].correlation_id)
        data.update({k: _json_safe(v) for k, v in activity.attributes.items()})
        if activity.kind == "run.started" and activity.run is not None:
            self._runs[activity.run] = activity.inputs
        elif activity.kind in ("run.finished", "run.failed") and activity.run is not None:
            self._runs.pop(activity.run, None)
        artifact_id = activity.artifact_id if isinstance(activity.artifact_id, UUID) else None
        if artifact_id is not None:
            data["artifact_id"] = str(artifact_id)
        self._add(activity.kind, data, activity.inputs, artifact_id)

    def on_stream(self, chunk: StreamChunk) -> None:
        """Keep a piece of streamed model text (shown to those who may see the run's inputs)."""
        inputs = self._runs.get(chunk.run, ())
        data = {"agent": chunk.agent, "run": chunk.run, "text": chunk.text, "done": chunk.done}
        if inputs:
            data["correlation_id"] = _text(inputs[0].correlation_id)
        self._add("model.text", data, inputs, None)

    def _add(
        self, kind: str, data: dict[str, Any], inputs: tuple[Artifact, ...], artifact_id: UUID | None
    ) -> None:
        self.count += 1
        self._kept.append(LocalEvent(self.count, kind, data, inputs, artifact_id, time.time()))
        self._notifier.notify()

    def since(self, number: int) -> list[LocalEvent]:
        """The kept events after ``number`` (older ones may have been dropped)."""
        return [e for e in self._kept if e.number > number] if number < self.count else []


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
    position: int
    epoch: str
    number: int

    def text(self) -> str:
        return f"{self.position}:{self.epoch}:{self.number}"


def parse_event_id(text: str | None) -> tuple[int, str, int] | None:
    """``(position, epoch, number)`` of an event id, or None when it is not one of ours."""
    if not text:
        return None
    parts = text.strip().split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[0]), parts[1], int(parts[2])


async def event_stream(
    *,
    store: BlackboardStore,
    tail: BoardTail,
    hub: ActivityHub,
    notifier: Notifier,
    viewer: AgentIdentity,
    wanted: EventFilter,
    last_event_id: str | None,
    after: int | None,
    closing: asyncio.Event,
    now: Callable[[], datetime],
) -> AsyncIterator[str]:
    """The server-sent events one client receives, until ``closing`` is set or it goes away."""
    await tail.started.wait()
    resumed = parse_event_id(last_event_id)
    if resumed is not None:
        position, epoch, number = resumed
        cursor = _Cursor(position, hub.epoch, number if epoch == hub.epoch else hub.count)
    else:
        # A client following one correlation gets it from its start; otherwise from now on.
        start = after if after is not None else (0 if wanted.correlation_id else tail.cursor)
        cursor = _Cursor(start, hub.epoch, hub.count)
    query = wanted.query()
    yield "retry: 1000\n\n"
    index = tail.count
    upto = tail.cursor
    sent: set[int] = set()
    # A client following one workflow from its start gets the run events this process still
    # holds too, placed among the artifacts by time (it may have published before it asked).
    held = hub.since(0) if resumed is None and wanted.correlation_id is not None else []
    cursor.number = hub.count if held else cursor.number
    caught: list[tuple[float, int, Any]] = [(e.at, 1, e) for e in held]
    # Catch up from the board, up to what the tail had taken in when the stream began.
    async for position, artifact in _board_since(store, cursor.position, upto, query):
        sent.add(position)
        if held:
            caught.append((artifact.created_at.timestamp(), 0, (position, artifact)))
            continue
        for text in await _artifact_event(store, artifact, position, viewer, cursor, now):
            yield text
    for _, is_event, item in sorted(caught, key=lambda c: (c[0], c[1])):
        if not is_event:
            for text in await _artifact_event(store, item[1], item[0], viewer, cursor, now):
                yield text
        elif await _shows(store, item, viewer, wanted, now):
            yield _frame(cursor.text(), item.kind, item.data)
    last_beat = time.monotonic()
    held_since: float | None = None
    held_polls = 0
    while not closing.is_set():
        fresh = tail.since(index)
        if fresh is None:  # fell behind what the tail keeps: read the board again
            index, upto = tail.count, tail.cursor
            async for position, artifact in _board_since(store, cursor.position, upto, query):
                for text in await _artifact_event(store, artifact, position, viewer, cursor, now):
                    yield text
            fresh = []
        for seen in fresh:
            index = seen.index
            if seen.position in sent or not query.matches(seen.artifact):
                continue
            for text in await _artifact_event(store, seen.artifact, seen.position, viewer, cursor, now):
                yield text
        holding = False
        for event in hub.since(cursor.number):
            if event.inputs and not all(a.id in tail.known for a in event.inputs):
                # The run's inputs are on the board but the tail has not taken them in yet:
                # wait for it, so the artifact comes before the runs it starts.
                if held_since is None:
                    held_since, held_polls = time.monotonic(), tail.polls
                    tail.wake(held=True)
                # Two polls since: the inputs are older than the tail (a resumed run), go on.
                if tail.polls < held_polls + 2 and time.monotonic() - held_since < HOLD_S:
                    holding = True
                    break
            held_since = None
            cursor.number = event.number
            if await _shows(store, event, viewer, wanted, now):
                yield _frame(cursor.text(), event.kind, event.data)
        if time.monotonic() - last_beat >= KEEPALIVE_S:
            last_beat = time.monotonic()
            yield ": keepalive\n\n"
        if tail.since(index):
            continue
        if holding:
            await notifier.wait(0.05)
            continue
        if hub.since(cursor.number):
            continue
        waiter = asyncio.ensure_future(notifier.wait(KEEPALIVE_S))
        closer = asyncio.ensure_future(closing.wait())
        await asyncio.wait([waiter, closer], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        closer.cancel()
    yield _frame(cursor.text(), "stream.closed", {"reason": "the server is shutting down"})


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


async def _artifact_event(
    store: BlackboardStore,
    artifact: Artifact,
    position: int,
    viewer: AgentIdentity,
    cursor: _Cursor,
    now: Callable[[], datetime],
) -> list[str]:
    cursor.position = max(cursor.position, position)
    if not await store.readable([artifact], viewer, now=now()):
        return []  # the denial is recorded; the client learns nothing of the artifact
    data = {"position": position, "artifact": artifact.model_dump(mode="json")}
    return [_frame(cursor.text(), "artifact.published", data)]


async def _shows(
    store: BlackboardStore,
    event: LocalEvent,
    viewer: AgentIdentity,
    wanted: EventFilter,
    now: Callable[[], datetime],
) -> bool:
    """Whether ``viewer`` may see ``event``: it must be allowed every input of the run (or the
    artifact of a dead letter), and the event must match the filter."""
    inputs = event.inputs
    if not inputs and event.artifact_id is not None:
        found = await store.get_many([event.artifact_id], viewer=viewer, now=now())
        if not found:
            return False
        inputs = tuple(found)
    if not inputs:
        return False  # model text of a run this hub did not see start: nothing to check it against
    when = now()
    if not all(visible(a, viewer, when) for a in inputs):
        return False
    if wanted.correlation_id is not None and inputs[0].correlation_id != wanted.correlation_id:
        return False
    return not wanted.types or any(a.type in wanted.types for a in inputs)


def _frame(event_id: str, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
