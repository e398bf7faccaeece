"""Choosing where a flock's traces go: the ``traces=`` argument, ``FLOCK_TRACES`` and ``OTEL_*``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flock_cli.errors import UsageError
from flock_cli.tracing.duck import DEFAULT_TRACE_PATH
from flock_cli.tracing.records import StatusRecord
from flock_cli.tracing.tracer import Sink, Tracer

__all__ = ["TRACES_ENV", "TracesOption", "build_tracer", "trace_path"]

TRACES_ENV = "FLOCK_TRACES"
_OFF = frozenset({"off", "false", "0", "no", "none"})

TracesOption = str | os.PathLike[str] | bool | None


def trace_path(traces: TracesOption) -> Path | None:
    """The trace store a flock writes to, or None when tracing is off.

    ``False`` turns tracing off; a path chooses the file; ``None`` or ``True`` use ``FLOCK_TRACES``
    (a path, or ``off``) when it is set, else ``.flock/traces.duckdb``.
    """
    if traces is False:
        return None
    if traces is None or traces is True:
        value = os.environ.get(TRACES_ENV)
        if value is None or value.strip() == "":
            return DEFAULT_TRACE_PATH
        if value.strip().lower() in _OFF:
            return None
        return Path(value)
    if isinstance(traces, str | os.PathLike):
        if str(traces).strip() == "":
            raise UsageError("traces= takes a file path, True, False or None; got an empty string")
        return Path(traces)
    raise UsageError(f"traces= takes a file path, True, False or None; got {type(traces).__name__}")


def build_tracer(
    traces: TracesOption,
    *,
    service: str = "flock",
    snapshot: Callable[[], StatusRecord | None] | None = None,
) -> Tracer:
    """A tracer writing to the chosen trace store, and to OTLP when the environment asks for it."""
    sinks: list[Sink] = []
    path = trace_path(traces)
    if path is not None:
        from flock_cli.tracing.writer import TraceWriter

        sinks.append(TraceWriter(path, snapshot=snapshot))
    from flock_cli.tracing.otlp import otlp_exporter_from_env

    exporter = otlp_exporter_from_env(service)
    if exporter is not None:
        sinks.append(exporter)
    return Tracer(sinks, service=service)
