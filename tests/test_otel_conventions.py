"""OpenTelemetry as collectors and GenAI tools expect it: spans named by the GenAI semantic
conventions, one trace per published input (the W3C trace context travels with artifacts, across
processes), span links for joins, the capture-content switch and the resource attributes.

Spans are received by a real HTTP receiver on 127.0.0.1 (``collector`` from test_tracing.py) that
parses OTLP/JSON, or OTLP/protobuf with the official protocol package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM

from flock_cli import Flock, TestEngine
from flock_cli.engines.dspy_engine import DSPyEngine
from tests.models import Idea, Movie
from tests.otlp_receiver import Receiver as _Collector

REPO = Path(__file__).resolve().parents[1]


def _spans() -> list[dict[str, Any]]:
    return [
        span
        for post in _Collector.bodies
        for resource in post["body"]["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def _otel_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")  # ids in hex, as files have them
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


def lookup(topic: str) -> str:
    """Look facts about a topic up."""
    return f"facts about {topic}"


def _tool_lm() -> DummyLM:
    movie = json.dumps({"title": "Heist", "runtime": 100})
    return DummyLM(
        [
            {"next_thought": "look it up", "next_tool_name": "lookup", "next_tool_args": {"topic": "heists"}},
            {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "done", "movie": movie},
        ],
        adapter=dspy.JSONAdapter(),
    )


async def test_agent_model_and_tool_calls_are_named_by_the_genai_conventions(
    monkeypatch: pytest.MonkeyPatch,
    collector: str,
) -> None:
    _otel_env(monkeypatch, collector)
    flock = Flock(traces=False)
    agent = flock.agent("writer").consumes(Idea).publishes(Movie).with_tools([lookup])
    agent.with_engines(DSPyEngine(lm=_tool_lm()))
    await flock.publish(Idea(topic="heists"))
    await flock.run_until_idle()
    await flock.shutdown()
    assert flock.tracer.problems == []
    spans = _spans()
    by_name = {s["name"]: s for s in spans}
    run = by_name["invoke_agent writer"]
    assert _attrs(run)["gen_ai.operation.name"] == "invoke_agent"
    assert _attrs(run)["gen_ai.agent.name"] == "writer"
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert len(chats) == 3 and all(s["kind"] == 3 for s in chats)  # CLIENT
    chat = _attrs(chats[0])
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == "dummy"
    assert "gen_ai.provider.name" in chat and "gen_ai.usage.input_tokens" in chat
    assert chat["gen_ai.response.finish_reasons"] == {"values": [{"stringValue": "stop"}]}
    metrics = flock.tracer.metrics.render()  # the conventions' metrics, in Prometheus's naming
    labels = 'gen_ai_operation_name="chat",gen_ai_provider_name="dummy",gen_ai_request_model="dummy"'
    assert f"gen_ai_client_operation_duration_seconds_count{{{labels}}} 3" in metrics
    assert f'gen_ai_client_token_usage_count{{{labels},gen_ai_token_type="input"}} 3' in metrics
    tool = by_name["execute_tool lookup"]
    assert _attrs(tool)["gen_ai.tool.name"] == "lookup"
    # Every step of the run is in the run's trace, under the run.
    assert {s["traceId"] for s in [run, tool, *chats]} == {run["traceId"]}
    assert tool["parentSpanId"] == run["spanId"]
    correlation = {_attrs(s).get("flock.correlation_id") for s in spans}
    assert len(correlation) == 1 and None not in correlation  # on every span, the one workflow's
    resource = {
        a["key"]: a["value"]
        for a in _Collector.bodies[0]["body"]["resourceSpans"][0]["resource"]["attributes"]
    }
    assert {"service.name", "service.version", "host.name", "process.pid"} <= set(resource)
    assert resource["process.pid"] == {"intValue": str(os.getpid())}


async def test_prompt_and_answer_text_leave_the_process_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
    collector: str,
    tmp_path: Path,
) -> None:
    _otel_env(monkeypatch, collector)

    async def run_once(capture: str | None) -> list[dict[str, Any]]:
        _Collector.bodies = []
        if capture is None:
            monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
        else:
            monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
        flock = Flock(traces=tmp_path / f"traces-{capture}.duckdb")
        movie = json.dumps({"title": "Secret title", "runtime": 100})
        lm = DummyLM([{"movie": movie}], adapter=dspy.JSONAdapter())
        flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(DSPyEngine(lm=lm))
        await flock.publish(Idea(topic="secret topic"))
        await flock.run_until_idle()
        await flock.shutdown()
        return _spans()

    hidden = json.dumps(await run_once(None))
    assert "Secret title" not in hidden and "secret topic" not in hidden
    assert "invoke_agent writer" in hidden
    # The local store keeps the answers either way: replays need them.
    import duckdb

    with duckdb.connect(str(tmp_path / "traces-None.duckdb"), read_only=True) as con:
        kept = con.execute("SELECT attributes FROM events WHERE kind = 'model.call'").fetchall()
    assert "Secret title" in json.dumps(kept)
    shown = await run_once("true")
    chat = next(s for s in shown if s["name"].startswith("chat "))
    asked = json.loads(_attrs(chat)["gen_ai.input.messages"])  # the conventions' message shape
    assert {m["role"] for m in asked} <= {"system", "user", "assistant"}
    assert any("secret topic" in part["content"] for m in asked for part in m["parts"])
    [answer] = json.loads(_attrs(chat)["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert "Secret title" in answer["parts"][0]["content"] and answer["parts"][0]["type"] == "text"


async def test_a_failed_run_carries_error_type_and_an_exception_event(
    monkeypatch: pytest.MonkeyPatch,
    collector: str,
) -> None:
    from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult

    class Broken(EngineComponent):
        async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
            raise TimeoutError("the model took too long")

    _otel_env(monkeypatch, collector)
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(Broken())
    await flock.publish(Idea(topic="a"))
    await flock.run_until_idle()
    await flock.shutdown()
    run = next(s for s in _spans() if s["name"] == "invoke_agent writer")
    assert run["status"]["code"] == 2
    assert _attrs(run)["error.type"] == "TimeoutError"
    event = next(e for e in run["events"] if e["name"] == "exception")
    assert {a["key"]: a["value"]["stringValue"] for a in event["attributes"]} == {
        "exception.type": "TimeoutError",
        "exception.message": "the model took too long",
    }


async def test_each_published_input_is_a_trace_of_its_own_and_a_join_links_every_input(
    monkeypatch: pytest.MonkeyPatch,
    collector: str,
) -> None:
    from tests.models import Tagline

    _otel_env(monkeypatch, collector)
    flock = Flock(traces=False)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    flock.agent("pitch").consumes(Idea, Movie, join={"kind": "all_of", "window": 30.0}).publishes(
        Tagline
    ).with_engines(TestEngine())
    async with flock.traced_run("watching"):  # like a long `flock run --watch`
        for topic in ("a", "b", "c"):
            await flock.publish(Idea(topic=topic))
        await flock.run_until_idle()
    await flock.shutdown()
    spans = _spans()
    publishes = [s for s in spans if s["name"] == "flock.publish"]
    assert len(publishes) == 3
    assert len({s["traceId"] for s in publishes}) == 3  # one trace per published input
    writers = [s for s in spans if s["name"] == "invoke_agent writer"]
    publish_by_span = {s["spanId"]: s for s in publishes}
    for run in writers:
        assert publish_by_span[run["parentSpanId"]]["traceId"] == run["traceId"]
    joins = [s for s in spans if s["name"] == "invoke_agent pitch"]
    assert joins, "the join never ran"
    for join in joins:
        assert join.get("links"), "a join's run links the spans of its other inputs"
        linked = {link["spanId"] for link in join["links"]}
        assert linked <= {s["spanId"] for s in spans}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_in_another_process_join_the_trace_of_the_publish_that_caused_them(
    tmp_path: Path,
    collector: str,
) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}  # fmt: skip
    env["PYTHONPATH"] = str(REPO)
    recipe, board = REPO / "recipes" / "pipeline.yaml", str(tmp_path / "board.db")
    idea = str(REPO / "recipes" / "inputs" / "idea.json")
    published = _cli(
        "publish", "Idea", idea, "--recipe", str(recipe), "--board", board, cwd=tmp_path, env=env
    )
    assert published.returncode == 0, published.stderr
    publish = next(s for s in _spans() if s["name"] == "flock.publish")
    _Collector.bodies = []
    ran = _cli("run", str(recipe), "--board", board, "--engine", "test", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    spans = _spans()
    planner = next(s for s in spans if s["name"] == "invoke_agent planner")
    assert planner["traceId"] == publish["traceId"]
    assert planner["parentSpanId"] == publish["spanId"]
    editor = next(s for s in spans if s["name"] == "invoke_agent editor")
    assert editor["traceId"] == publish["traceId"]  # the whole workflow, three agents on


async def test_trace_export_from_the_store_gives_what_the_live_exporter_sent(
    monkeypatch: pytest.MonkeyPatch, collector: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from flock_cli.cli.app import app

    _otel_env(monkeypatch, collector)
    store = tmp_path / "traces.duckdb"
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock.traced_run("exported"):
        await flock.publish(Idea(topic="a"))
        await flock.run_until_idle()
    await flock.shutdown()
    live = {(s["name"], s["traceId"], s["spanId"], s.get("parentSpanId")) for s in _spans()}
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "newsroom")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    done = CliRunner().invoke(app, ["trace", "export", "--format", "otlp", "--traces", str(store)])
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    resource = {a["key"]: a["value"] for a in document["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "newsroom"}
    assert resource["deployment.environment"] == {"stringValue": "test"}
    assert resource["process.pid"] == {"intValue": str(os.getpid())}
    spans = [s for r in document["resourceSpans"] for scope in r["scopeSpans"] for s in scope["spans"]]
    exported = {(s["name"], s["traceId"], s["spanId"], s.get("parentSpanId")) for s in spans}
    wanted = {"exported", "flock.publish", "invoke_agent writer", "engine.call"}
    assert {s for s in exported if s[0] in wanted} == {s for s in live if s[0] in wanted}


def test_trace_export_send_posts_a_stored_run_to_the_collector(
    monkeypatch: pytest.MonkeyPatch, collector: str, tmp_path: Path
) -> None:
    import asyncio
    import base64

    from typer.testing import CliRunner

    from flock_cli.cli.app import app

    pytest.importorskip("opentelemetry.proto", reason="the [otlp] extra is not installed")
    store = tmp_path / "traces.duckdb"

    async def offline_run() -> None:  # no collector while it runs: shipped later
        flock = Flock(traces=store)
        flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
        async with flock.traced_run("offline"):
            await flock.publish(Idea(topic="a"))
            await flock.run_until_idle()
        await flock.shutdown()

    asyncio.run(offline_run())
    runner = CliRunner()
    missing = runner.invoke(app, ["trace", "export", "--send", "--traces", str(store)])
    assert missing.exit_code == 2 and "OTEL_EXPORTER_OTLP_ENDPOINT" in missing.output
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    done = runner.invoke(app, ["trace", "export", "--send", "--traces", str(store)])
    assert done.exit_code == 0, done.output
    assert "sent" in done.output and "http/protobuf" in done.output
    assert all(p["headers"]["content-type"] == "application/x-protobuf" for p in _Collector.bodies)
    spans = _spans()
    names = {s["name"] for s in spans}
    assert {"offline", "flock.publish", "invoke_agent writer"} <= names
    publish = next(s for s in spans if s["name"] == "flock.publish")
    run = next(s for s in spans if s["name"] == "invoke_agent writer")
    assert run["traceId"] == publish["traceId"] and base64.b64decode(run["traceId"]).hex() != "0" * 32
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    refused = runner.invoke(app, ["trace", "export", "--send", "--traces", str(store)])
    assert refused.exit_code == 1 and "did not take run" in refused.output


def test_otlp_documents_stay_valid_json_and_protobuf_whatever_the_values() -> None:
    pytest.importorskip("opentelemetry.proto", reason="the [otlp] extra is not installed")
    from flock_cli.tracing.otlp import encode
    from flock_cli.tracing.otlp_protobuf import to_protobuf

    span = {
        "trace_id": "a" * 32, "span_id": "b" * 16, "parent_id": None, "name": "agent.run", "kind": "internal",
        "start_ns": 1, "end_ns": 2, "status": "ok", "message": "not shown on an ok span",
        "attributes": {"score": float("nan"), "limit": float("inf"), "low": float("-inf")}, "events": [],
    }  # fmt: skip
    document = encode([span], "flock")
    text = json.dumps(document, allow_nan=False)  # raises on a bare NaN
    [sent] = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert "message" not in sent["status"]
    assert to_protobuf(json.loads(text))  # protobuf's JSON mapping takes "NaN" and "Infinity"
