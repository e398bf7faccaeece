"""The trace store as outside tools read it: the DuckDB shell pip installs (``duckdb-cli``, 1.x)
opens it and runs the README's and docs/traces.md's SQL, the blackboard design's "artifact
transformations" query runs unchanged, the ``v_*`` views give timestamps and flattened columns,
and a store written by an older release is brought up to date when it is next written."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from flock_cli.tracing import schema
from flock_cli.tracing.ingest import Ingest

REPO = Path(__file__).resolve().parents[1]
SHELL = Path(sys.executable).parent / "duckdb"
DESIGN = REPO.parent / "shared" / "design" / "blackboard-architecture.md"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store a user's first `flock run` of the pipeline recipe writes."""
    cwd = tmp_path_factory.mktemp("pipeline")
    env = {k: v for k, v in os.environ.items() if k != "FLOCK_TRACES"}
    idea = f"Idea={REPO / 'recipes' / 'inputs' / 'idea.json'}"
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", str(REPO / "recipes" / "pipeline.yaml"), "--input", idea,
         "--board", ":memory:", "--engine", "test", "--quiet"],
        cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = cwd / ".flock" / "traces.duckdb"
    assert path.exists()
    return path


def shell(store: Path, sql: str) -> list[dict[str, object]]:
    """Rows of ``sql`` as the pip-installed DuckDB shell answers them (read-only, JSON mode)."""
    if not SHELL.exists():
        pytest.skip("the DuckDB shell is not installed: pip install duckdb-cli (part of the [dev] extra)")
    done = subprocess.run(
        [str(SHELL), "-readonly", "-json", str(store), "-c", sql], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else []


def test_the_pip_duckdb_shell_runs_the_readme_query(store: Path) -> None:
    readme = (REPO / "README.md").read_text()
    sql = re.search(r'flock trace sql "(SELECT[^"]+)"', readme)
    assert sql is not None, "the README's SQL example moved"
    rows = shell(store, sql.group(1))
    assert rows == [
        {"agent": "editor", "runs": 1},
        {"agent": "planner", "runs": 1},
        {"agent": "writer", "runs": 1},
    ]


def test_every_sql_example_of_the_docs_runs_in_the_shell_and_with_flock_trace_sql(store: Path) -> None:
    examples = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "traces.md").read_text(), re.S)
    assert len(examples) >= 4
    for sql in examples:
        shell(store, sql)
        done = subprocess.run(
            [sys.executable, "-m", "flock_cli", "trace", "sql", sql, "--traces", str(store)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    per_agent = shell(store, examples[0])
    assert [row["agent"] for row in per_agent] == ["editor", "planner", "writer"]
    flow = shell(store, examples[1])
    assert [(row["agent"], row["input_types"], row["output_types"]) for row in flow] == [
        ("planner", ["Idea"], ["Outline"]),
        ("writer", ["Outline"], ["Draft"]),
        ("editor", ["Draft"], ["Article"]),
    ]


def test_the_blackboard_design_query_runs_unchanged_and_answers_what_it_asks(store: Path) -> None:
    if not DESIGN.exists():
        pytest.skip(f"the design document is not next to the repository ({DESIGN})")
    text = DESIGN.read_text()
    query = re.search(r'flow = conn\.execute\("""\n(.*?)""", \[trace_id\]\)', text, re.S)
    assert query is not None, "the design document's query moved"
    conn = duckdb.connect(str(store), read_only=True)
    try:
        trace_id = conn.execute("SELECT trace_id FROM runs").fetchone()[0]  # type: ignore[index]
        flow = conn.execute(query.group(1), [trace_id]).fetchall()
    finally:
        conn.close()
    assert flow == [
        ("flock.publish", None, None, '"Idea"'),
        ("agent.run", "planner", '"Idea"', '"Outline"'),
        ("agent.run", "writer", '"Outline"', '"Draft"'),
        ("agent.run", "editor", '"Draft"', '"Article"'),
    ]


def test_views_show_timestamps_and_flattened_attributes(store: Path) -> None:
    conn = duckdb.connect(str(store), read_only=True)
    try:
        started, ended, duration = conn.execute(
            "SELECT started_at, ended_at, duration_s FROM v_runs"
        ).fetchone()  # type: ignore[misc]
        spans = conn.execute("SELECT started_at, duration_ms, otel_trace_id FROM v_spans").fetchall()
        run_span = conn.execute(
            "SELECT correlation_id, outcome, attempt FROM v_agent_runs LIMIT 1"
        ).fetchone()
        artifact = conn.execute(
            "SELECT created_at, type FROM v_artifacts ORDER BY created_at LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    assert isinstance(started, datetime.datetime) and ended >= started and duration > 0
    assert abs((datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - started).total_seconds()) < 3600
    assert all(isinstance(s, datetime.datetime) and d >= 0 and len(t) == 32 for s, d, t in spans)
    assert run_span is not None and run_span[1] == "ok" and run_span[2] == 1 and len(run_span[0]) == 36
    assert artifact is not None and artifact[1] == "Idea"


# The tables as release 1 of the store wrote them (schema 1), before service, start_time, the
# OpenTelemetry columns and the views.
_SCHEMA_1_SPANS = (
    "trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, name VARCHAR, kind VARCHAR, agent VARCHAR,"
    " start_ns BIGINT, end_ns BIGINT, status VARCHAR, message VARCHAR, attributes JSON, inputs VARCHAR[],"
    " outputs VARCHAR[]"
)


def test_a_store_of_the_previous_schema_is_upgraded_when_next_written(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for name, columns in schema.TABLES.items():
        con.execute(f"CREATE TABLE {name} ({_SCHEMA_1_SPANS if name == 'spans' else columns})")
    con.execute("INSERT INTO meta VALUES ('schema', '1')")
    con.execute(
        "INSERT INTO spans VALUES ('t1', 's1', NULL, 'agent.run', 'consumer', 'writer', 1764842400000000000,"
        " 1764842400500000000, 'ok', NULL, '{}', [], [])"
    )
    con.close()
    ingest = Ingest(path)
    start = 1764842401000000000
    span = ("S", "t2", "s2", None, "agent.run", "consumer", "critic", start, start + 200_000_000,
            "ok", None, {}, [], [], (), [])  # fmt: skip
    ingest.add([span])
    assert ingest.write(wait=10) is None
    ingest.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT agent, service, start_time FROM spans ORDER BY start_ns").fetchall()
        views = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
    finally:
        con.close()
    assert [(a, s) for a, s, _ in rows] == [("writer", "writer"), ("critic", "critic")]  # old rows filled in
    assert rows[0][2] == datetime.datetime(2025, 12, 4, 10, 0)
    assert set(schema.VIEWS) <= views
    assert version == [(str(schema.SCHEMA_VERSION),)]


def test_the_store_file_stays_readable_when_copied_while_nobody_writes(store: Path, tmp_path: Path) -> None:
    # A copy (a backup, a file shipped off a server) opens in the shell like the original.
    copy = tmp_path / "copy.duckdb"
    shutil.copy(store, copy)
    assert shell(copy, "SELECT count(*) AS n FROM v_agent_runs") == [{"n": 3}]


def test_the_views_are_made_over_several_stores_read_as_one(store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    # The first store (the default database) has no views of its own: a store of an older
    # release, or one not written yet.
    with duckdb.connect(str(folder / "a.duckdb")) as first:
        first.execute(f"CREATE TABLE meta ({schema.TABLES['meta']})")
    shutil.copy(store, folder / "b.duckdb")
    shutil.copy(store, folder / "c.duckdb")
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "trace", "sql", "SELECT count(*) AS n FROM v_agent_runs",
         "--traces", str(folder), "--json"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 6}], done.stdout


def test_a_run_the_command_calls_failed_is_stored_as_failed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOCK_TRACES"}
    brief = f"Brief={REPO / 'recipes' / 'inputs' / 'brief.json'}"
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", str(REPO / "recipes" / "feedback_loop.yaml"), "-i", brief,
         "--board", ":memory:", "--engine", "test", "--quiet"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the circuit breaker trips
    assert shell(tmp_path / ".flock" / "traces.duckdb", "SELECT status FROM v_runs") == [{"status": "failed"}]
