"""``flock trace sql``: a user's query, run within a time, memory and size limit.

A query that would run for hours (a cross join over ``range()``) or fill the machine's memory
ends with an error naming the limit it reached. DuckDB enforces the memory limit for its
operators (joins, sorts, aggregates); the time limit interrupts the query from a timer thread;
results are fetched in batches (DuckDB streams them), so a huge result is refused once it passes
the row or size limit instead of being built whole.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any

from flock_cli.errors import TraceStoreError

if TYPE_CHECKING:
    import duckdb

__all__ = ["memory_bytes", "run_query"]


def run_query(
    con: duckdb.DuckDBPyConnection,
    query: str,
    *,
    timeout: float,
    memory_limit: str,
    limit_bytes: int,
    max_rows: int,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` on ``con``: its column names and rows.

    Stops it after ``timeout`` seconds (0: never); DuckDB may use ``limit_bytes`` for it (the
    query cannot change that: the configuration is locked first); at most ``max_rows`` rows, of
    at most ``limit_bytes`` together, are fetched. Every limit reached raises TraceStoreError
    naming the option that sets it.
    """
    import duckdb

    try:
        statements = len(con.extract_statements(query))
    except duckdb.Error:
        statements = 1  # not parsed: the query itself reports what is wrong with it, below
    if statements > 1:  # DuckDB would run them all and show only the last one's rows
        raise TraceStoreError(f"give one statement at a time: the query holds {statements}")
    # Settings first, then locked: a query's own SET cannot lift them.
    con.execute(f"SET memory_limit = '{limit_bytes}B'")
    con.execute(f"SET threads = {min(4, os.cpu_count() or 1)}")
    con.execute("SET lock_configuration = true")
    timer = threading.Timer(timeout, con.interrupt) if timeout > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        result = con.execute(query)
        if result is None or result.description is None:
            raise TraceStoreError("the query returned no rows or columns: give a SELECT statement")
        columns = [d[0] for d in result.description]
        return columns, _fetch(result, max_rows, limit_bytes, memory_limit)
    except duckdb.InterruptException:
        raise TraceStoreError(
            f"the query ran longer than {timeout:g} s and was stopped (--timeout; 0 for no limit)"
        ) from None
    except duckdb.OutOfMemoryException:
        raise TraceStoreError(
            f"the query needed more than {memory_limit} of memory and was stopped (--memory-limit)"
        ) from None
    except duckdb.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceStoreError(f"query failed: {message}") from None
    finally:
        if timer is not None:
            timer.cancel()


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}  # fmt: skip


def memory_bytes(text: str) -> int:
    """``"1GB"`` -> 1,000,000,000 (DuckDB's units: KB, MB, GB, TB and KiB ... TiB); raises
    TraceStoreError for anything else, or for less than 1 MB."""
    match = _MEMORY.match(text)
    if match is None:
        raise TraceStoreError(f"--memory-limit takes a size like 500MB or 2GB, not {text!r}")
    size = int(float(match[1]) * _UNITS[(match[2] or "b").lower()])
    if size < 10**6:
        raise TraceStoreError(f"--memory-limit {text} is below 1MB: no query can run in it")
    return size


def _fetch(result: Any, max_rows: int, limit_bytes: int, memory_limit: str) -> list[tuple[Any, ...]]:
    """The rows of ``result``, fetched in batches so that a result over the limits stops early
    (DuckDB streams them: a huge cross join is never built whole)."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while True:
        batch = result.fetchmany(min(1000, max_rows + 1 - len(rows)))
        if not batch:
            return rows
        rows.extend(batch)
        if len(rows) > max_rows:
            raise TraceStoreError(
                f"the query returned more than {max_rows:,} rows (--max-rows): add a LIMIT or raise it"
            )
        size += sum(_value_size(v) for row in batch for v in row)
        if size > limit_bytes:
            raise TraceStoreError(
                f"the query's result is larger than {memory_limit} (--memory-limit): select fewer or"
                " smaller values"
            )


def _value_size(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 50
    if isinstance(value, list | tuple | dict):
        return 50 + sum(_value_size(v) for v in (value.values() if isinstance(value, dict) else value))
    return 32
