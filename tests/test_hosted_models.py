"""Hosted models over real HTTP: streaming, API keys from the environment, rate limits and 429s.

The model is reached through LiteLLM's OpenAI-compatible provider (``openai/NAME`` with an
``api_base``) on a small server the tests run on 127.0.0.1 (``tests/openai_server.py``): real
HTTP and server-sent events, no mocks. The suite blocks real model calls
(``FLOCK_BLOCK_MODEL_CALLS=1``); these tests reach only their own loopback server, so each
turns the block off for itself (the ``loopback`` fixture) — a loopback ``api_base`` is not
exempt from the block, which stays one simple switch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from flock_cli import DSPyEngine, Flock, Model, ModelNotConfiguredError, RateLimit
from flock_cli.tracing.reader import TraceReader
from tests.models import Idea, Tagline
from tests.openai_server import OpenAIServer, openai_server

# LiteLLM's streaming reads a pydantic attribute pydantic deprecates (a warning inside the library,
# not ours: the suite's filterwarnings=error would turn it into a failed stream)
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated")

KEY_ENV, KEY = "FLOCK_TEST_HOSTED_KEY", "sk-loopback-secret-123"
ANSWER = json.dumps({"tagline": {"line": "Dogs make every day brighter"}})


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model calls allowed (they reach only the test's server), with the key in the environment."""
    monkeypatch.delenv("FLOCK_BLOCK_MODEL_CALLS")
    monkeypatch.setenv(KEY_ENV, KEY)


def _answer(body: dict[str, Any]) -> str:
    return ANSWER


def _model(server: OpenAIServer, **options: Any) -> Model:
    return Model("openai/loopback", api_base=server.api_base, api_key_env=KEY_ENV, **options)


def _flock(model: Model, path: Path | None = None, agents: tuple[str, ...] = ("writer",)) -> Flock:
    flock = Flock(model, traces=path) if path is not None else Flock(model)
    for name in agents:
        flock.agent(name).consumes(Idea).publishes(Tagline).with_engines(DSPyEngine())
    return flock


async def test_a_hosted_model_streams_its_answer_over_http(loopback: None) -> None:
    with openai_server(_answer) as server:
        flock = _flock(_model(server))
        chunks: list[Any] = []
        flock.on_stream(chunks.append)
        await flock.publish(Idea(topic="dogs"))
        summary = await flock.run_until_idle()
        taglines = [a for a in await flock.store.list() if a.type == "Tagline"]
    assert summary.ok, summary.failures
    assert [t.payload["line"] for t in taglines] == ["Dogs make every day brighter"]
    text = [c.text for c in chunks if not c.done]
    assert "".join(text) == ANSWER and len(text) > 1  # in pieces, as the events arrived
    assert chunks[-1].done
    [(_, body, status)] = server.requests
    assert (status, body["stream"], body["stream_options"]) == (200, True, {"include_usage": True})
    assert body["model"] == "loopback"
    usage = flock.usage.total  # from the usage chunk at the end of the stream
    assert (usage.calls, usage.output_tokens) == (1, len(ANSWER) // 4 + 1)
    assert usage.input_tokens > 0


async def test_without_stream_the_answer_comes_in_one_response(loopback: None) -> None:
    with openai_server(_answer) as server:
        flock = Flock(_model(server))
        flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(DSPyEngine(stream=False))
        chunks: list[Any] = []
        flock.on_stream(chunks.append)
        await flock.publish(Idea(topic="dogs"))
        assert (await flock.run_until_idle()).ok
    assert chunks == []
    assert "stream" not in server.requests[0][1]
    assert flock.usage.total.output_tokens == len(ANSWER) // 4 + 1


async def test_the_key_is_read_from_the_environment_and_never_traced(loopback: None, tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    with openai_server(_answer) as server:
        flock = _flock(_model(server), path)
        async with flock.traced_run("keyed"):
            await flock.publish(Idea(topic="dogs"))
            summary = await flock.run_until_idle()
            assert summary.ok, [f.error for f in summary.failures]
        await flock.shutdown()
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    reader = TraceReader(path)
    stored = [json.dumps(row, default=str) for row in reader.sql_rows("SELECT * FROM spans", [])]
    stored += [json.dumps(row, default=str) for row in reader.sql_rows("SELECT * FROM events", [])]
    assert stored and not any(KEY in row for row in stored)


async def test_a_provider_quoting_the_key_back_gets_it_nowhere(loopback: None, tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    with openai_server(_answer, reject_key=True) as server:
        flock = _flock(_model(server), path)
        async with flock.traced_run("refused"):
            await flock.publish(Idea(topic="dogs"))
            [failure] = (await flock.run_until_idle()).failures
        await flock.shutdown()
    assert KEY not in failure.error and f"${{{KEY_ENV}}}" in failure.error, failure.error
    assert "Incorrect API key provided" in failure.error
    reader = TraceReader(path)
    stored = [json.dumps(row, default=str) for row in reader.sql_rows("SELECT * FROM spans", [])]
    stored += [json.dumps(row, default=str) for row in reader.sql_rows("SELECT * FROM events", [])]
    assert stored and not any(KEY in row for row in stored)


async def test_a_key_variable_that_is_not_set_fails_the_run_clearly(
    loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    flock = _flock(Model("openai/loopback", api_base="http://127.0.0.1:9/v1", api_key_env=KEY_ENV))
    await flock.publish(Idea(topic="dogs"))
    [failure] = (await flock.run_until_idle()).failures
    assert failure.error_type == ModelNotConfiguredError.__name__
    assert f"environment variable {KEY_ENV}, which is not set" in failure.error


async def test_429_answers_are_waited_out_within_one_attempt(loopback: None, tmp_path: Path) -> None:
    """Retry-After in seconds, then none (a 1 s backoff... then 2 s), then an HTTP date: the run
    succeeds on its first attempt, each wait traced, and nobody else retried the request."""
    date = formatdate(time.time() + 1, usegmt=True)
    path = tmp_path / "traces.duckdb"
    with openai_server(_answer, refusals=["1", None, date]) as server:
        flock = _flock(_model(server), path)
        async with flock.traced_run("storm"):
            await flock.publish(Idea(topic="dogs"))
            started = time.monotonic()
            summary = await flock.run_until_idle()
            took = time.monotonic() - started
        await flock.shutdown()
    assert summary.ok and not summary.failures
    assert server.statuses() == [429, 429, 429, 200]  # one request per answer: no hidden retries
    assert took >= 1 + 2 + 0.0 - 0.1
    reader = TraceReader(path)
    run = reader.runs(limit=1)[0].run_id
    waits = reader.events(run, ("model.rate_limit_wait",))
    assert [(w.agent, w.attributes["reason"]) for w in waits] == [("writer", "429")] * 3
    assert [w.attributes["seconds"] for w in waits][:2] == [1.0, 2.0]
    assert 0 <= waits[2].attributes["seconds"] <= 1.5
    assert reader.events(run, ("run.retry",)) == []
    [span] = [s for s in reader.spans(run) if s.name == "agent.run"]
    assert span.attributes["flock.attempt"] == 1
    [call] = [s for s in reader.spans(run) if s.name == "engine.call"]
    assert call.attributes["flock.metric.rate_limit_wait_s"] >= 3.0  # 1 + 2 + the date's


async def test_a_hostile_retry_after_fails_the_call_at_once(loopback: None) -> None:
    """A Retry-After past the model's max_rate_limit_wait is not waited for: the call fails with
    what happened, and the agent's retry policy sees one failed attempt."""
    with openai_server(_answer, refusals=["86400"]) as server:
        flock = _flock(_model(server, max_rate_limit_wait=5))
        await flock.publish(Idea(topic="dogs"))
        started = time.monotonic()
        summary = await flock.run_until_idle()
        took = time.monotonic() - started
    [failure] = summary.failures
    assert took < 5
    assert "86400.0s) would pass max_rate_limit_wait (5s)" in failure.error
    assert server.statuses() == [429]


async def test_requests_per_minute_spaces_the_calls_of_every_agent_using_the_model(
    loopback: None, tmp_path: Path
) -> None:
    path = tmp_path / "traces.duckdb"
    with openai_server(_answer) as server:
        model = _model(server, rate_limit=RateLimit(requests_per_minute=120))  # one every 0.5 s
        flock = _flock(model, path, agents=("writer", "poet"))
        async with flock.traced_run("paced"):
            await flock.publish_many([Idea(topic="dogs"), Idea(topic="cats")])
            assert (await flock.run_until_idle()).ok
        await flock.shutdown()
    starts = sorted(at for at, _, _ in server.requests)
    assert len(starts) == 4
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(starts))
    reader = TraceReader(path)
    waits = reader.events(reader.runs(limit=1)[0].run_id, ("model.rate_limit_wait",))
    assert waits and {w.attributes["reason"] for w in waits} == {"requests"}


async def test_tokens_per_minute_counts_the_reported_usage(loopback: None) -> None:
    with openai_server(_answer, usage=(100, 21)) as server:  # 121 tokens an answer
        model = _model(server, rate_limit=RateLimit(tokens_per_minute=120))  # 2 tokens a second
        flock = _flock(model)
        await flock.publish(Idea(topic="dogs"))
        assert (await flock.run_until_idle()).ok
        assert model.limiter() is not None
        started = time.monotonic()
        await flock.publish(Idea(topic="cats"))
        assert (await flock.run_until_idle()).ok
        took = time.monotonic() - started
    # the first answer took the bucket 1 token below zero: the next request waited half a second
    assert took >= 0.45
    assert flock.usage.total.input_tokens == 200 and flock.usage.total.output_tokens == 42


async def test_a_recipe_model_mapping_reaches_the_server(loopback: None, tmp_path: Path) -> None:
    from flock_cli.recipe import load_recipe

    with openai_server(_answer) as server:
        recipe = tmp_path / "hosted.yaml"
        recipe.write_text(
            f"""
model:
  name: openai/loopback
  api_base: {server.api_base}
  api_key_env: {KEY_ENV}
  rate_limit: {{requests_per_minute: 600}}
types:
  Idea: {{fields: {{topic: str}}}}
  Tagline: {{fields: {{line: str}}}}
agents:
  writer: {{consumes: Idea, publishes: Tagline}}
  poet:
    consumes: Idea
    publishes: Tagline
    engine: {{kind: dspy, model: openai/loopback, temperature: 0.5}}
"""
        )
        flock = load_recipe(recipe).build()
        await flock.publish_external("Idea", {"topic": "dogs"})
        assert (await flock.run_until_idle()).ok
    assert len(server.requests) == 2
    assert {body.get("temperature") for _, body, _ in server.requests} == {None, 0.5}
    engines = [a.engines[0] for a in flock.agents]
    assert isinstance(flock.model, Model) and flock.model.rate_limit == RateLimit(requests_per_minute=600)
    assert [e.model for e in engines] == [None, "openai/loopback"]
    # the poet names the recipe's model by its string: it shares the one limiter
    limiters = {id(e.language_model(default_model=flock.model).engine.model.limiter()) for e in engines}
    assert len(limiters) == 1


async def test_waiting_runs_show_as_waiting_in_flock_top(loopback: None, tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from flock_cli.dashboard.app import FlockTop

    path = tmp_path / "traces.duckdb"
    with openai_server(_answer, refusals=["3"]) as server:
        flock = _flock(_model(server), path)
        async with flock.traced_run("waiting"):
            await flock.publish(Idea(topic="dogs"))
            run = asyncio.ensure_future(flock.run_until_idle())
            await asyncio.sleep(1.5)  # the 429 came back; a status snapshot says the run is going
            flock.tracer.flush()
            app = FlockTop(TraceReader(path), None, poll_interval=None)
            async with app.run_test():
                await app.workers.wait_for_complete()
                await asyncio.sleep(0.1)
                table = app.query_one("#agents-table", DataTable)
                rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            assert (await run).ok
        await flock.shutdown()
    assert rows[0][:2] == ["writer", "waiting: rate limit"]


async def test_the_recipe_in_docs_models_md_runs_against_a_server(
    loopback: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flock_cli.recipe import load_recipe

    doc = (Path(__file__).resolve().parent.parent / "docs" / "models.md").read_text()
    [example] = [b for b in doc.split("```yaml\n")[1:] if b.startswith("# models-example\n")]
    monkeypatch.setenv("MY_MODEL_KEY", KEY)
    with openai_server(_answer) as server:
        recipe = tmp_path / "hosted.yaml"
        recipe.write_text(example.split("```", 1)[0].replace("http://127.0.0.1:8080/v1", server.api_base))
        flock = load_recipe(recipe).build()
        chunks: list[Any] = []
        flock.on_stream(chunks.append)
        await flock.publish_external("Idea", {"topic": "dogs"})
        started = time.monotonic()
        assert (await flock.run_until_idle()).ok
        took = time.monotonic() - started
    assert len(server.requests) == 2 and took >= 0.95  # 60 requests a minute: the second waited
    assert {h["authorization"] for h in server.headers} == {f"Bearer {KEY}"}
    assert "".join(c.text for c in chunks) == ANSWER * 2


def test_flock_run_shows_the_hosted_models_stream(loopback: None, tmp_path: Path) -> None:
    """`flock run` in a terminal (TTY_COMPATIBLE=1: rich's switch) prints each streamed answer."""
    import os
    import subprocess
    import sys

    with openai_server(_answer) as server:
        recipe = tmp_path / "hosted.yaml"
        recipe.write_text(
            f"model: {{name: openai/loopback, api_base: {server.api_base}, api_key_env: {KEY_ENV}}}\n"
            "types:\n  Idea: {fields: {topic: str}}\n  Tagline: {fields: {line: str}}\n"
            "agents:\n  writer: {consumes: Idea, publishes: Tagline}\n"
        )
        (tmp_path / "idea.json").write_text('{"topic": "dogs"}')
        env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "200"}
        command = [sys.executable, "-m", "flock_cli", "run", str(recipe), "-i", "Idea=idea.json"]
        done = subprocess.run(
            [*command, "--traces", str(tmp_path / "t.duckdb")],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "writer" in done.stderr and '{"tagline": {"line": "Dogs make every day brighter"}}' in done.stderr
    assert server.requests[0][1]["stream"] is True


async def test_a_server_error_is_asked_again_once_by_the_engine_alone(loopback: None) -> None:
    with openai_server(_answer, outages=1) as server:
        flock = _flock(_model(server))
        await flock.publish(Idea(topic="dogs"))
        summary = await flock.run_until_idle()
    assert summary.ok, [f.error for f in summary.failures]
    assert server.statuses() == [503, 200]


def test_a_program_called_without_await_takes_the_same_path(loopback: None) -> None:
    """The synchronous engine (``lm(...)`` outside an event loop): a 429 waited out, usage kept."""
    with openai_server(_answer, refusals=["0"]) as server:
        lm = DSPyEngine(model=_model(server)).language_model()
        assert lm("a tagline") == [ANSWER]
    assert server.statuses() == [429, 200]
    assert lm.history[-1]["usage"]["completion_tokens"] == len(ANSWER) // 4 + 1


async def test_max_rate_limit_wait_counts_the_pauses_other_callers_met(loopback: None) -> None:
    """Three calls share a limiter; six 429s of 1 s each pause all of them. No call may spend more
    than its max_rate_limit_wait (2.5 s) waiting, whoever met the 429."""
    from flock_cli.engines.hosted_stream import hosted_lm
    from flock_cli.engines.rate_limit import on_wait

    with openai_server(_answer) as server:
        model = _model(server, rate_limit=RateLimit(requests_per_minute=6000), max_rate_limit_wait=2.5)
        lm = hosted_lm(model, cache=False)
        await lm.acall("warm up")
        server.refusals.extend(["1"] * 6)
        waited = [0.0, 0.0, 0.0]

        async def call(i: int) -> str:
            def listen(seconds: float, reason: str) -> None:
                waited[i] += seconds

            with on_wait(listen):
                try:
                    await lm.acall(f"hello {i}")
                except Exception as exc:
                    return type(exc).__name__
            return "ok"

        outcomes = await asyncio.gather(*(call(i) for i in range(3)))
    assert "RateLimitError" in " ".join(outcomes), outcomes
    assert max(waited) <= 2.5 + 1.0 + 0.2, waited  # the limit, and at most the pause it passed in


async def test_max_tokens_reaches_an_openai_compatible_server_as_max_tokens(loopback: None) -> None:
    """llama.cpp's server (and older vLLM, Ollama) read max_tokens, not OpenAI's newer
    max_completion_tokens: the engine's limit must be one they honour, streamed or not."""
    with openai_server(_answer) as server:
        for stream in (True, False):
            flock = Flock(_model(server))
            flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(
                DSPyEngine(max_tokens=7, stream=stream)
            )
            await flock.publish(Idea(topic="dogs"))
            assert (await flock.run_until_idle()).ok
            body = server.requests[-1][1]
            assert body.get("max_tokens") == 7 and "max_completion_tokens" not in body, body
