"""`flock trace ...`, `flock run` tracing and `flock top`, through Typer's runner and as real
processes reading a store while another process writes it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app
from flock_cli.tracing.reader import TraceReader
from tests.trace_seed import aid, seed

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
runner = CliRunner()


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return seed(tmp_path / "traces.duckdb")


def test_list_shows_runs_newest_first_in_80_columns(store: Path) -> None:
    result = flock("trace", "list", "--traces", store)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "started", "name", "status", "arts", "runs", "dead", "time"]
    assert lines[1].split()[0] == "7e570000" and "live-demo" in lines[1] and "running" in lines[1]
    assert lines[2].split()[0] == "01d00000" and "code-review" in lines[2] and lines[2].endswith("1.0 s")
    assert max(len(line) for line in lines) <= 80
    data = json.loads(flock("trace", "list", "--traces", store, "--json").output)
    assert [(r["name"], r["status"], r["agent_runs"], r["failed_attempts"]) for r in data] == [
        ("live-demo", "running", 4, 2),
        ("code-review", "ok", 1, 0),
    ]


def test_show_draws_the_causal_tree_with_errors_retries_and_denials(store: Path) -> None:
    result = flock("trace", "show", "7e57", "--traces", store)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index(f"Topic {aid(1)[:8]}") < out.index("researcher  ok") < out.index(f"Notes {aid(11)[:8]}")
    assert "critic  failed" in out and "ValueError: score out of range" in out
    assert "(2 attempts)" in out and "run.retry TimeoutError: model slow" in out
    assert "denied to auditor (Private(to=editor))" in out
    tree = json.loads(flock("trace", "show", "7e57", "--traces", store, "--json").output)
    topic = tree["tree"][0]
    assert topic["type"] == "Topic" and topic["runs"][0]["agent"] == "researcher"
    assert topic["runs"][0]["outputs"][0]["runs"][0]["outcome"] == "failed"


def test_timeline_marks_the_critical_path_and_concurrency(store: Path) -> None:
    result = flock("trace", "timeline", "7e57", "--traces", store, "--width", "80")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    bars = [line for line in lines if "│" in line and not line.startswith("in progress")]
    assert [line.split()[0] for line in bars] == ["researcher", "researcher", "critic", "researcher"]
    assert "#2" in bars[3] and "█" in bars[3]  # the retried researcher ended last: critical
    assert "x" in bars[1]  # the failed first attempt
    assert any(line.startswith("in progress") and "max 2" in line for line in lines)
    assert max(len(line) for line in lines) <= 80


def test_audit_lists_consumers_and_denials(store: Path) -> None:
    data = json.loads(flock("trace", "audit", "--traces", store, "--json").output)
    assert [(e["type"], e["agent"], e["outcome"]) for e in data] == [
        ("Topic", "researcher", "consumed"),
        ("Topic", "researcher", "consumed"),
        ("Topic", "auditor", "denied"),
        ("Notes", "critic", "consumed"),
    ]
    only = json.loads(flock("trace", "audit", "--traces", store, "--artifact", aid(3)[:8], "--json").output)
    assert [e["agent"] for e in only] == ["auditor"]


def test_sql_is_read_only(store: Path) -> None:
    result = flock(
        "trace",
        "sql",
        "SELECT agent, count(*) AS n FROM spans WHERE name = 'agent.run' GROUP BY agent ORDER BY n DESC",
        "--traces",
        store,
        "--json",
    )
    assert json.loads(result.output)[0] == {"agent": "researcher", "n": 3}
    for statement in ("DELETE FROM spans", "COPY spans TO '/tmp/x.csv'", "ATTACH 'other.db'", "SELEC 1"):
        refused = flock("trace", "sql", statement, "--traces", store)
        assert refused.exit_code == 2, statement
        assert refused.output.startswith("error: query failed:") and "Traceback" not in refused.output
    assert TraceReader(store).run(None).agent_runs == 4  # nothing was deleted
    # Several statements: DuckDB would run each and show only the last one's rows.
    several = flock("trace", "sql", "SELECT 1; SELECT 2", "--traces", store)
    assert several.exit_code == 2 and "one statement at a time: the query holds 2" in several.output
    assert flock("trace", "sql", "SELECT 1 AS one;", "--traces", store, "--json").exit_code == 0


def test_export_writes_json_lines_and_otlp(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = flock("trace", "export", "7e57", "--traces", store, "-o", out)
    assert result.exit_code == 0 and "for 1 run(s)" in result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["record"] == "run" and records[0]["name"] == "live-demo"
    assert {r["record"] for r in records} == {"run", "span", "artifact", "event"}
    otlp = json.loads(flock("trace", "export", "7e57", "--traces", store, "--format", "otlp").output)
    spans = otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)
    failed = next(s for s in spans if s["spanId"] == "c000000000000004")
    assert failed["status"] == {"code": 2, "message": "ValueError: score out of range"}
    every = flock("trace", "export", "--all", "--traces", store).output.splitlines()
    assert sum(json.loads(line)["record"] == "run" for line in every) == 2


def test_metrics_renders_prometheus_text_from_the_store(store: Path) -> None:
    text = flock("trace", "metrics", "7e57", "--traces", store).output
    assert 'flock_artifacts_published_total{type="Topic"} 3' in text
    assert 'flock_agent_runs_total{agent="researcher",status="retry"} 1' in text
    assert 'flock_agent_runs_in_progress{agent="researcher"} 1' in text
    assert 'flock_events_total{kind="dead_letter"} 1' in text


def test_prune_deletes_old_runs_only(store: Path) -> None:
    dry = json.loads(
        flock("trace", "prune", "--older-than", "1d", "--dry-run", "--traces", store, "--json").output
    )
    assert dry == {"dry_run": True, "deleted": {"runs": 1, "spans": 1, "artifacts": 0, "events": 0}}
    assert len(TraceReader(store).runs()) == 2
    result = flock("trace", "prune", "--older-than", "1d", "--traces", store)
    assert result.exit_code == 0 and result.output.startswith("deleted 1 runs, 1 spans")
    assert [r.name for r in TraceReader(store).runs()] == ["live-demo"]  # running runs stay


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "show", "ffff"], "no run with id 'ffff'"),
        (["trace", "prune", "--older-than", "soon"], "--older-than takes an age like"),
        (["trace", "export", "--format", "xml"], "--format must be 'jsonl', 'otlp' or 'recording'"),
        (["trace", "export", "7e57", "--all"], "give a RUN or --all, not both"),
    ],
)
def test_mistakes_exit_2_with_one_line(store: Path, args: list[str], message: str) -> None:
    result = flock(*args, "--traces", store)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {result.output.strip()[7:]}"]
    assert message in result.output


def test_unusable_stores_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no trace store at" in flock("trace", "list", "--traces", tmp_path / "none.duckdb").output
    # a folder is read as every *.duckdb in it (tests/test_trace_multi.py): an empty one is refused
    assert "no trace stores (*.duckdb) in the folder" in flock("trace", "list", "--traces", tmp_path).output
    (tmp_path / "x.txt").write_text("plain text")
    bad = flock("trace", "show", "--traces", tmp_path / "x.txt")
    assert bad.exit_code == 2 and "is not a DuckDB trace store" in bad.output
    monkeypatch.setenv("FLOCK_TRACES", "off")
    off = flock("trace", "list")
    assert off.exit_code == 2 and "tracing is off" in off.output


def test_flock_run_traces_into_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOCK_TRACES")
    result = flock(
        "run",
        RECIPES / "code_review.yaml",
        "--engine",
        "test",
        "-q",
        "-i",
        f"CodeSubmission={RECIPES / 'inputs' / 'code_submission.json'}",
    )
    assert result.exit_code == 0, result.output
    run = TraceReader(tmp_path / ".flock" / "traces.duckdb").run(None)
    assert (run.name, run.status, run.agent_runs, run.artifacts) == ("code-review", "ok", 3, 4)
    assert f"trace: flock trace show {run.run_id[:12]}" in result.output
    assert run.recipe == str(RECIPES / "code_review.yaml")
    result = flock(
        "run",
        RECIPES / "code_review.yaml",
        "--engine",
        "test",
        "-q",
        "--no-traces",
        "--board",
        ":memory:",
        "-i",
        f"CodeSubmission={RECIPES / 'inputs' / 'code_submission.json'}",
    )
    assert result.exit_code == 0 and "trace:" not in result.output
    assert len(TraceReader(tmp_path / ".flock" / "traces.duckdb").runs()) == 1


# -- real processes: readers while a run writes ----------------------------------------------------


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "FLOCK_TRACES": str(store)}


_TOP_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from flock_cli.dashboard.app import FlockTop
    from flock_cli.tracing.reader import TraceReader

    async def main():
        app = FlockTop(TraceReader(Path(sys.argv[1])), poll_interval=0.2)
        seen = set()
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await pilot.pause(0.2)
                run = app.snapshot.run
                if run is not None:
                    seen.add(run.status)
                    states = {a.name: a.state for a in app.snapshot.agents}
                    if states.get("researcher") == "running":
                        seen.add("researcher running")
                    if run.status == "ok" and run.agent_runs == 18:
                        break
        print(" | ".join(sorted(seen)))

    asyncio.run(main())
    """
)


def test_readers_work_while_a_run_writes(tmp_path: Path) -> None:
    store = tmp_path / "traces.duckdb"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flock_cli",
            "run",
            str(RECIPES / "live_demo.yaml"),
            "-q",
            "--board",
            ":memory:",
            "-i",
            f"Topic={RECIPES / 'inputs' / 'topics.json'}",
        ],
        cwd=tmp_path,
        env=_env(store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    top = subprocess.Popen(
        [sys.executable, "-c", _TOP_SCRIPT, str(store)],
        cwd=ROOT,
        env=_env(store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shows: list[subprocess.CompletedProcess[str]] = []
    while run.poll() is None:
        shows.append(
            subprocess.run(
                [sys.executable, "-m", "flock_cli", "trace", "show"],
                cwd=tmp_path,
                env=_env(store),
                capture_output=True,
                text=True,
            )
        )
    _, err = run.communicate(timeout=60)
    top_out, top_err = top.communicate(timeout=90)
    assert run.returncode == 0, err
    readable = [s for s in shows if s.returncode == 0]
    assert all("Traceback" not in s.stderr and "lock" not in s.stderr.lower() for s in shows), shows
    assert any("running" in s.stdout.splitlines()[0] for s in readable), [s.stdout for s in shows]
    assert top.returncode == 0, top_err
    assert top_out.strip() == "ok | researcher running | running"
    final = TraceReader(store).run(None)
    assert (final.status, final.agent_runs, final.artifacts) == ("ok", 18, 26)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_serves_prometheus_metrics_while_it_goes(tmp_path: Path) -> None:
    port = _free_port()
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flock_cli",
            "run",
            str(RECIPES / "live_demo.yaml"),
            "-q",
            "--no-traces",
            "--board",
            ":memory:",
            "--metrics-port",
            str(port),
            "-i",
            f"Topic={RECIPES / 'inputs' / 'topics.json'}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scrapes = []
    while run.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                scrapes.append(response.read().decode())
        except OSError:
            pass  # not serving yet, or already stopped
        time.sleep(0.3)
    _, err = run.communicate()
    assert run.returncode == 0, err
    assert f"metrics: http://127.0.0.1:{port}/metrics" in err
    assert any('flock_agent_runs_in_progress{agent="researcher"} 2' in s for s in scrapes), scrapes[-1:]
    assert any('flock_artifacts_published_total{type="Notes"}' in s for s in scrapes)


def test_metrics_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = flock(
            "run",
            RECIPES / "live_demo.yaml",
            "-q",
            "--no-traces",
            "--board",
            ":memory:",
            "--metrics-port",
            str(port),
            "-i",
            f"Topic={RECIPES / 'inputs' / 'topics.json'}",
        )
    assert result.exit_code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in result.output


def test_helper_findings_stay_fixed(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ids are hex: LIKE wildcards are not prefixes
    for ref in ("%", "7e5_"):
        result = flock("trace", "show", ref, "--traces", store)
        assert result.exit_code == 2 and "is not a run id" in result.output
    # an empty query is a usage mistake, not a traceback
    empty = flock("trace", "sql", "  ", "--traces", store)
    assert empty.exit_code == 2 and "the query is empty" in empty.output
    # a 0-byte file and a missing folder are not "busy": the first fails at once, the second is made
    (tmp_path / "zero.duckdb").write_bytes(b"")
    started = time.monotonic()
    zero = flock("trace", "list", "--traces", tmp_path / "zero.duckdb")
    assert zero.exit_code == 2 and time.monotonic() - started < 5
    monkeypatch.chdir(tmp_path)
    result = flock(
        "run",
        RECIPES / "pipeline.yaml",
        "--engine",
        "test",
        "-q",
        "--board",
        ":memory:",
        "--traces",
        "sub/dir/t.duckdb",
        "-i",
        f"Idea={RECIPES / 'inputs' / 'idea.json'}",
    )
    assert result.exit_code == 0, result.output
    assert "trace: flock trace show" in result.output and "--traces sub/dir/t.duckdb" in result.output
    assert "warning" not in result.output
    assert TraceReader(tmp_path / "sub" / "dir" / "t.duckdb").run(None).name == "pipeline"
    # the whole OTLP export is one JSON document
    every = flock("trace", "export", "--all", "--format", "otlp", "--traces", store).output
    assert len(json.loads(every)["resourceSpans"]) == 2
    # an unknown agent in an audit is named
    nobody = flock("trace", "audit", "--agent", "nobody", "--traces", store)
    assert nobody.exit_code == 2 and "no agent 'nobody'" in nobody.output
    # so is an artifact id that is not one, or that no entry has
    not_an_id = flock("trace", "audit", "--artifact", "zz", "--traces", store)
    assert not_an_id.exit_code == 2 and "'zz' is not an artifact id or the start of one" in not_an_id.output
    unknown = flock("trace", "audit", "--artifact", "ffffffff", "--traces", store)
    assert unknown.exit_code == 2 and "no artifact starting with 'ffffffff'" in unknown.output
    # flock top refuses an unknown run before it starts
    top = flock("top", "ffff", "--traces", store)
    assert top.exit_code == 2 and "no run with id 'ffff'" in top.output


def test_a_run_stopped_by_ctrl_c_is_recorded_as_interrupted(tmp_path: Path) -> None:
    import signal

    store = tmp_path / "traces.duckdb"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flock_cli",
            "run",
            str(RECIPES / "live_demo.yaml"),
            "-q",
            "--board",
            ":memory:",
            "-i",
            f"Topic={RECIPES / 'inputs' / 'topics.json'}",
        ],
        cwd=tmp_path,
        env=_env(store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupted mid-run, timed from when its trace store appears (the run has started): how
    # long the process takes to start varies with the machine's load. The first runs end after a
    # second; all 18 take more than four.
    deadline = time.monotonic() + 60
    while not store.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    time.sleep(1.5)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    recorded = TraceReader(store).run(None)
    assert recorded.status == "interrupted"
    assert 0 < recorded.agent_runs < 18


async def test_a_nested_traced_run_is_a_span_of_the_outer_run(tmp_path: Path) -> None:
    from flock_cli import Flock, TestEngine
    from tests.models import Idea, Movie

    flock = Flock(traces=tmp_path / "t.duckdb")
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock.traced_run("outer"), flock.traced_run("inner"):
        await flock.publish(Idea(topic="a"))
        await flock.run_until_idle()
    await flock.shutdown()
    reader = TraceReader(tmp_path / "t.duckdb")
    [run] = reader.runs()
    assert (run.name, run.agent_runs) == ("outer", 1)
    spans = {s.name: s for s in reader.spans(run.run_id)}
    assert spans["inner"].parent_id == spans["outer"].span_id
    assert spans["flock.publish"].parent_id == spans["inner"].span_id
