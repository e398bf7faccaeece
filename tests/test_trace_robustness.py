"""Tracing under bad conditions: odd values, a store that vanishes, idle and nested flocks.

Each test is a way the trace writer once lost traces for good, or held on to resources, found in
review; all go through the public API and a real DuckDB store.
"""

from __future__ import annotations

import asyncio
import enum
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli import AfterVisibility, Flock, FunctionEngine, ManualClock, TestEngine
from flock_cli.cli.app import app
from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.tracing.reader import TraceReader
from flock_cli.tracing.records import Span
from flock_cli.tracing.tracer import Tracer
from tests.models import Idea, Movie, Tagline
from tests.trace_seed import seed


def _ingest_processes(store: Path) -> list[int]:
    """Pids of live ingest processes writing ``store`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"flock_cli.tracing.ingest" in cmdline and str(store).encode() in cmdline and status != "Z":
            pids.append(int(entry.name))
    return pids


async def test_event_attributes_json_cannot_hold_are_kept_in_a_form_it_can(tmp_path: Path) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop

    class Odd(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
            ctx.trace.event("odd", keys={(1, 2): "pair"}, loop=loop)
            ctx.trace.event("fine", n=1)
            return EvalResult(artifacts=[Tagline(line="ok")])

    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    flock.agent("odd").consumes(Idea).publishes(Tagline).with_engines(Odd())
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    assert flock.tracer.problems == []
    reader = TraceReader(store)
    run = reader.run(None)
    events = {e.kind: e.attributes for e in reader.events(run.run_id, ("odd", "fine"))}
    assert events["odd"]["keys"] == {"(1, 2)": "pair"}
    assert events["odd"]["loop"]["self"]["self"]  # cut off some levels down, as its repr
    assert events["fine"] == {"n": 1}
    assert run.artifacts == 2


async def test_a_span_marshal_refuses_does_not_cost_the_spans_sent_with_it(tmp_path: Path) -> None:
    class Model(enum.StrEnum):  # a str subclass: engine metrics accept it, marshal does not
        SMALL = "small"

    class Reporting(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
            return EvalResult(artifacts=[Tagline(line="ok")], metrics={"model": Model.SMALL})

    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    flock.agent("odd").consumes(Idea).publishes(Tagline).with_engines(Reporting())
    flock.agent("plain").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish_many([Idea(topic=str(n)) for n in range(5)])  # their spans share frames
    await flock.shutdown()
    assert flock.tracer.problems == []
    reader = TraceReader(store)
    runs = [s.agent for s in reader.spans(reader.run(None).run_id) if s.name == "agent.run"]
    assert sorted(runs) == ["odd"] * 5 + ["plain"] * 5


async def test_a_payload_with_a_lone_surrogate_is_refused_and_later_traces_flow(tmp_path: Path) -> None:
    """A lone surrogate is not text: the trace store stored it as '?' and printing the board
    failed, so publishing refuses it (naming the type and field) and stores nothing."""
    from flock_cli.errors import InvalidPayloadError

    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    with pytest.raises(InvalidPayloadError, match="'Idea': topic: it holds a lone surrogate"):
        await flock.publish(Idea(topic="bad \udcff byte"))
    await flock.publish(Idea(topic="fine"))
    await flock.shutdown()
    assert flock.tracer.problems == []
    topics = sorted(a.payload["topic"] for a in TraceReader(store).artifacts())
    assert topics == ["fine"]


async def test_a_store_deleted_mid_run_is_made_again(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    await flock.publish(Idea(topic="first"))
    assert flock.tracer.flush(20)
    store.unlink()
    await flock.publish(Idea(topic="second"))
    assert flock.tracer.flush(20)
    await flock.shutdown()
    assert flock.tracer.problems == []
    assert [a.payload["topic"] for a in TraceReader(store).artifacts()] == ["second"]


async def test_an_idle_flock_lets_its_writer_thread_and_ingest_process_go(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.run_until_idle()
    assert flock.tracer.flush(20)
    assert _ingest_processes(store)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        _ingest_processes(store) or any(t.name == "flock-trace-writer" for t in threading.enumerate())
    ):
        await asyncio.sleep(0.2)  # the loop stays alive: status snapshots must not keep it busy
    assert _ingest_processes(store) == []
    assert not any(t.name == "flock-trace-writer" for t in threading.enumerate())
    await flock.publish(Idea(topic="b"))  # and work after the quiet spell is traced again
    await flock.shutdown()
    assert flock.tracer.problems == []
    assert sorted(a.payload.get("topic", "") for a in TraceReader(store).artifacts() if a.type == "Idea") == [
        "a",
        "b",
    ]


async def test_a_flock_inside_another_flocks_traced_run_has_a_run_of_its_own(tmp_path: Path) -> None:
    outer = Flock(traces=tmp_path / "outer.duckdb")
    inner = Flock(traces=tmp_path / "inner.duckdb")
    async with outer.traced_run("outer"):
        await outer.publish(Idea(topic="a"))
        async with inner.traced_run("inner"):
            await inner.publish(Idea(topic="b"))
    await outer.shutdown()
    await inner.shutdown()
    inner_runs = TraceReader(tmp_path / "inner.duckdb").runs()
    assert [(r.name, r.artifacts) for r in inner_runs] == [("inner", 1)]
    assert [r.name for r in TraceReader(tmp_path / "outer.duckdb").runs()] == ["outer"]


async def test_a_schedule_decision_after_an_embargo_is_traced_under_its_publish(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    clock = ManualClock()
    flock = Flock(traces=store, clock=clock)
    seen: list[str] = []
    flock.agent("reader").consumes(Idea).with_engines(FunctionEngine(lambda i, c: seen.append(c.agent)))
    async with flock.traced_run("embargo"):
        await flock.publish(Idea(topic="later"), visibility=AfterVisibility(ttl=timedelta(seconds=5)))
        await flock.run_until_idle()
        assert flock.tracer.flush(20)  # the publish span is written before the embargo lifts
        await clock.advance(5)
        await flock.run_until_idle()
    await flock.shutdown()
    assert seen == ["reader"]
    reader = TraceReader(store)
    spans = reader.spans(reader.run(None).run_id)
    publish = next(s for s in spans if s.name == "flock.publish")
    print([(s.name, s.span_id, s.parent_id, s.attributes) for s in spans])
    schedules = [s for s in spans if s.name == "flock.schedule" and s.attributes["flock.artifacts"] == 1]
    # the embargoed delivery when published, then the lifted one: both under the publish
    assert [s.attributes["flock.deliveries"] for s in schedules] == [0, 1]
    assert all(s.parent_id == publish.span_id for s in schedules)


def test_a_child_never_takes_its_parents_id() -> None:
    kept: list[Any] = []

    class Sink:
        problems: list[str] = []

        def put(self, record: Any) -> None:
            kept.append(record)

        def flush(self, timeout: float) -> bool:
            return True

        def close(self, timeout: float) -> None:
            pass

    tracer = Tracer([Sink()])
    parent = Span("ab" * 16, "0123456789ab0000", None, "run", time.time_ns())
    tracer.record(parent, "stage", 1, 2)
    tracer.record(parent, "stage", 3, 4)
    ids = [child[0] for child in parent.children or ()]
    assert len(set(ids)) == 2 and parent.span_id not in ids


async def test_a_relative_store_path_means_where_the_flock_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flock = Flock(traces=Path("rel") / "t.duckdb")
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")  # monkeypatch restores the first directory afterwards
    await flock.publish(Idea(topic="a"))
    await flock.shutdown()
    assert (tmp_path / "rel" / "t.duckdb").exists()
    assert not (tmp_path / "elsewhere" / "rel").exists()


def test_sql_and_audit_show_values_as_they_are_not_as_markup(tmp_path: Path) -> None:
    store = seed(tmp_path / "traces.duckdb")
    result = CliRunner().invoke(
        app, ["trace", "sql", "SELECT '[bold]x[/' AS \"[v]\"", "--traces", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert "[bold]x[/" in result.output and "[v]" in result.output


def test_an_empty_or_damaged_trace_store_is_named_for_what_it_is(tmp_path: Path) -> None:
    runner = CliRunner()
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "pipeline.yaml"
    ideas = tmp_path / "ideas.json"
    ideas.write_text('[{"topic": "alpha"}, {"topic": "beta"}]')
    run = ["run", str(recipe), "--engine", "test", "-i", f"Idea={ideas}", "--board", ":memory:", "-q"]
    empty = tmp_path / "empty.duckdb"
    empty.write_bytes(b"")
    refused = runner.invoke(app, [*run, "--traces", str(empty)])
    assert refused.exit_code == 2 and f"{empty} is an empty file, not a DuckDB trace store" in refused.output
    store = tmp_path / "t.duckdb"
    assert runner.invoke(app, [*run, "--traces", str(store)]).exit_code == 0
    data = bytearray(store.read_bytes())
    data[12288 : 12288 + 64] = bytes(b ^ 0xFF for b in data[12288 : 12288 + 64])  # a block's checksum fails
    store.write_bytes(bytes(data))
    damaged = runner.invoke(app, [*run[:-1], "--traces", str(store)])
    assert damaged.exit_code == 0, damaged.output  # the run itself is fine: its traces wait in the spool
    assert f"trace store {store} cannot be opened" in damaged.output
    assert "held by another process" not in damaged.output and "move it aside" in damaged.output
    assert "flock trace show" not in damaged.output  # the store has nothing to show


def test_a_store_read_while_another_process_creates_it_is_not_called_empty(tmp_path: Path) -> None:
    # DuckDB creates the file, then writes its header: a reader polling for the store (as
    # `flock top` and scripts do) could meet the empty file in between and was told to remove it.
    finished = seed(tmp_path / "finished.duckdb")
    store = tmp_path / "traces.duckdb"
    store.write_bytes(b"")  # created, header not written yet

    def create() -> None:
        time.sleep(0.3)
        store.write_bytes(finished.read_bytes())

    writer = threading.Thread(target=create)
    writer.start()
    try:
        runs = TraceReader(store).runs()
    finally:
        writer.join()
    assert [r.name for r in runs] == [r.name for r in TraceReader(finished).runs()]
