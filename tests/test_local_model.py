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
