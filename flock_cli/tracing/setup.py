"""Choosing where a flock's traces go: the ``traces=`` argument, ``FLOCK_TRACES`` and ``OTEL_*``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flock_cli.errors import UsageError
from flock_cli.tracing.duck import DEFAULT_TRACE_PATH
from flock_cli.tracing.records import StatusRecord
from flock_cli.tracing.stores import process_store, writes_folder
from flock_cli.tracing.tracer import Sink, Tracer

__all__ = [
    "AUTO_TRACE_ENV",
    "TRACES_ENV",
    "TRACE_FILE_ENV",
    "TracesOption",
    "board_identity",
    "build_tracer",
    "trace_path",
    "writer_path",
]

TRACES_ENV = "FLOCK_TRACES"
AUTO_TRACE_ENV = "FLOCK_AUTO_TRACE"
TRACE_FILE_ENV = "FLOCK_TRACE_FILE"
_OFF = frozenset({"off", "false", "0", "no", "none"})
_ON = frozenset({"on", "true", "1", "yes"})


def _switch(name: str) -> bool:
    """An on/off environment variable (on when unset); anything else is a usage error."""
    value = os.environ.get(name, "").strip().lower()
    if value == "" or value in _ON:
        return True
    if value in _OFF:
        return False
    raise UsageError(f"${name}={os.environ[name]!r}: use true or false")


TracesOption = str | os.PathLike[str] | bool | None


def _named(traces: TracesOption) -> str | None:
    """The trace location as it was written (a trailing ``/`` still there), or None for off."""
    if traces is False:
        return None
    if traces is None or traces is True:
        value = os.environ.get(TRACES_ENV)
        if value is None or value.strip() == "":
            return str(DEFAULT_TRACE_PATH)
        if value.strip().lower() in _OFF:
            return None
        return value
    if isinstance(traces, str | os.PathLike):
        if str(traces).strip() == "":
            raise UsageError("traces= takes a file path, True, False or None; got an empty string")
        return os.fspath(traces)
    raise UsageError(f"traces= takes a file path, True, False or None; got {type(traces).__name__}")


def trace_path(traces: TracesOption) -> Path | None:
    """The trace store (or folder of stores) named for a flock, or None when tracing is off.

    ``False`` turns tracing off; a path chooses the file or folder; ``None`` or ``True`` use
    ``FLOCK_TRACES`` (a path, or ``off``) when it is set, else ``.flock/traces.duckdb``.
    """
    named = _named(traces)
    return None if named is None else Path(named)


def writer_path(traces: TracesOption) -> Path | None:
    """The store file this process writes: the file named, or, for a folder (an existing one, or
    a path ending with ``/``), ``<host>-<pid>.duckdb`` inside it (``stores.py``).

    With ``traces=None`` and ``FLOCK_TRACES`` unset, the design's switches decide too:
    ``FLOCK_AUTO_TRACE`` (tracing at all) and ``FLOCK_TRACE_FILE`` (traces kept in the store),
    both on unless set to false."""
    ours = os.environ.get(TRACES_ENV, "").strip()
    if traces is None and not ours and not (_switch(AUTO_TRACE_ENV) and _switch(TRACE_FILE_ENV)):
        return None
    named = _named(traces)
    if named is None:
        return None
    return process_store(Path(named)) if writes_folder(named) else Path(named)


def board_identity(store: object) -> str | None:
    """How a traced run names the board it worked, so that ``flock trace`` can show the runs of
    several processes on one board as one: a PostgreSQL board's URL with its password hidden (the
    store's ``where``), a board file's absolute path; None for a board in memory, which no other
    process can work."""
    where = getattr(store, "where", None)
    if isinstance(where, str) and where:
        return where
    path = getattr(store, "path", None)
    if isinstance(path, str | os.PathLike) and os.fspath(path) not in ("", ":memory:"):
        return os.path.realpath(path)
    return None


def build_tracer(
    traces: TracesOption,
    *,
    service: str = "flock",
    snapshot: Callable[[], StatusRecord | None] | None = None,
    board: object = None,
) -> Tracer:
    """A tracer writing to the chosen trace store, and to OTLP when the environment asks for it.
    ``board`` is the flock's store: its identity goes into each traced run's start record."""
    sinks: list[Sink] = []
    path = writer_path(traces)
    if path is not None:
        from flock_cli.tracing.writer import TraceWriter

        sinks.append(TraceWriter(path, snapshot=snapshot))
    from flock_cli.tracing.otlp import otlp_exporter_from_env

    exporter = otlp_exporter_from_env(service)
    if exporter is not None:
        sinks.append(exporter)
    tracer = Tracer(sinks, service=service, board=board_identity(board) if board is not None else None)
    from flock_cli.tracing.semconv import capture_content

    tracer.capture_content = capture_content(os.environ)
    return tracer
