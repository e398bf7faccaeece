"""Tracing: spans, events and metrics of a running flock, kept in a DuckDB trace store.

The runtime reports to a :class:`~flock_cli.tracing.tracer.Tracer`; a background writer batches
what it records into the trace store (``.flock/traces.duckdb`` by default) and, when the standard
``OTEL_EXPORTER_OTLP_*`` variables ask for it, to an OTLP endpoint. ``flock trace`` and ``flock top``
read the store from other processes.
Each process writes a store of its own when the trace location is a folder; ``flock trace`` reads
several stores as one (``stores.py``) and the runs of several processes on one board as one run
(``board_runs.py``).
"""
