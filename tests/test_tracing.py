"""Tracing through the public API: what a traced flock writes to a real DuckDB trace store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flock_cli import Flock, FunctionEngine, PrivateVisibility, RetryPolicy, TestEngine
from flock_cli.errors import TraceStoreError, UsageError
from flock_cli.tracing.analysis import build_tree, critical_path, runs_of
from flock_cli.tracing.reader import TraceReader
from tests.models import Idea, Movie, Result, Tagline, Task
from tests.otlp_receiver import Receiver as _Collector


def _failing_once() -> Any:
    calls = {"n": 0}

    def engine(inputs: Any) -> Result:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("model slow")
        return Result(n=inputs.artifacts[0].payload["n"], by="worker")

    return engine


async def test_a_traced_run_records_spans_artifacts_and_events(tmp_path: Path) -> None:
    store = tmp_path / "traces.duckdb"
    flock = Flock(traces=store, max_agent_iterations=2)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    flock.agent("tagger").consumes(Movie).publishes(Tagline).with_engines(TestEngine())
    flock.agent("worker").consumes(Task).publishes(Result).with_engines(
        FunctionEngine(_failing_once())
    ).with_retry_policy(RetryPolicy(max_attempts=2, initial_delay=0, jitter=False))
    flock.agent("broken").consumes(Result).publishes(Tagline).with_engines(
        FunctionEngine(lambda inputs: (_ for _ in ()).throw(ValueError("bad result")))
    )
    flock.agent("outsider").consumes(Idea).publishes(Tagline).with_engines(TestEngine())
    async with flock.traced_run("demo", recipe="demo.yaml") as scope:
        await flock.publish(Idea(topic="space"), visibility=PrivateVisibility(agents=frozenset({"writer"})))
        await flock.publish(Task(n=1))
        summary = await flock.run_until_idle()
    await flock.shutdown()
    assert flock.tracer.problems == []
    assert summary.retries == 1 and len(summary.dead_letters) == 1

    reader = TraceReader(store)
    run = reader.run(scope.trace_id[:10])
    assert (run.name, run.status, run.recipe) == ("demo", "failed", "demo.yaml")
    assert (run.artifacts, run.agent_runs, run.failed_attempts, run.dead_letters) == (5, 5, 2, 1)
    names = {s.name for s in reader.spans(run.run_id)}
    assert {"demo", "flock.publish", "store.append", "flock.schedule", "agent.run", "stage.evaluate",
            "engine.call", "store.complete"} <= names  # fmt: skip
    kinds = [e.kind for e in reader.events(run.run_id)]
    assert kinds.count("visibility.denied") == 1 and "run.retry" in kinds and "dead_letter" in kinds
    denial = next(e for e in reader.events(run.run_id) if e.kind == "visibility.denied")
    assert denial.agent == "outsider" and denial.attributes["visibility"].startswith("Private")
    movie = next(a for a in reader.artifacts(run.run_id) if a.type == "Movie")
    assert movie.produced_by == "writer" and set(movie.payload) == {"title", "runtime"}

    roots, orphans = build_tree(
        reader.artifacts(run.run_id), reader.spans(run.run_id), reader.events(run.run_id)
    )
    assert orphans == []
    idea = next(r for r in roots if r.artifact.type == "Idea")
    assert [r.final.agent for r in idea.runs] == ["writer"]
    assert [o.artifact.type for o in idea.runs[0].outputs] == ["Movie"]
    task = next(r for r in roots if r.artifact.type == "Task")
    worker = task.runs[0]
    assert len(worker.attempts) == 2 and worker.final.attributes["flock.outcome"] == "ok"
    path = [r.final.agent for r in critical_path(runs_of(reader.spans(run.run_id)))]
    assert path[-1] in ("tagger", "broken") and len(path) == 2


async def test_work_outside_a_traced_run_gets_one_trace_per_publish(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.publish(Idea(topic="b"))
    await flock.run_until_idle()
    await flock.shutdown()
    runs = TraceReader(store).runs()
    assert [(r.name, r.artifacts, r.agent_runs, r.status) for r in runs] == [("publish Idea", 2, 1, "ok")] * 2


async def test_tracing_off_writes_nothing_and_env_chooses_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    assert not flock.tracer.enabled and not (tmp_path / ".flock").exists()
    monkeypatch.setenv("FLOCK_TRACES", str(tmp_path / "env.duckdb"))
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    assert TraceReader(tmp_path / "env.duckdb").run(None).agent_runs == 1
    monkeypatch.delenv("FLOCK_TRACES")
    flock = Flock()  # the default: .flock/traces.duckdb in the working directory
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    assert TraceReader(tmp_path / ".flock" / "traces.duckdb").run(None).artifacts == 2


def test_unusable_trace_paths_are_refused_at_once(tmp_path: Path) -> None:
    # (a folder is usable: the flock writes a store of its own in it, tests/test_trace_multi.py)
    (tmp_path / "notes.txt").write_text("hello, not a database")
    with pytest.raises(TraceStoreError, match="is not a DuckDB trace store"):
        Flock(traces=tmp_path / "notes.txt")
    with pytest.raises(UsageError, match="traces= takes"):
        Flock(traces=3)  # type: ignore[arg-type]


_HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS holder (x INTEGER)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


async def test_a_store_locked_by_another_process_delays_traces_but_loses_none(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store), "2.5"], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        flock = Flock(traces=store)
        flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
        async with flock.traced_run("while-locked"):
            for i in range(5):
                await flock.publish(Idea(topic=str(i)))
            await flock.run_until_idle()
        await flock.shutdown()  # waits for the holder to let go (up to 3 s), then writes
    # On a loaded machine the holder may let go after those 3 s: the rest is then spooled, said
    # once, and written by the next reader. Either way nothing is lost.
    assert all("trace batches are waiting" in p for p in flock.tracer.problems), flock.tracer.problems
    assert len(flock.tracer.problems) <= 1
    reader = TraceReader(store, wait=5)
    run = reader.run(None)
    assert (run.name, run.artifacts, run.agent_runs) == ("while-locked", 10, 5)


async def test_a_dead_ingest_process_is_reported(tmp_path: Path) -> None:
    flock = Flock(traces=tmp_path / "t.duckdb")
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    writer = flock.tracer.sinks[0]
    assert writer.flush(20)
    writer._process.popen.kill()  # type: ignore[attr-defined]  # the ingest process dies mid-run
    writer._process.popen.wait()  # type: ignore[attr-defined]
    await flock.publish(Idea(topic="b"))
    assert not writer.flush(5)  # its records cannot be written now, and flush says so
    await flock.shutdown()
    problems = " ".join(flock.tracer.problems)
    assert "trace ingest process exited" in problems or "dropped" in problems


async def test_otlp_export_posts_spans_to_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=flock")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "newsroom")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock.traced_run("otlp"):
        await flock.publish(Idea(topic="a"))
        await flock.run_until_idle()
    await flock.shutdown()
    assert flock.tracer.problems == []
    posts = _Collector.bodies
    assert posts and all(p["path"] == "/v1/traces" and p["headers"]["x-team"] == "flock" for p in posts)
    resource = posts[0]["body"]["resourceSpans"][0]
    assert {"key": "service.name", "value": {"stringValue": "newsroom"}} in resource["resource"]["attributes"]
    spans = [s for p in posts for s in p["body"]["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    names = {s["name"] for s in spans}
    assert {"otlp", "flock.publish", "invoke_agent writer", "engine.call"} <= names
    # The published input starts a trace of its own (the workflow's); the flock run's root span
    # stays in the run's trace, which holds nothing else.
    publish = next(s for s in spans if s["name"] == "flock.publish")
    run = next(s for s in spans if s["name"] == "invoke_agent writer")
    root = next(s for s in spans if s["name"] == "otlp")
    assert run["traceId"] == publish["traceId"] != root["traceId"]
    assert run["parentSpanId"] == publish["spanId"]


async def test_otlp_http_protobuf_reaches_a_collector_that_parses_it(
    monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    pytest.importorskip("opentelemetry.proto", reason="the [otlp] extra is not installed")
    import base64

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)  # OpenTelemetry's default: protobuf
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock.traced_run("protobuf"):
        await flock.publish(Idea(topic="a"))
        await flock.run_until_idle()
    await flock.shutdown()
    assert flock.tracer.problems == []
    posts = _Collector.bodies
    assert posts and all(p["headers"]["content-type"] == "application/x-protobuf" for p in posts)
    spans = [s for p in posts for s in p["body"]["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert {"protobuf", "flock.publish", "invoke_agent writer"} <= {s["name"] for s in spans}
    trace_ids = {base64.b64decode(s["traceId"]).hex() for s in spans}
    assert len(trace_ids) == 2 and all(len(t) == 32 for t in trace_ids)  # 16 bytes, not hex text
    run = next(s for s in spans if s["name"] == "invoke_agent writer")
    assert {"key": "gen_ai.agent.name", "value": {"stringValue": "writer"}} in run["attributes"]
    assert {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}} in run["attributes"]


def test_otlp_settings_that_cannot_be_honoured_are_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    # A protocol not spoken here is a warning: the flock runs, with its local traces only.
    with caplog.at_level("WARNING", logger="flock_cli.tracing"):
        assert not Flock(traces=False).tracer.enabled
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not spoken here" in caplog.text
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        Flock(traces=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")  # not spoken here: a warning, no export
    with caplog.at_level("WARNING", logger="flock_cli.tracing"):
        assert not Flock(traces=False).tracer.enabled
    assert "OTEL_TRACES_EXPORTER=zipkin is not spoken here" in caplog.text
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not Flock(traces=False).tracer.enabled


async def test_metrics_render_in_the_prometheus_text_format() -> None:
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.run_until_idle()
    text = flock.tracer.metrics.render()
    assert 'flock_artifacts_published_total{type="Idea"} 1' in text
    assert 'flock_agent_runs_total{agent="writer",status="ok"} 1' in text
    assert 'flock_agent_run_duration_seconds_bucket{agent="writer",le="+Inf"} 1' in text
    assert 'flock_agent_run_duration_seconds_count{agent="writer"} 1' in text
    assert "# TYPE flock_deliveries_pending gauge" in text
    await flock.shutdown()


async def test_engines_report_usage_and_streamed_text_through_ctx_trace(tmp_path: Path) -> None:
    from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult

    class Talker(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
            ctx.trace.stream("once upon ")
            ctx.trace.stream("a time")
            ctx.trace.usage(model="local/tiny", input_tokens=12, output_tokens=30, cost=0.002)
            return EvalResult(artifacts=[Tagline(line="once upon a time")])

    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    flock.agent("talker").consumes(Idea).publishes(Tagline).with_engines(Talker())
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    reader = TraceReader(store)
    run = reader.run(None)
    assert run.tokens == 42 and run.cost == pytest.approx(0.002)
    stream = [e.attributes["text"] for e in reader.events(run.run_id, ("engine.stream",))]
    assert stream == ["once upon ", "a time"]


async def test_the_trace_store_is_written_in_a_format_older_duckdb_shells_read(tmp_path: Path) -> None:
    """DuckDB 2.0 writes storage version 69 by default, which the DuckDB 1.x shells people have
    from pip and their distribution refuse ("can only read versions between 64 and 68"). The
    store is written in DuckDB 1.0's format: the file header says 64."""
    import struct

    store = tmp_path / "traces.duckdb"
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock.traced_run("compat"):
        await flock.publish(Idea(topic="a"))
        await flock.run_until_idle()
    await flock.shutdown()
    header = store.read_bytes()[:20]
    assert header[8:12] == b"DUCK"
    assert struct.unpack("<Q", header[12:20])[0] == 64
    assert [r.name for r in TraceReader(store).runs()] == ["compat"]


def test_the_design_documents_trace_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLOCK_AUTO_TRACE and FLOCK_TRACE_FILE (the blackboard document's) mean what they say when
    FLOCK_TRACES (ours) is not set; FLOCK_TRACES wins when it is."""
    from flock_cli.tracing.setup import writer_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOCK_TRACES", raising=False)
    monkeypatch.setenv("FLOCK_AUTO_TRACE", "true")
    monkeypatch.setenv("FLOCK_TRACE_FILE", "true")
    assert writer_path(None) == Path(".flock/traces.duckdb")
    monkeypatch.setenv("FLOCK_TRACE_FILE", "false")
    assert writer_path(None) is None
    assert not Flock().tracer.writes_store
    monkeypatch.setenv("FLOCK_TRACE_FILE", "true")
    monkeypatch.setenv("FLOCK_AUTO_TRACE", "0")
    assert writer_path(None) is None
    monkeypatch.setenv("FLOCK_TRACES", str(tmp_path / "mine.duckdb"))
    assert writer_path(None) == tmp_path / "mine.duckdb"
    assert writer_path(tmp_path / "given.duckdb") == tmp_path / "given.duckdb"
    monkeypatch.delenv("FLOCK_TRACES")
    monkeypatch.setenv("FLOCK_AUTO_TRACE", "sometimes")
    with pytest.raises(UsageError, match="FLOCK_AUTO_TRACE"):
        writer_path(None)
