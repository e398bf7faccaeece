from __future__ import annotations

import asyncio

import pytest

from flock_cli import (
    AgentRunError,
    EngineComponent,
    EvalResult,
    Flock,
    FunctionEngine,
    OutputError,
    RunError,
    TestEngine,
    UserError,
)
from tests.helpers import Echo, Recorder
from tests.models import Idea, Movie, Result, Tagline, Task


async def test_stages_run_in_design_order_and_components_by_priority(flock: Flock) -> None:
    log: list[str] = []
    called: list[int] = []
    (
        flock.agent("a")
        .consumes(Task)
        .publishes(Result)
        .with_utilities(Recorder(log=log, tag="B.", priority=5), Recorder(log=log, tag="A.", priority=1))
        .with_engines(Echo())
        .calls(lambda r: (log.append("calls"), called.append(r.n)))
    )
    await flock.publish(Task(n=3))
    await flock.run_until_idle()
    stages = ["initialize", "pre_consume", "pre_evaluate", "post_evaluate", "post_publish"]
    expected = [f"{p}{s}" for s in stages for p in ("A.", "B.")] + ["calls", "A.terminate", "B.terminate"]
    assert log == expected
    assert called == [3]


async def test_engine_chain_propagates_state_and_outputs(flock: Flock) -> None:
    class Retriever(EngineComponent):
        async def evaluate(self, agent, ctx, inputs):
            return EvalResult(state={"context": "retrieved docs"}, metrics={"docs": 2})

    class Writer(EngineComponent):
        async def evaluate(self, agent, ctx, inputs):
            return EvalResult(artifacts=[Tagline(line=inputs.state["context"])])

    flock.agent("rag").consumes(Idea).publishes(Tagline).with_engines(Retriever(), Writer())
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    assert await flock.store.get_by_type(Tagline) == [Tagline(line="retrieved docs")]


async def test_best_of_runs_concurrently_and_keeps_the_best(flock: Flock) -> None:
    counter = iter(range(100))
    running = {"now": 0, "max": 0}

    async def draft(inputs):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1
        n = next(counter)
        return EvalResult(artifacts=[Result(n=n)], metrics={"score": n % 3})

    (
        flock.agent("b")
        .consumes(Task)
        .publishes(Result)
        .with_engines(FunctionEngine(draft))
        .best_of(5, score=lambda r: r.metrics["score"])
    )
    await flock.publish(Task(n=0))
    await flock.run_until_idle()
    results = await flock.store.get_by_type(Result)
    assert len(results) == 1 and results[0].n % 3 == 2
    assert running["max"] == 5


async def peak_concurrency(flock: Flock, name: str, tasks: int = 12, agent_limit: int | None = None) -> int:
    peak = {"now": 0, "max": 0}

    async def slow(inputs):
        peak["now"] += 1
        peak["max"] = max(peak["max"], peak["now"])
        await asyncio.sleep(0.005)
        peak["now"] -= 1

    builder = flock.agent(name).consumes(Task).with_engines(FunctionEngine(slow))
    if agent_limit is not None:
        builder.max_concurrency(agent_limit)
    await flock.publish_many([Task(n=i) for i in range(tasks)])
    summary = await flock.run_until_idle()
    assert summary.agent_runs == tasks
    return peak["max"]


async def test_concurrency_is_unlimited_by_default() -> None:
    assert await peak_concurrency(Flock(), "x") == 12


async def test_global_concurrency_limit() -> None:
    assert await peak_concurrency(Flock(max_concurrency=3), "x") == 3


async def test_per_agent_concurrency_limit() -> None:
    assert await peak_concurrency(Flock(), "x", agent_limit=2) == 2


async def test_fan_out_outputs_inherit_correlation_id(flock: Flock) -> None:
    flock.agent("editor").consumes(Idea).publishes(Tagline).with_engines(TestEngine(count=8))
    idea = await flock.publish(Idea(topic="news"))
    summary = await flock.run_until_idle()
    assert summary.artifacts_published == 9
    taglines = await flock.store.get_artifacts_by_type("Tagline")
    assert len(taglines) == 8
    assert {t.correlation_id for t in taglines} == {idea.correlation_id}
    assert {t.produced_by for t in taglines} == {"editor"}


async def test_undeclared_output_type_fails_the_run(flock: Flock) -> None:
    flock.agent("liar").consumes(Idea).publishes(Tagline).with_engines(
        FunctionEngine(lambda i: Movie(title="Not declared", runtime=100))
    )
    await flock.publish(Idea(topic="x"))
    summary = await flock.run_until_idle()
    assert summary.failures[0].error_type == "OutputError"
    assert "produced 'Movie' but publishes Tagline" in summary.failures[0].error
    assert await flock.store.get_artifacts_by_type("Movie") == []


async def test_invalid_engine_output_is_a_run_error(flock: Flock) -> None:
    flock.agent("bad").consumes(Idea).publishes(Movie).with_engines(
        FunctionEngine(lambda i: Movie.model_construct(title="x", runtime=1))
    )
    await flock.publish(Idea(topic="x"))
    summary = await flock.run_until_idle()
    assert summary.failures[0].error_type == "OutputError"
    assert "Invalid payload for type 'Movie'" in summary.failures[0].error


async def test_arun_and_run_return_outputs() -> None:
    flock = Flock()
    flock.agent("e").consumes(Task).publishes(Result).with_engines(Echo())
    outputs = await flock.arun("e", Task(n=4))
    assert [o.payload for o in outputs] == [{"n": 4, "by": "e"}]
    failing = Flock()
    failing.agent("f").consumes(Task).publishes(Result).with_engines(FunctionEngine(lambda i: 1 / 0))
    with pytest.raises(AgentRunError, match="ZeroDivisionError"):
        await failing.arun("f", Task(n=1))


def test_sync_run_wrapper() -> None:
    flock = Flock()
    flock.agent("e").consumes(Task).publishes(Result).with_engines(Echo())
    assert [o.payload["n"] for o in flock.run("e", Task(n=9))] == [9]


async def test_missing_engine_is_reported(flock: Flock) -> None:
    flock.agent("empty").consumes(Task)
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert "has no engine" in summary.failures[0].error
    assert summary.dead_letters[0].agent == "empty"


def test_output_error_is_a_run_error() -> None:
    assert issubclass(OutputError, RunError) and not issubclass(OutputError, UserError)
