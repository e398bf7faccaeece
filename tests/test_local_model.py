"""The embedded local model. The real-model test is opt-in (marker ``local_llm``): it needs the
``[local]`` extra and FLOCK_TEST_LOCAL_MODEL=1, and takes about half a minute on two cores."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flock_cli import DSPyEngine, Flock
from flock_cli.engines.local import LocalModelError, is_local_model, local_model_path
from flock_cli.recipe import load_recipe
from tests.models import Idea, Tagline

ROOT = Path(__file__).resolve().parent.parent


def test_local_model_strings() -> None:
    assert all(is_local_model(m) for m in ("local", "local/qwen", "local:/m/x.gguf", "models/x.gguf"))
    assert not any(is_local_model(m) for m in ("openai/gpt-4o-mini", "ollama_chat/llama3.2", "localhost/x"))


def test_a_gguf_path_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=r"model file .*missing.gguf not found"):
        local_model_path(f"local:{tmp_path / 'missing.gguf'}")
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF")
    assert local_model_path(str(model)) == model


def test_a_thread_count_that_is_not_a_number_is_said_before_anything_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", str(ROOT / "recipes" / "pipeline.yaml"),
         "--model", "local", "--input", f"Idea={ROOT / 'recipes' / 'inputs' / 'idea.json'}",
         "--board", str(tmp_path / "b.db")],
        cwd=tmp_path, env={**os.environ, "FLOCK_LOCAL_THREADS": "two", "FLOCK_TRACES": "off"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: FLOCK_LOCAL_THREADS must be a whole number from 1 up, got 'two'"


async def test_a_local_model_named_while_calls_are_blocked_is_not_loaded() -> None:
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(DSPyEngine(model="local"))
    await flock.publish(Idea(topic="dogs"))
    [failure] = (await flock.run_until_idle()).failures
    assert "a real call to model 'local' was blocked" in failure.error


@pytest.mark.local_llm
@pytest.mark.skipif(
    os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
)
async def test_the_pipeline_recipe_runs_on_the_real_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.delenv("FLOCK_BLOCK_MODEL_CALLS")
    recipe = load_recipe(ROOT / "recipes" / "pipeline.yaml")
    flock = recipe.build(model="local")
    chunks: list[Any] = []
    flock.on_stream(chunks.append)
    Idea_ = recipe.resolved.types["Idea"]
    await flock.publish(Idea_.model_validate(json.loads((ROOT / "recipes/inputs/idea.json").read_text())))
    summary = await flock.run_until_idle(timeout=600)
    assert summary.ok, summary
    for artifact in await flock.store.list():
        recipe.resolved.types[artifact.type].model_validate(artifact.payload)  # every output validates
    assert {c.agent for c in chunks if c.done} == {"planner", "writer", "editor"}
    assert flock.usage.total.tokens > 0 and flock.usage.total.calls >= 3


def test_a_llama_build_that_crashes_is_caught_in_a_child_and_explained(tmp_path: Path) -> None:
    """A native llama.cpp build that dies with SIGSEGV on this machine (seen on a VM with AVX-512
    and AMX) must not take the flock down silently: the probe child dies instead, and the error
    says how to install a portable build. A probe that passes is remembered."""
    import sys

    from flock_cli.engines.local_probe import LocalBuildError, ensure_model_runs

    def model(name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(b"GGUF")
        return path

    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    passes = [sys.executable, "-c", "pass"]
    crashing = model("crash.gguf")
    with pytest.raises(LocalBuildError, match=r"llama.cpp crashed \(SIGSEGV\).*-DGGML_NATIVE=OFF"):
        ensure_model_runs(crashing, command=crash)
    with pytest.raises(LocalBuildError, match="SIGSEGV"):
        ensure_model_runs(crashing, command=passes)  # one child per process and build: remembered
    with pytest.raises(LocalBuildError, match="failed a 4-token test on this machine: ValueError: bad magic"):
        ensure_model_runs(
            model("bad.gguf"), command=[sys.executable, "-c", "raise SystemExit('ValueError: bad magic')"]
        )
    good = model("good.gguf")
    ensure_model_runs(good, command=passes)
    ensure_model_runs(good, command=crash)  # the stamp remembers a passing build: no child
    good.write_bytes(b"GGUF2")  # another file: probed again
    with pytest.raises(LocalBuildError):
        ensure_model_runs(good, command=crash)


@pytest.mark.local_llm
@pytest.mark.skipif(
    os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
)
def test_the_installed_llama_build_runs_the_embedded_model_in_a_child() -> None:
    pytest.importorskip("llama_cpp")
    from flock_cli.engines.local_probe import _stamp_file, ensure_model_runs

    path = local_model_path("local")
    _stamp_file(path).unlink(missing_ok=True)
    ensure_model_runs(path)  # the real child: loads the model and makes 4 tokens
    assert _stamp_file(path).is_file()


@pytest.mark.local_llm
@pytest.mark.skipif(
    os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
)
def test_a_run_on_the_local_model_ends_without_noise_on_stderr(tmp_path: Path) -> None:
    """The README's example, as a user runs it: the model is freed before the interpreter tears
    llama_cpp down (left to teardown, llama-cpp-python printed a traceback at every exit)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", str(ROOT / "recipes" / "code_review.yaml"),
         "--model", "local", "--input",
         f"CodeSubmission={ROOT / 'recipes' / 'inputs' / 'code_submission.json'}",
         "--board", str(tmp_path / "b.db"), "--no-traces"],
        cwd=tmp_path, env={**os.environ, "FLOCK_BLOCK_MODEL_CALLS": ""},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "summary: 3 runs" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


# --- the decoder: the same answers as llama-cpp-python, calls decoded together, prefixes reused ---

_opt_in = pytest.mark.skipif(
    os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
)
_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "people": {"type": "integer"}},
    "required": ["city", "country", "people"],
}
_SYSTEM = (
    "You are a geography assistant. Answer every question with one JSON object that has the keys"
    " city, country and people (the number of inhabitants, a whole number). Be brief and exact."
)
_QUESTIONS = [
    "the capital of France",
    "the largest city of Japan",
    "the capital of Kenya",
    "the port of Hamburg",
]


def _ask(
    lm: Any,
    question: str,
    *,
    system: str = _SYSTEM,
    schema: dict[str, Any] | None = _SCHEMA,
    max_tokens: int = 40,
) -> Any:
    """One greedy call through the local model's DSPy LM (as DSPy's JSON adapter makes it)."""
    from dspy import lm15

    return lm(
        lm15.Request(
            model=lm.model,
            system=system,
            messages=(lm15.Message.user(f"Tell me about {question}."),),
            config=lm15.Config(
                temperature=0.0,
                max_tokens=max_tokens,
                response_format={"type": "json_schema", "schema": schema} if schema else None,
            ),
        )
    )


def _text(response: Any) -> str:
    return "".join(part.text for part in response.message.parts)


@pytest.fixture
def real_lm(monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("llama_cpp")
    monkeypatch.delenv("FLOCK_BLOCK_MODEL_CALLS", raising=False)
    from flock_cli.engines.local import local_lm

    return local_lm("local", temperature=0.0, max_tokens=40, cache=False)


@pytest.mark.local_llm
@_opt_in
@pytest.mark.parametrize("max_tokens", [40, 6])
@pytest.mark.usefixtures("real_lm")
def test_greedy_answers_are_the_ones_llama_cpp_python_gives(max_tokens: int) -> None:
    """The decoder samples the grammar lazily (checks only the token it chose) and formats the
    prompt itself: the answer, its finish reason (``length`` at max_tokens) and its usage are
    create_chat_completion's."""
    from llama_cpp import Llama

    from flock_cli.engines.local import local_lm

    lm = local_lm("local", temperature=0.0, max_tokens=max_tokens, cache=False)
    reference = Llama(model_path=str(local_model_path("local")), n_ctx=1024, verbose=False)
    for question in _QUESTIONS[:2]:
        ours = _ask(lm, question, max_tokens=max_tokens)
        theirs: Any = reference.create_chat_completion(
            messages=[
                {"role": "system", "content": _SYSTEM},
                {"role": "user", "content": f"Tell me about {question}."},
            ],
            temperature=0.0,
            max_tokens=max_tokens,
            repeat_penalty=1.1,
            response_format={"type": "json_object", "schema": _SCHEMA},
        )
        assert _text(ours) == theirs["choices"][0]["message"]["content"]
        assert ours.finish_reason == theirs["choices"][0]["finish_reason"]
        assert (ours.usage.input_tokens, ours.usage.output_tokens) == (
            theirs["usage"]["prompt_tokens"],
            theirs["usage"]["completion_tokens"],
        )


@pytest.mark.local_llm
@_opt_in
def test_concurrent_calls_are_decoded_together_and_answer_as_they_do_alone(real_lm: Any) -> None:
    """Four calls at once, decoded in one batch: each gets its own schema-valid answer, the one
    it gets alone. (llama.cpp's arithmetic for a batch of several tokens is not bit for bit the
    one for a single token, so where two tokens nearly tie, a digit of a number can differ: the
    facts are compared, not the text.)"""
    from concurrent.futures import ThreadPoolExecutor

    from pydantic import BaseModel

    class Place(BaseModel):
        city: str
        country: str
        people: int

    alone = [_text(_ask(real_lm, question)) for question in _QUESTIONS]
    with ThreadPoolExecutor(len(_QUESTIONS)) as pool:
        together = [_text(r) for r in pool.map(lambda q: _ask(real_lm, q), _QUESTIONS)]
    answers = [Place.model_validate_json(text) for text in together]
    assert [(a.city, a.country) for a in answers] == [
        (a.city, a.country) for a in map(Place.model_validate_json, alone)
    ]
    assert len({a.city for a in answers}) == len(_QUESTIONS)  # each call its own answer


@pytest.mark.local_llm
@_opt_in
def test_a_prompt_prefix_is_evaluated_once_even_after_another_agents_call(real_lm: Any) -> None:
    """The second call of an agent evaluates only what follows its system prompt, even when
    another agent's call (another system prompt) came in between."""
    import uuid

    mine = f"Session {uuid.uuid4()}. {_SYSTEM}"  # nothing kept from earlier calls shares it
    other = "You are a chef. Answer with one JSON object with the keys dish and minutes, nothing else."
    first = _ask(real_lm, "the city of Lyon", system=mine)
    _ask(real_lm, "a quick soup", system=other, schema=None)
    second = _ask(real_lm, "the city of Porto", system=mine)
    assert first.usage.cache_read_tokens < 10  # only the chat template's opening was there
    assert second.usage.cache_read_tokens > 50
    assert second.usage.input_tokens - second.usage.cache_read_tokens < 15  # the question alone


@pytest.mark.local_llm
@_opt_in
async def test_the_local_model_streams_its_answer_while_it_is_made(real_lm: Any) -> None:
    import asyncio

    from flock_cli.engines.streaming import StreamSink, streaming_to

    chunks: list[str] = []
    with streaming_to(StreamSink(chunks.append, asyncio.get_running_loop())):
        response = await asyncio.to_thread(_ask, real_lm, "the capital of Italy")
    await asyncio.sleep(0.05)  # the sink hands its last piece to the loop
    assert len(chunks) > 1 and "".join(chunks) == _text(response)


@pytest.mark.local_llm
@_opt_in
def test_a_prompt_longer_than_the_context_is_a_run_error(real_lm: Any) -> None:
    from flock_cli.errors import RunError

    with pytest.raises(Exception, match=r"Requested tokens \(\d+\) exceed context window of 4096") as raised:
        _ask(real_lm, "the city " * 5000)
    assert isinstance(raised.value, RunError) or isinstance(raised.value.__cause__, RunError)  # DSPy wraps it
