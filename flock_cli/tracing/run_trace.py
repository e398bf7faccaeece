"""``ctx.trace``: the tracing handle of one agent run, for the lifecycle and for components.

Engines report what only they know through it: the model and its token counts and cost
(``usage``), text as it streams from the model (``stream``, shown live by ``flock top``) and any
event of their own. The lifecycle records the metrics engines return (``metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from flock_cli.tracing.records import Span, SpanStatus
from flock_cli.tracing.run_metrics import metric_attributes
from flock_cli.tracing.tracer import StreamChunk, Tracer

__all__ = ["NO_TRACE", "RunTrace", "StreamChunk"]

_STREAM_CHUNK = 4096  # longer streamed text is split into several events


class RunTrace:
    """Tracing for one agent run; a no-op when the run is not traced (``NO_TRACE``)."""

    __slots__ = ("span", "tracer")

    def __init__(self, tracer: Tracer | None = None, span: Span | None = None) -> None:
        self.tracer, self.span = tracer, span

    def stage(self, name: str, start_ns: int, status: SpanStatus = "ok", message: str | None = None) -> None:
        """Record a lifecycle stage that began at ``start_ns`` and ends now."""
        if self.tracer is not None and self.span is not None:
            self.tracer.record(self.span, f"stage.{name}", start_ns, time.time_ns(), status, message)

    def engine_call(
        self, engine: str, start_ns: int, metrics: dict[str, Any], error: BaseException | None = None
    ) -> None:
        """Record one engine's evaluation, with the model and token figures it reported."""
        if self.tracer is None or self.span is None:
            return
        attributes: dict[str, Any] = {"flock.engine": engine}
        for key in ("model", "input_tokens", "output_tokens", "tokens", "cost", "calls"):
            if key in metrics and isinstance(metrics[key], str | int | float):
                attributes[f"llm.{key}"] = metrics[key]
        if metrics and self.tracer.enabled:  # this engine's own, whatever later engines return
            attributes.update(metric_attributes(metrics))
        self._record("engine.call", start_ns, attributes, error)

    def call(
        self,
        kind: Literal["llm.call", "tool.call"],
        start_ns: int,
        attributes: dict[str, Any],
        error: BaseException | None = None,
    ) -> None:
        """Record one model call (``llm.call``, with ``gen_ai.*`` attributes: model, parameters,
        usage, finish reasons) or tool call (``tool.call``, ``gen_ai.tool.name``) that began at
        ``start_ns`` and ends now; exported as ``chat {model}`` and ``execute_tool {tool}``."""
        if self.tracer is None or self.span is None:
            return
        if kind == "llm.call":
            error_type = None if error is None else type(error).__name__
            self.tracer.metrics.model_call(attributes, (time.time_ns() - start_ns) / 1e9, error_type)
        if self.tracer.enabled:
            self._record(kind, start_ns, attributes, error)

    def _record(
        self, name: str, start_ns: int, attributes: dict[str, Any], error: BaseException | None
    ) -> None:
        """A child span of the run, ending now: ok, or the error that ended it."""
        assert self.tracer is not None and self.span is not None
        status: SpanStatus = "ok" if error is None else "error"
        message = None if error is None else f"{type(error).__name__}: {error}"
        self.tracer.record(self.span, name, start_ns, time.time_ns(), status, message, attributes)

    @property
    def capture_content(self) -> bool:
        """Whether prompt and answer text may be put on model-call spans."""
        return self.tracer is not None and self.tracer.capture_content

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        """Put a run's metrics on its ``agent.run`` span as ``flock.metric.<name>`` attributes
        (``run_metrics.py`` says how values are kept); a name given again replaces the value."""
        if metrics and self.span is not None and self.tracer is not None and self.tracer.enabled:
            self.span.attributes.update(metric_attributes(metrics))

    def usage(
        self,
        *,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float | None = None,
        calls: int = 0,
    ) -> None:
        """Add model usage to this run (summed; shown by ``flock trace list``, counted against
        budgets): tokens, cost when known, and how many model calls it took."""
        if self.span is None:
            return
        if self.tracer is not None:
            self.tracer.usage.add(self.span.agent or "", input_tokens, output_tokens, cost, calls)
        attrs = self.span.attributes
        if model is not None:
            attrs["llm.model"] = model
        attrs["llm.input_tokens"] = attrs.get("llm.input_tokens", 0) + input_tokens
        attrs["llm.output_tokens"] = attrs.get("llm.output_tokens", 0) + output_tokens
        if cost is not None:
            attrs["llm.cost"] = attrs.get("llm.cost", 0.0) + cost
        if calls:
            attrs["llm.calls"] = attrs.get("llm.calls", 0) + calls

    def stream(self, text: str) -> None:
        """Text as the model produces it: to the trace store (``flock top`` shows it live) and to
        the flock's stream listeners (``flock run`` prints it)."""
        if self.tracer is None or self.span is None or not text:
            return
        for listener in self.tracer.stream_listeners:
            listener(StreamChunk(self.span.agent or "", self.span.span_id, text, done=False))
        for i in range(0, len(text), _STREAM_CHUNK):
            self.tracer.event(
                "engine.stream", agent=self.span.agent, span=self.span, text=text[i : i + _STREAM_CHUNK]
            )

    def stream_end(self) -> None:
        """The model's streamed answer is complete (listeners show the next one)."""
        if self.tracer is None or self.span is None:
            return
        for listener in self.tracer.stream_listeners:
            listener(StreamChunk(self.span.agent or "", self.span.span_id, "", done=True))

    def event(self, kind: str, **attributes: Any) -> None:
        """Record an event of the component's own within this run."""
        if self.tracer is not None and self.span is not None:
            self.tracer.event(kind, agent=self.span.agent, span=self.span, **attributes)


NO_TRACE = RunTrace()
"""The handle of an untraced run: every method does nothing."""
