"""Budgets on model usage (tokens, cost, calls), per agent and per run, enforced before each run
starts; through the public API and a recipe run by the CLI."""

from __future__ import annotations

from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from typer.testing import CliRunner

from flock_cli import Budget, DSPyEngine, Flock, FunctionEngine, InvalidDeclarationError
from flock_cli.cli.app import app
from tests.models import Idea, Tagline


def costly(tokens: int, cost: float = 0.0) -> FunctionEngine:
    """An engine that reports ``tokens`` and ``cost`` of model usage per run, like a model call."""

    def run(inputs: Any, ctx: Any) -> Tagline:
        ctx.trace.usage(
            model="m", input_tokens=tokens // 2, output_tokens=tokens - tokens // 2, cost=cost, calls=1
        )
        return Tagline(line=inputs.artifacts[0].payload["topic"])

    return FunctionEngine(run)


async def test_an_agent_budget_pauses_that_agent_and_reports_it() -> None:
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(costly(40)).budget(
        Budget(tokens=100)
    )
    for topic in ("a", "b", "c", "d", "e"):
        await flock.publish(Idea(topic=topic))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"writer": 3}  # 0, 40, 80 used before each: the third crosses 100
    [hold] = summary.budget_holds
    assert (hold.agent, hold.scope, hold.held) == ("writer", "agent", 2)
    assert hold.reason == "budget of agent 'writer' exhausted: 120 of 100 tokens used"
    assert not summary.ok
    letters = await flock.dead_letters()
    assert [letter.reason for letter in letters] == ["budget", "budget"]
    assert flock.usage.of("writer").tokens == 120 and flock.usage.total.calls == 3


async def test_a_run_budget_that_stops_holds_every_agent() -> None:
    flock = Flock(budget={"cost": 0.05, "on_exhausted": "stop"})
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(
        costly(10, cost=0.03)
    ).max_concurrency(1)
    flock.agent("free").consumes(Tagline).with_engines(FunctionEngine(lambda inputs: None))
    await flock.publish(Idea(topic="a"))
    await flock.publish(Idea(topic="b"))
    await flock.publish(Idea(topic="c"))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent["writer"] == 2  # 0.00 and 0.03 before each; 0.06 stops the run
    assert {(h.agent, h.scope) for h in summary.budget_holds} == {("writer", "run"), ("free", "run")}
    assert all(
        h.reason == "budget of the run exhausted: cost 0.0600 of 0.0500 spent" for h in summary.budget_holds
    )


async def test_model_calls_count_against_a_calls_budget() -> None:
    lm = DummyLM([{"tagline": {"line": "one"}}, {"tagline": {"line": "two"}}], adapter=dspy.JSONAdapter())
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(DSPyEngine(lm=lm)).max_concurrency(
        1
    ).budget(Budget(calls=2))
    for topic in ("a", "b", "c"):
        await flock.publish(Idea(topic=topic))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"writer": 2} and len(lm.history) == 2
    assert summary.budget_holds[0].reason == "budget of agent 'writer' exhausted: 2 of 2 model calls made"


def test_budget_options_are_checked() -> None:
    with pytest.raises(InvalidDeclarationError, match="budget"):
        Flock(budget={"tokens": 0})
    with pytest.raises(InvalidDeclarationError, match="budget"):
        Flock().agent("a").budget({"dollars": 3})


def test_recipe_budgets_are_enforced_by_flock_run(tmp_path: Any) -> None:
    (tmp_path / "costs.py").write_text(
        "def report(inputs, ctx):\n"
        "    ctx.trace.usage(model='m', input_tokens=5, output_tokens=5, calls=1)\n"
        "    return {'line': inputs.artifacts[0].payload['topic']}\n"
    )
    recipe = tmp_path / "budget.yaml"
    recipe.write_text(
        "types:\n  Idea: {fields: {topic: str}}\n  Tagline: {fields: {line: str}}\n"
        "budget: {calls: 2, on_exhausted: stop}\n"
        "agents:\n  writer:\n    consumes: Idea\n    publishes: Tagline\n    max_concurrency: 1\n"
        "    engine: {kind: function, function: 'costs:report'}\n    budget: {tokens: 1000}\n"
    )
    inputs = tmp_path / "ideas.json"
    inputs.write_text('[{"topic": "a"}, {"topic": "b"}, {"topic": "c"}]')
    result = CliRunner().invoke(app, ["run", str(recipe), "-i", f"Idea={inputs}", "--board", ":memory:"])
    assert result.exit_code == 1, result.output
    assert (
        "budget of the run exhausted: 2 of 2 model calls made: 1 run of writer held as dead letters"
        in result.output
    )


async def test_runs_in_flight_count_against_a_calls_budget_and_a_stop_budget_stops_everyone() -> None:
    lm = DummyLM([{"tagline": {"line": f"line {i}"}} for i in range(6)], adapter=dspy.JSONAdapter())
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(DSPyEngine(lm=lm)).budget(
        {"calls": 1, "on_exhausted": "stop"}
    )
    flock.agent("other").consumes(Idea).with_engines(FunctionEngine(lambda inputs: None))
    for topic in ("a", "b", "c"):
        await flock.publish(Idea(topic=topic))  # three runs start at once: only one may call
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent.get("writer") == 1 and len(lm.history) == 1
    assert {h.agent for h in summary.budget_holds} >= {"writer", "other"}  # stop holds every agent
