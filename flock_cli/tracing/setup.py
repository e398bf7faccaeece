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

__all__ = ["TRACES_ENV", "TracesOption", "board_identity", "build_tracer", "trace_path", "writer_path"]

TRACES_ENV = "FLOCK_TRACES"
_OFF = frozenset({"off", "false", "0", "no", "none"})

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
    a path ending with ``/``), ``<host>-<pid>.duckdb`` inside it (``stores.py``)."""
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
    return Tracer(sinks, service=service, board=board_identity(board) if board is not None else None)
