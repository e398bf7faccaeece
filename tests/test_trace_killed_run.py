"""A run whose process was killed (SIGKILL) reads ``interrupted`` in the trace store itself, for
any client of it, once the next traced process on the host has written there: not ``running``
for ever. Real processes (`flock run`), a real DuckDB file read with DuckDB's own client."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from flock_cli.tracing.reader import TraceReader
from tests.test_cli import SLOW_LIB, SLOW_RECIPE, cli, spawn, wait_for, write


def _statuses(store: Path) -> dict[str, tuple[str, object]]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT run_id, status, ended_at FROM v_runs").fetchall()
    return {run_id: (status, ended) for run_id, status, ended in rows}


def test_a_killed_run_is_written_interrupted_by_the_next_traced_process(tmp_path: Path) -> None:
    cwd = tmp_path
    write(cwd / "slow_lib.py", SLOW_LIB)
    slow_recipe = write(cwd / "slow.yaml", SLOW_RECIPE)
    store = cwd / "traces.duckdb"
    watcher = spawn("run", slow_recipe, "--watch", "--board", "a.db", "--traces", store, cwd=cwd)
    try:
        wait_for(lambda: store.exists() and TraceReader(store).runs() != [], timeout=60)
    finally:
        watcher.kill()
        watcher.communicate(timeout=30)  # reaped, its pipes closed
    (killed,) = TraceReader(store).runs()
    assert killed.status == "interrupted"  # what `flock trace` always said (the pid is gone)
    write(cwd / "job.json", '{"n": 1}')
    later = cli("run", slow_recipe, "--board", "b.db", "--traces", store, "-i", "Job=job.json", cwd=cwd)
    assert later.returncode == 0, later.stdout + later.stderr
    statuses = _statuses(store)
    assert statuses.pop(killed.run_id) == ("interrupted", None)  # when it died is not known
    ((_, (status, ended)),) = statuses.items()
    assert status == "ok" and ended is not None
    listed = cli("trace", "list", "--traces", store, "--json", cwd=cwd)
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}[killed.run_id] == "interrupted"
