"""Record and replay: a recipe run on a model once (DSPy's DummyLM injected into its engines),
then replayed from the trace store and from an exported file by the CLI, with no model at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from typer.testing import CliRunner

from flock_cli import DSPyEngine
from flock_cli.cli.app import app
from flock_cli.engines.recording import Recording
from flock_cli.recipe import load_recipe
from tests.models import Tagline

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "recipes" / "pipeline.yaml"
IDEA = ROOT / "recipes" / "inputs" / "idea.json"
runner = CliRunner()

ANSWERS = {
    "planner": [{"outline": {"title": "Blackboards", "sections": ["Why", "How"]}}],
    "writer": [
        {"draft": {"title": "Blackboards", "body": "short"}},  # too short: asked again
        {"draft": {"title": "Blackboards", "body": "Agents that share a board need no call graph."}},
    ],
    "editor": [
        {"article": {"title": "Blackboards", "body": "Agents that share a board need no call graph.",
                     "reading_minutes": 2}}
    ],
}  # fmt: skip


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


async def record(store: Path) -> tuple[str, list[dict[str, Any]]]:
    """Run the pipeline recipe on scripted models, traced into ``store``: the run id and outputs."""
    recipe = load_recipe(PIPELINE)
    flock_ = recipe.build(model="scripted/model", traces=store)
    for agent in flock_.agents:
        [engine] = agent.engines
        assert isinstance(engine, DSPyEngine)
        engine.lm = DummyLM(ANSWERS[agent.name], adapter=dspy.JSONAdapter())
    Idea = recipe.resolved.types["Idea"]
    async with flock_.traced_run("record") as scope:
        await flock_.publish(Idea.model_validate(json.loads(IDEA.read_text())))
        summary = await flock_.run_until_idle()
    await flock_.shutdown()
    assert summary.ok and flock_.tracer.problems == []
    outputs = [a.payload for a in await flock_.store.list() if a.type != "Idea"]
    return scope.trace_id, outputs


def replayed_payloads(result: Any) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    return [a["payload"] for a in data["artifacts"] if a["type"] != "Idea"]


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str, list[dict[str, Any]]]:
    import asyncio

    store = tmp_path / "traces.duckdb"
    run_id, outputs = asyncio.run(record(store))
    return store, run_id, outputs


def test_a_run_replays_from_the_trace_store_with_identical_artifacts(recorded: Any) -> None:
    store, run_id, outputs = recorded
    assert [c.agent for c in Recording.from_trace(store, run_id)] == ["planner", "writer", "editor"]
    args = ("run", PIPELINE, "-i", f"Idea={IDEA}", "--board", ":memory:", "--replay", run_id[:8],
            "--traces", store, "--json")  # fmt: skip
    first, second = replayed_payloads(flock(*args)), replayed_payloads(flock(*args))
    assert first == second == outputs
    assert outputs[-1]["reading_minutes"] == 2


def test_an_exported_recording_replays_and_names_its_calls(recorded: Any, tmp_path: Path) -> None:
    store, run_id, outputs = recorded
    file = tmp_path / "pipeline.jsonl"
    result = flock("trace", "export", run_id, "--format", "recording", "-o", file, "--traces", store)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [(c["agent"], len(c["answers"])) for c in lines] == [("planner", 1), ("writer", 2), ("editor", 1)]
    result = flock(
        "run", PIPELINE, "-i", f"Idea={IDEA}", "--board", ":memory:", "--replay-from", file, "--json"
    )
    assert replayed_payloads(result) == outputs


def test_changed_inputs_miss_the_recording_and_say_so(recorded: Any, tmp_path: Path) -> None:
    store, run_id, _ = recorded
    other = tmp_path / "idea.json"
    other.write_text('{"topic": "A different idea entirely"}')
    result = flock(
        "run", PIPELINE, "-i", f"Idea={other}", "--board", ":memory:", "--replay", run_id, "--traces", store
    )
    assert result.exit_code == 1
    assert "holds no recorded answer for agent 'planner' on these inputs" in result.output


def test_a_recipe_recording_is_replayed_when_no_model_is_configured(recorded: Any, tmp_path: Path) -> None:
    store, run_id, outputs = recorded
    folder = tmp_path / "recipe"
    (folder / "recordings").mkdir(parents=True)
    flock(
        "trace",
        "export",
        run_id,
        "--format",
        "recording",
        "-o",
        folder / "recordings" / "p.jsonl",
        "--traces",
        store,
    )
    recipe = folder / "pipeline.yaml"
    recipe.write_text(PIPELINE.read_text().replace("recordings/pipeline.jsonl", "recordings/p.jsonl"))
    result = flock("run", recipe, "-i", f"Idea={IDEA}", "--board", ":memory:", "--json")
    assert replayed_payloads(result) == outputs  # model calls are blocked in tests: nothing was called


def test_recording_mistakes_are_clear_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "pipeline.yaml"
    text = PIPELINE.read_text().replace("recordings/pipeline.jsonl", "recordings/missing.jsonl")
    recipe.write_text(text)
    line = text.splitlines().index("recording: recordings/missing.jsonl") + 1
    result = flock("run", recipe, "-i", f"Idea={IDEA}", "--board", ":memory:")
    assert result.exit_code == 2
    assert f"pipeline.yaml:{line}:12: error: recording 'recordings/missing.jsonl' not found" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "k", "agent": "a", "model": "m", "answers": ["x"]}\n{"key": "k"}\n')
    result = flock("run", PIPELINE, "-i", f"Idea={IDEA}", "--board", ":memory:", "--replay-from", bad)
    assert result.exit_code == 2
    assert f"{bad}:2: a recorded model call needs 'agent'" in result.stderr
    result = flock("run", PIPELINE, "-i", f"Idea={IDEA}", "--replay", "abc", "--replay-from", bad)
    assert result.exit_code == 2 and "give --replay RUN or --replay-from FILE, not both" in result.stderr
    result = flock("run", PIPELINE, "-i", f"Idea={IDEA}", "--engine", "test", "--replay-from", bad)
    assert result.exit_code == 2 and "nothing to replay" in result.stderr


async def test_replayed_answers_stream_to_listeners_one_run_at_a_time(recorded: Any) -> None:
    from rich.console import Console

    from flock_cli.cli.stream_view import StreamView

    store, run_id, _ = recorded
    recording = Recording.from_trace(store, run_id)
    flock_ = load_recipe(PIPELINE).build(replay=recording)
    chunks: list[Any] = []
    flock_.on_stream(chunks.append)
    console = Console(record=True, width=100)
    view = StreamView(console)
    flock_.on_stream(view.on_chunk)
    Idea = flock_.registry.resolve("Idea")
    await flock_.publish(Idea.model_validate(json.loads(IDEA.read_text())))
    assert (await flock_.run_until_idle()).ok
    by_agent: dict[str, str] = {}
    for chunk in chunks:
        by_agent[chunk.agent] = by_agent.get(chunk.agent, "") + chunk.text
    answers = {c.agent: "".join(c.answers) for c in recording}
    assert by_agent == answers
    assert [c.agent for c in chunks if c.done] == ["planner", "writer", "editor"]
    printed = console.export_text()
    assert printed.index("planner") < printed.index("writer") < printed.index("editor")
    assert '"reading_minutes": 2' in printed


def test_the_stream_view_shows_one_stream_live_and_queues_the_others() -> None:
    from rich.console import Console

    from flock_cli.cli.stream_view import StreamView
    from flock_cli.tracing.tracer import StreamChunk

    console = Console(record=True, width=80)
    view = StreamView(console)
    view.on_chunk(StreamChunk("first", "r1", "alpha "))
    view.on_chunk(StreamChunk("second", "r2", "beta one"))
    view.on_chunk(StreamChunk("second", "r2", "", done=True))  # done, but waits for the live one
    assert console.export_text(clear=False) == ""
    live = view.renderable()
    assert "── first (1 more waiting)" in live.plain and "alpha" in live.plain
    view.on_chunk(StreamChunk("first", "r1", "omega"))
    view.on_chunk(StreamChunk("first", "r1", "", done=True))
    printed = console.export_text()
    assert (
        printed.index("first")
        < printed.index("alpha omega")
        < printed.index("second")
        < printed.index("beta one")
    )
    assert view.renderable() is None


def test_a_recipe_naming_a_model_does_not_need_its_recording(tmp_path: Path) -> None:
    recipe = tmp_path / "pipeline.yaml"  # its recordings/ folder is not there
    recipe.write_text(PIPELINE.read_text())
    result = flock(
        "run", recipe, "-i", f"Idea={IDEA}", "--board", ":memory:", "--model", "openai/gpt-4o-mini"
    )
    assert "recording" not in result.output
    assert result.exit_code == 1 and "a real call to model 'openai/gpt-4o-mini' was blocked" in result.output


def test_the_key_follows_the_prompt_not_the_arrival_order(tmp_path: Path) -> None:
    import asyncio

    async def keys(order: list[str], brief_doc: str) -> Any:
        from pydantic import BaseModel

        from flock_cli import Flock, flock_type

        @flock_type(name="Brief")
        class Brief(BaseModel):
            topic: str

        Brief.__doc__ = brief_doc
        lm = DummyLM([{"tagline": {"line": "x"}}], adapter=dspy.JSONAdapter())
        flock_ = Flock(traces=tmp_path / f"{len(brief_doc)}{''.join(order)}.duckdb")
        flock_.agent("summary").consumes(Brief, batch={"size": 2}).publishes(Tagline).with_engines(
            DSPyEngine(lm=lm)
        )

        async with flock_.traced_run("keys"):
            for topic in order:
                await flock_.publish(Brief(topic=topic))
            assert (await flock_.run_until_idle()).ok
        await flock_.shutdown()
        return [c.key for c in Recording.from_trace(flock_.tracer.sinks[0].path, None)]

    first = asyncio.run(keys(["a", "b"], "A brief."))
    assert asyncio.run(keys(["b", "a"], "A brief.")) == first  # a batch's order does not matter
    assert asyncio.run(keys(["a", "b"], "Answer in French.")) != first  # its type's description does


def test_a_recording_with_bad_usage_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "k", "agent": "a", "model": "m", "answers": ["x"], "usage": [1]}\n')
    result = flock("run", PIPELINE, "-i", f"Idea={IDEA}", "--board", ":memory:", "--replay-from", bad)
    assert result.exit_code == 2 and f"{bad}:1: 'usage' must map names to numbers" in result.stderr


def test_local_model_names_that_cannot_work_exit_2(tmp_path: Path) -> None:
    for model, message in (
        (f"local:{tmp_path / 'nope.gguf'}", "nope.gguf not found"),
        ("local/llama-70b", "unknown local model 'local/llama-70b'"),
    ):
        result = flock("run", PIPELINE, "-i", f"Idea={IDEA}", "--board", ":memory:", "--model", model)
        assert result.exit_code == 2 and message in result.stderr


def test_exporting_a_run_without_model_calls_as_a_recording_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    submission = f"CodeSubmission={ROOT / 'recipes/inputs/code_submission.json'}"
    recipe = ROOT / "recipes" / "code_review.yaml"
    ran = flock("run", recipe, "--engine", "test", "--board", ":memory:", "-i", submission, "--traces", store)
    assert ran.exit_code == 0, ran.output
    result = flock("trace", "export", "--format", "recording", "-o", tmp_path / "r.jsonl", "--traces", store)
    assert result.exit_code == 2 and "made no model calls: there is no recording to export" in result.output
    assert not (tmp_path / "r.jsonl").exists()
