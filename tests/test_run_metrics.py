"""Metrics engines and components return reach the run's spans and `flock trace show`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from flock_cli import AgentComponent, EngineComponent, EvalResult, Flock, FunctionEngine
from flock_cli.cli.app import app
from flock_cli.core.components import Context, EvalInputs
from flock_cli.tracing.reader import TraceReader
from flock_cli.tracing.run_metrics import MAX_TEXT
from tests.models import Idea, Tagline

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def flock_cli(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def retrieve(inputs: EvalInputs) -> EvalResult:
    return EvalResult(
        artifacts=[Tagline(line=inputs.artifacts[0].payload["topic"])],
        metrics={
            "latency_ms": 12.5,
            "docs_retrieved": 3,
            "confidence": 0.92,
            "cached": False,
            "retriever": "bm25",
            "scores": {"top": 0.9, "mean": 0.4},
            "ids": [1, 2],
            "odd": float("nan"),
            "long": "x" * (MAX_TEXT + 50),
            "nothing": None,
        },
    )


class Checker(EngineComponent):
    """A second engine in the chain: its `confidence` replaces the first engine's on the run."""

    async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
        return EvalResult(metrics={"confidence": 0.5, "checked": True})


class Stamp(AgentComponent):
    """A utility whose post_evaluate adds a metric of its own."""

    async def on_post_evaluate(
        self, agent: Any, ctx: Context, inputs: EvalInputs, result: EvalResult
    ) -> EvalResult:
        result.metrics["reviewed_by"] = "stamp"
        return result


async def test_engine_and_component_metrics_reach_the_run_span_and_trace_show(tmp_path: Path) -> None:
    store = tmp_path / "traces.duckdb"
    flock = Flock(traces=store)
    (
        flock.agent("retriever")
        .consumes(Idea)
        .publishes(Tagline)
        .with_engines(FunctionEngine(retrieve), Checker())
        .with_utilities(Stamp())
    )
    await flock.publish(Idea(topic="tides"))
    await flock.run_until_idle()
    await flock.shutdown()
    assert flock.tracer.problems == []

    expected = {
        "cached": False,
        "checked": True,
        "confidence": 0.5,  # the later engine wins a name both return
        "docs_retrieved": 3,
        "ids": "[1, 2]",  # not a number, a string or a mapping: its JSON text
        "latency_ms": 12.5,
        "long": "x" * (MAX_TEXT - 1) + "…",
        "nothing": None,
        "odd": "NaN",
        "retriever": "bm25",
        "reviewed_by": "stamp",
        "scores.mean": 0.4,  # mappings are flattened
        "scores.top": 0.9,
    }
    shown = flock_cli("trace", "show", "--traces", store, "--json")
    assert shown.exit_code == 0, shown.output
    [root] = json.loads(shown.stdout)["tree"]
    [run] = root["runs"]
    assert run["metrics"] == expected
    assert isinstance(run["metrics"]["docs_retrieved"], int)

    text = flock_cli("trace", "show", "--traces", store)
    assert "metrics: cached=false, checked=true, confidence=0.5, docs_retrieved=3" in " ".join(
        text.stdout.split()
    )

    # Each engine.call span keeps what its own engine returned.
    reader = TraceReader(store)
    spans = reader.spans(reader.run(None).run_id)
    calls = {s.attributes["flock.engine"]: s.attributes for s in spans if s.name == "engine.call"}
    assert calls["FunctionEngine"]["flock.metric.confidence"] == 0.92
    assert calls["Checker"]["flock.metric.confidence"] == 0.5
    assert "flock.metric.reviewed_by" not in calls["Checker"]

    # The OTLP export carries them typed.
    out = tmp_path / "otlp.json"
    assert flock_cli("trace", "export", "--traces", store, "--format", "otlp", "--output", out).exit_code == 0
    otlp = json.loads(out.read_text())
    spans_out = [s for r in otlp["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    [agent_run] = [s for s in spans_out if s["name"].startswith("invoke_agent ")]
    attributes = {a["key"]: a["value"] for a in agent_run["attributes"]}
    assert attributes["flock.metric.docs_retrieved"] == {"intValue": "3"}
    assert attributes["flock.metric.latency_ms"] == {"doubleValue": 12.5}


RECIPE = """
    name: scored
    types:
      Question:
        fields: {text: str}
      Answer:
        fields: {text: str, confidence: float}
      Note:
        fields: {text: str}
    agents:
      answerer:
        consumes: Question
        publishes: Answer
        engine: {kind: function, function: "scored_lib:answer"}
        best_of: {n: 3, score: "scored_lib:confidence"}
      echo:
        consumes: Answer
        publishes: Note
        engine: test
"""
LIB = """
    import itertools

    from flock_cli import Artifact, EvalResult

    _tries = itertools.count(1)

    def answer(inputs):
        # Recipe-declared types have no class: a full EvalResult carries its outputs as Artifacts.
        n = next(_tries)
        payload = {"text": inputs.artifacts[0].payload["text"], "confidence": n / 10}
        return EvalResult(
            artifacts=[Artifact(type="Answer", payload=payload)],
            metrics={"confidence": n / 10, "docs_retrieved": n},
        )

    def confidence(result):
        return result.metrics["confidence"]
"""


def test_a_recipes_best_of_score_and_engine_metrics_are_in_trace_show(tmp_path: Path) -> None:
    (tmp_path / "scored_lib.py").write_text(textwrap.dedent(LIB))
    recipe = tmp_path / "scored.yaml"
    recipe.write_text(textwrap.dedent(RECIPE))
    store = tmp_path / "traces.duckdb"
    ran = runner.invoke(
        app,
        ["run", str(recipe), "--board=:memory:", "--traces", str(store), "-i", "Question=-", "--quiet"],
        input='{"text": "why"}',
    )
    assert ran.exit_code == 0, ran.output
    tree = json.loads(flock_cli("trace", "show", "--traces", store, "--json").stdout)["tree"]
    [answerer] = tree[0]["runs"]
    metrics = answerer["metrics"]
    assert metrics["best_of.n"] == 3 and metrics["best_of.succeeded"] == 3
    assert metrics["best_of.score"] == metrics["confidence"] == 0.3  # the best of the three tries
    assert metrics["docs_retrieved"] == 3
    [echo] = answerer["outputs"][0]["runs"]
    assert echo["agent"] == "echo" and echo["metrics"] == {"test_engine_outputs": 1}
