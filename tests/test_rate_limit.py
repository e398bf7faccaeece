"""Rate limits per model: the limiter's arithmetic on a clock the test moves, the 429 delays, and
the recipe's ``model:`` mapping (its errors point at the file, line and key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flock_cli import Model, RateLimit
from flock_cli.cli.app import app
from flock_cli.engines.rate_limit import BACKOFF_CAP, RateLimiter, retry_delay
from flock_cli.recipe import load_recipe
from flock_cli.recipe.diagnostics import RecipeError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_spaces_request_starts_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_minute=30), clock)  # one every 2 s
    assert limiter.reserve() == (0.0, "")
    assert limiter.reserve() == (2.0, "requests")
    clock.now += 1.5
    assert limiter.reserve() == (pytest.approx(0.5), "requests")
    clock.now += 0.5
    assert limiter.reserve() == (0.0, "")


def test_tokens_per_minute_is_a_bucket_the_answers_usage_empties() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(tokens_per_minute=600), clock)  # 10 tokens a second
    assert limiter.reserve() == (0.0, "")
    limiter.spend(550)  # 50 left: the next request may go
    assert limiter.reserve() == (0.0, "")
    limiter.spend(100)  # 50 below zero: 5 s until it is refilled to above zero
    wait, why = limiter.reserve()
    assert why == "tokens" and wait == pytest.approx(5.0, abs=0.01)
    clock.now += 5.01
    assert limiter.reserve() == (0.0, "")
    clock.now += 3600  # refilled to the capacity, never beyond it
    limiter.spend(600)
    assert limiter.reserve()[1] == "tokens"


def test_a_429_pauses_every_caller_of_the_model() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_minute=6000), clock)
    limiter.pause(7)
    assert limiter.reserve() == (7.0, "429")
    clock.now += 7
    assert limiter.reserve() == (0.0, "")


def test_the_delay_after_a_429_is_retry_after_else_a_bounded_backoff() -> None:
    assert retry_delay(12.5, 0) == 12.5
    assert [retry_delay(None, n) for n in range(7)] == [1, 2, 4, 8, 16, BACKOFF_CAP, BACKOFF_CAP]


def test_a_model_shares_one_limiter_and_needs_a_limit_to_have_one() -> None:
    model = Model("openai/x", rate_limit=RateLimit(requests_per_minute=1))
    assert model.limiter() is model.limiter() is not None
    assert Model("openai/x").limiter() is None
    with pytest.raises(ValidationError, match="requests_per_minute, tokens_per_minute or both"):
        RateLimit()
    with pytest.raises(ValidationError, match="api_key_env"):
        Model("openai/x", api_key_env="not a variable")


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


AGENTS = """
types:
  Idea: {fields: {topic: str}}
  Tagline: {fields: {line: str}}
agents:
  writer: {consumes: Idea, publishes: Tagline}
"""


def test_a_misspelt_key_in_a_model_mapping_names_file_line_and_key(tmp_path: Path) -> None:
    path = _recipe(
        tmp_path,
        "model:\n  name: openai/x\n  rate_limit: {requests_per_minut: 5}\n" + AGENTS,
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    text = str(caught.value)
    assert f"{path}:3:" in text and "requests_per_minut" in text
    # one error, at the real mistake: not also "should be a valid string" for the string form
    assert len(caught.value.diagnostics) == 1, text
    path.write_text("model:\n  name: openai/x\n  rate_limits: {requests_per_minute: 5}\n" + AGENTS)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    [only] = caught.value.diagnostics
    assert "unknown key 'rate_limits'" in only.render() and "Did you mean 'rate_limit'?" in only.render()


def test_one_model_described_twice_differently_is_an_error(tmp_path: Path) -> None:
    path = _recipe(
        tmp_path,
        "model: {name: openai/x, rate_limit: {requests_per_minute: 5}}\n"
        + AGENTS
        + "  poet:\n    consumes: Idea\n    publishes: Tagline\n"
        + "    engine: {kind: dspy, model: {name: openai/x, rate_limit: {requests_per_minute: 50}}}\n",
    )
    with pytest.raises(RecipeError, match="described twice with different settings") as caught:
        load_recipe(path)  # flock validate and flock check refuse it too, not only flock run
    assert f"{path}:11:" in str(caught.value)
    assert "at agents.poet.engine.model.name" in str(caught.value)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert (result.exit_code == 2 and "model-conflict" in result.output) or "described twice" in result.output


def test_a_model_server_is_a_url(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "model: {name: openai/x, api_base: 127.0.0.1:8080/v1}\n" + AGENTS)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert f"{path}:1:" in str(caught.value) and "api_base" in str(caught.value)


def test_one_model_described_twice_alike_is_one_model_with_one_limiter(tmp_path: Path) -> None:
    mapping = "{name: openai/x, rate_limit: {tokens_per_minute: 500}}"
    path = _recipe(
        tmp_path,
        f"model: {mapping}\n"
        + AGENTS
        + "  poet:\n    consumes: Idea\n    publishes: Tagline\n"
        + f"    engine: {{kind: dspy, model: {mapping}}}\n",
    )
    flock = load_recipe(path).build()
    poet = next(a for a in flock.agents if a.name == "poet")
    assert poet.engines[0].model is flock.model  # type: ignore[attr-defined]


def test_settings_the_in_process_model_cannot_honour_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="runs in this process: rate_limit would not apply"):
        Model("local", rate_limit=RateLimit(requests_per_minute=5))
    path = _recipe(tmp_path, "model: {name: local, api_base: 'http://127.0.0.1:1/v1'}\n" + AGENTS)
    with pytest.raises(RecipeError, match="api_base would not apply") as caught:
        load_recipe(path)
    assert f"{path}:1:" in str(caught.value)
