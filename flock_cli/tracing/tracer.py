"""The tracer: what the runtime reports to while it works.

Every call is cheap and never blocks: a span is a slotted object, and ending it appends it to the
sinks' queues (the DuckDB writer, optionally the OTLP exporter), which write from their own
threads. With no sink, spans are still made (metrics need their timings) but go nowhere.

Where a span belongs:

* inside ``Flock.traced_run(name)`` every span joins that run's trace;
* an agent run continues the trace of the artifact that woke it (its first input), so a workflow
  started by one publish stays one trace even outside ``traced_run``;
* a publish outside both starts a new trace.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flock_cli.core.usage import UsageLedger
from flock_cli.tracing.frames import flat_span
from flock_cli.tracing.metrics import Metrics
from flock_cli.tracing.records import (
    EventRecord,
    Record,
    RunEnd,
    RunStart,
    Span,
    SpanStatus,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    traceparent,
)

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact

__all__ = ["Activity", "RunScope", "Sink", "StreamChunk", "Tracer"]

# Artifact -> span entries kept for parenting (about 250 bytes each, so at most ~12 MB); the
# oldest are dropped, and a run consuming an artifact older than that starts a trace of its own.
_ORIGINS_KEPT = 50_000


class Sink(Protocol):
    """Where finished records go (a writer thread's queue)."""

    def put(self, record: Record) -> None:
        """Queue one record; must not block."""

    def flush(self, timeout: float) -> bool:
        """Write what is queued; False if that did not finish in time."""

    def close(self, timeout: float) -> None:
        """Write what is queued and stop."""

    @property
    def problems(self) -> list[str]:
        """Errors the sink met (reported, never raised into the runtime)."""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """Streamed model text of one agent run (``run`` is its span id); ``done`` ends the stream."""

    agent: str
    run: str
    text: str
    done: bool = False


@dataclass(frozen=True, slots=True)
class Activity:
    """Something that happened in this flock, for live followers (``Flock.on_activity``).

    ``kind`` is ``run.started``, ``run.finished``, ``run.failed`` (an agent run, ``run`` its span
    id) or a runtime event's kind (``dead_letter``, ``run.retry``...). ``inputs`` are the
    artifacts the run works on (empty for events, which name ``artifact_id`` instead).
    """

    kind: str
    agent: str | None
    run: str | None = None
    inputs: tuple[Artifact, ...] = ()
    artifact_id: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunScope:
    """The trace of one ``traced_run``: its id, root span and name. Setting ``outcome`` (for
    example ``"interrupted"``) records how the run ended when the block exits normally."""

    trace_id: str
    span_id: str
    name: str
    outcome: str | None = None


class Tracer:
    """Makes spans and events for one flock and hands them to its sinks."""

    def __init__(
        self, sinks: Sequence[Sink] = (), *, service: str = "flock", board: str | None = None
    ) -> None:
        self.sinks = list(sinks)
        self.service = service
        self.board = board
        """The board the flock works (``setup.board_identity``), recorded with each traced run."""
        self.metrics = Metrics()
        self.capture_content = False
        """Whether model calls record their prompt and answer messages on their spans (the GenAI
        conventions' opt-in, ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)."""
        # artifact id (UUID) -> (trace id, span id, the traceparent it was given, that parsed)
        self._origins: dict[Any, tuple[str, str, str, tuple[str, str]]] = {}
        self._put = [sink.put for sink in self.sinks]
        self.usage = UsageLedger()
        """What the flock's model calls used, per agent and in all (budgets read it)."""
        self.stream_listeners: list[Callable[[StreamChunk], None]] = []
        """Called on the event loop with each piece of streamed model text (``Flock.on_stream``)."""
        self.activity_listeners: list[Callable[[Activity], None]] = []
        """Called on the event loop with each run start and end and each runtime event."""
        # Context variables of this tracer's own: two flocks in one task (a flock driving another)
        # must not take each other's runs and spans for their own. A flock makes one tracer, so
        # these are few and live as long as it does.
        self._run: ContextVar[RunScope | None] = ContextVar(f"flock_run_{id(self):x}", default=None)
        self._span: ContextVar[Span | None] = ContextVar(f"flock_span_{id(self):x}", default=None)

    def current(self) -> Span | None:
        """The span the current task works inside (a publish or an agent run), if any."""
        return self._span.get()

    @property
    def enabled(self) -> bool:
        """True when spans are kept somewhere."""
        return bool(self.sinks)

    @property
    def writes_store(self) -> bool:
        """True when spans go to a trace store (``flock trace`` can show them), not only to OTLP,
        and, once closed, the store could be opened (a damaged one keeps nothing to show)."""
        return any(hasattr(sink, "path") and not getattr(sink, "unusable_store", None) for sink in self.sinks)

    # -- spans -----------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        *,
        parent: Span | None = None,
        agent: str | None = None,
        attributes: dict[str, Any] | None = None,
        kind: str = "internal",
    ) -> Span:
        """Start a span under ``parent``, else the current span, else the current run, else a new trace."""
        if parent is None:
            parent = self._span.get()
        if parent is not None:
            span = Span(parent.trace_id, new_span_id(), parent.span_id, name, time.time_ns(), kind, agent,
                        attributes or {})  # fmt: skip
            if parent.otel_trace_id is not None:  # the parent's workflow trace, under the parent
                span.otel_trace_id, span.otel_parent_id = parent.otel_trace_id, parent.span_id
            return span
        scope = self._run.get()
        trace_id, parent_id = (scope.trace_id, scope.span_id) if scope is not None else (new_trace_id(), None)
        span = Span(trace_id, new_span_id(), parent_id, name, time.time_ns(), kind, agent, attributes or {})
        if kind == "producer" and scope is not None:
            # A publish from outside any run starts a workflow: a trace of its own in
            # OpenTelemetry, not one more span of the flock run's (a --watch server's run would
            # otherwise be one trace for its whole life).
            span.otel_trace_id = new_trace_id()
        return span

    def start_for(
        self, name: str, artifacts: Iterable[Artifact], *, agent: str, attributes: dict[str, Any]
    ) -> Span:
        """Start the span of work caused by ``artifacts``: it continues the first one's trace.

        Locally (``flock trace``), that is the span of this process that published it, when this
        process did. In OpenTelemetry it is the trace each artifact carries (its W3C
        ``traceparent``, whichever process published it); the other inputs of a join or batch
        become span links.
        """
        if not self._put:  # nothing is kept: where the span sits matters to no one
            return self.start(name, agent=agent, attributes=attributes, kind="consumer")
        origin = context = first = None
        links: list[str] = []
        types = []
        origins = self._origins
        for artifact in artifacts:
            if first is None:
                first = artifact
            types.append(artifact.type)
            if origin is None:
                origin = origins.get(artifact.id)
            carried = artifact.trace_context
            if carried is not None:
                if context is None:
                    context = carried
                elif carried != context and carried not in links:
                    links.append(carried)
        if origin is None:
            span = self.start(name, agent=agent, attributes=attributes, kind="consumer")
        else:
            trace, parent = origin[0], origin[1]
            span = Span(trace, new_span_id(), parent, name, time.time_ns(), "consumer", agent, attributes)
        span.input_types = tuple(types)
        span.correlation = first.correlation_id if first is not None else None
        parsed = None
        if context is not None:
            # A context this process gave (adopt) is known already: no parse per run.
            parsed = origin[3] if origin is not None and origin[2] == context else parse_traceparent(context)
        if parsed is not None:
            span.otel_trace_id, span.otel_parent_id = parsed
            if links:
                span.links = tuple(links)
        return span

    def end(self, span: Span, status: SpanStatus = "ok", message: str | None = None) -> None:
        """End a span and queue it."""
        self._finish(span, time.time_ns(), status, message)

    def _finish(self, span: Span, end_ns: int, status: SpanStatus, message: str | None) -> None:
        span.end_ns = end_ns
        span.status = status
        span.message = message
        if self._put:
            flat = flat_span(span)
            for put in self._put:
                put(flat)

    def record(
        self, parent: Span, name: str, start_ns: int, end_ns: int, status: SpanStatus = "ok",
        message: str | None = None, attributes: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Add a finished child span, timed by the caller (a stage, a store write), to ``parent``."""
        if not self._put:
            return
        if parent.end_ns:
            # The parent is written already (a timer or a task outlived the publish it started
            # in): the step becomes a span of its own under it rather than being lost.
            late = Span(parent.trace_id, new_span_id(), parent.span_id, name, start_ns, "internal",
                        parent.agent, attributes or {})  # fmt: skip
            self._finish(late, end_ns, status, message)
            return
        children = parent.children
        if children is None:
            children = parent.children = []
        n = len(children)
        # Children's ids extend their parent's: unique within it, and no random draw per child.
        span_id = f"{parent.span_id[:12]}{n:04x}" if n < 0x10000 else new_span_id()
        if span_id == parent.span_id:  # the parent's own id ends in these four digits
            span_id = new_span_id()
        children.append((span_id, name, start_ns, end_ns, status, message, attributes))

    def child(
        self, name: str, start_ns: int, status: SpanStatus = "ok", message: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """A step that began at ``start_ns`` ends now: a child of the current span, or a span of
        its own when there is none (a schedule decision made outside any publish or run)."""
        parent = self._span.get()
        if parent is not None:
            self.record(parent, name, start_ns, time.time_ns(), status, message, attributes)
            return
        span = self.start(name, attributes=attributes)
        span.start_ns = start_ns
        self.end(span, status, message)

    def enter(self, span: Span) -> Any:
        """Make ``span`` the current span of this task; returns the token for :meth:`leave`."""
        return self._span.set(span)

    def leave(self, token: Any) -> None:
        """Undo :meth:`enter`."""
        self._span.reset(token)

    # -- artifacts and events --------------------------------------------------------------------

    def publishing(self, artifacts: Sequence[Artifact], name: str = "flock.publish") -> Publishing:
        """A ``with`` block around storing and routing ``artifacts``: one producer span, current
        inside the block, whose trace the runs they cause continue."""
        return Publishing(self, artifacts, name)

    def published(self, artifacts: Iterable[Artifact], span: Span) -> None:
        """Record artifacts that ``span`` published (when the block that stored them succeeded)."""
        metrics = self.metrics
        for artifact in artifacts:
            metrics.artifact_published(artifact.type)
        if self._put:
            if span.published is None:
                span.published = []
            span.published.extend(artifacts)

    def adopt(self, artifacts: Iterable[Artifact], span: Span) -> None:
        """Work caused by ``artifacts`` joins ``span``'s trace.

        Each artifact that carries no trace context yet is given ``span``'s (before it is stored:
        this is part of building it), so runs in other processes join the trace too; an artifact
        found on the board keeps the context it was published with.
        """
        otel = (span.otel_trace_id or span.trace_id, span.span_id)
        context = traceparent(*otel)
        for artifact in artifacts:
            if artifact.trace_context is None:
                artifact.__dict__["trace_context"] = context  # frozen for users; not yet stored
        if not self._put:  # no traces are written: nothing will ever ask whose trace it was
            return
        origins, origin = self._origins, (span.trace_id, span.span_id, context, otel)
        for artifact in artifacts:
            key = artifact.id
            origins[key] = origin
            if span.outputs is None:
                span.outputs = []
            span.outputs.append(key)
        if len(origins) > _ORIGINS_KEPT:  # keep the newer half: one copy per _ORIGINS_KEPT/2 adopted
            self._origins = dict(itertools.islice(origins.items(), len(origins) - _ORIGINS_KEPT // 2, None))

    def event(
        self,
        kind: str,
        *,
        agent: str | None = None,
        artifact_id: Any = None,
        span: Span | None = None,
        **attributes: Any,
    ) -> None:
        """Record a runtime event (``visibility.denied``, ``run.retry``, ``dead_letter``, ...)."""
        self.metrics.event(kind)
        if self.activity_listeners:
            current = span if span is not None else self._span.get()
            run = current.span_id if current is not None and current.name == "agent.run" else None
            self.notify(Activity(kind, agent, run, artifact_id=artifact_id, attributes=attributes))
        if not self._put:
            return
        if span is None:
            span = self._span.get()
        trace_id = span_id = None
        if span is not None:
            trace_id, span_id = span.trace_id, span.span_id
        elif artifact_id is not None and (origin := self._origins.get(artifact_id)) is not None:
            trace_id, span_id = origin[0], origin[1]
        elif (scope := self._run.get()) is not None:
            trace_id, span_id = scope.trace_id, scope.span_id
        record = EventRecord(
            trace_id,
            span_id,
            time.time_ns(),
            kind,
            agent,
            artifact_id,
            attributes,
        )
        for put in self._put:
            put(record)

    def notify(self, activity: Activity) -> None:
        """Hand ``activity`` to every activity listener."""
        for listener in self.activity_listeners:
            listener(activity)

    # -- runs ------------------------------------------------------------------------------------

    @asynccontextmanager
    async def traced_run(
        self, name: str, attributes: dict[str, Any] | None = None
    ) -> AsyncIterator[RunScope]:
        """Group every span made inside (and every run those spans cause) into one trace.

        Inside another traced run, the block is a span of that run rather than a run of its own.
        """
        outer = self._run.get()
        if outer is not None:
            span = self.start(name, attributes={"flock.run": name, **(attributes or {})})
            span_token = self._span.set(span)
            try:
                yield RunScope(span.trace_id, span.span_id, name)
            except BaseException as exc:
                self.end(span, "error", f"{type(exc).__name__}: {exc}")
                raise
            else:
                self.end(span)
            finally:
                self._span.reset(span_token)
            return
        scope = RunScope(new_trace_id(), new_span_id(), name)
        root = Span(scope.trace_id, scope.span_id, None, name, time.time_ns(), "internal", None,
                    {"flock.run": name, **(attributes or {})})  # fmt: skip
        start_attributes = dict(root.attributes)
        if self.board is not None:  # flock trace groups the runs of processes on one board by it
            start_attributes.setdefault("flock.board", self.board)
        for put in self._put:
            put(RunStart(scope.trace_id, scope.span_id, name, root.start_ns, os.getpid(),
                         socket.gethostname(), start_attributes))  # fmt: skip
        token = self._run.set(scope)
        status: SpanStatus = "ok"
        message = None
        try:
            yield scope
        except BaseException as exc:
            status, message = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._run.reset(token)
            self.end(root, status, message)
            outcome = "failed" if status == "error" else scope.outcome or "ok"
            for put in self._put:
                put(RunEnd(scope.trace_id, root.end_ns, outcome))

    # -- lifecycle -------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; False if a sink did not finish within ``timeout``."""
        return all(sink.flush(timeout) for sink in self.sinks)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the sinks."""
        for sink in self.sinks:
            sink.close(timeout)
        self._put = []

    @property
    def problems(self) -> list[str]:
        """Errors the sinks met, for the caller to report."""
        return [p for sink in self.sinks for p in sink.problems]


class Publishing:
    """See :meth:`Tracer.publishing`."""

    __slots__ = ("artifacts", "name", "span", "token", "tracer")

    def __init__(self, tracer: Tracer, artifacts: Sequence[Artifact], name: str) -> None:
        self.tracer, self.artifacts, self.name = tracer, artifacts, name
        self.span: Span | None = None
        self.token: Any = None

    def __enter__(self) -> Span:
        tracer = self.tracer
        span = self.span = tracer.start(
            self.name, kind="producer", attributes={"flock.artifacts": len(self.artifacts)}
        )
        if self.artifacts:
            span.correlation = self.artifacts[0].correlation_id
        tracer.adopt(self.artifacts, span)
        self.token = tracer._span.set(span)
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.tracer._span.reset(self.token)
        span = self.span
        assert span is not None
        if exc is None:
            self.tracer.published(self.artifacts, span)
            self.tracer.end(span)
        else:
            self.tracer.end(span, "error", f"{type(exc).__name__}: {exc}")
