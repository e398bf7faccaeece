"""Behaviour pinned after review: things a user relies on that once went wrong."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta

import pytest

from flock_cli import (
    AfterVisibility,
    AgentComponent,
    AgentRunError,
    EvalResult,
    Flock,
    FunctionEngine,
    InvalidDeclarationError,
    ManualClock,
    RetryPolicy,
    UsageError,
)
from flock_cli.core.agent import Agent
from flock_cli.core.components import Context, EvalInputs
from tests.helpers import Echo
from tests.models import BugReport, Idea, Result, Task


async def test_arun_leaves_the_summary_to_run_until_idle() -> None:
    flock = Flock()
    flock.agent("bg").consumes(Idea).with_engines(FunctionEngine(lambda i: 1 / 0))
    flock.agent("direct").consumes(Task).publishes(Result).with_engines(Echo())
    await flock.publish(Idea(topic="x"))
    outputs = await flock.arun("direct", Task(n=1))
    assert [o.payload["n"] for o in outputs] == [1]
    summary = await flock.run_until_idle()
    assert [f.agent for f in summary.failures] == ["bg"]
    assert summary.runs_by_agent == {"bg": 1, "direct": 1}


async def test_concurrent_aruns_each_get_their_own_outcome() -> None:
    flock = Flock()
    flock.agent("ok").consumes(Task).publishes(Result).with_engines(Echo())
    flock.agent("bad").consumes(Task).publishes(Result).with_engines(FunctionEngine(lambda i: 1 / 0))
    results = await asyncio.gather(
        flock.arun("ok", Task(n=1)), flock.arun("bad", Task(n=2)), return_exceptions=True
    )
    assert [o.payload["n"] for o in results[0]] == [1]  # type: ignore[union-attr]
    assert isinstance(results[1], AgentRunError)
    assert isinstance(results[1].__cause__, ZeroDivisionError)


def test_sync_run_can_be_called_again() -> None:
    flock = Flock()
    flock.agent("e").consumes(Task).publishes(Result).with_engines(Echo())
    assert [o.payload["n"] for o in flock.run("e", Task(n=1))] == [1]
    assert [o.payload["n"] for o in flock.run("e", Task(n=2))] == [2]


async def test_payloads_cannot_be_mutated_by_engines(flock: Flock) -> None:
    def vandal(inputs):
        inputs.artifacts[0].payload["n"] = 666

    flock.agent("vandal").consumes(Task).with_engines(FunctionEngine(vandal))
    task = await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.failures[0].error_type == "TypeError"
    assert "immutable" in summary.failures[0].error
    stored = await flock.store.get(task.id)
    assert stored is not None and stored.payload == {"n": 1, "label": ""}
    mutable = copy.deepcopy(stored.payload)
    mutable["n"] = 2  # copies are ordinary dicts
    with pytest.raises(TypeError):
        stored.payload["tags"] = []  # type: ignore[index]


async def test_group_dead_letter_names_the_runner_and_can_be_retried(flock: Flock) -> None:
    calls: list[str] = []

    def fail_once(inputs, ctx):
        calls.append(ctx.agent)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return Result(n=inputs.first_as(Task).n, by=ctx.agent)

    flock.agent("hi").consumes(Idea).consumes(Task, group="g", priority=1).publishes(Result).with_engines(
        FunctionEngine(fail_once)
    )
    flock.agent("lo").consumes(Task, group="g", priority=9).publishes(Result).with_engines(
        FunctionEngine(fail_once)
    )
    await flock.publish(Task(n=4))
    summary = await flock.run_until_idle()
    letter = summary.dead_letters[0]
    assert letter.agent == "lo" and letter.subscription == 0
    await flock.retry_dead_letter(letter.id)
    assert (await flock.run_until_idle()).ok
    assert calls == ["lo", "lo"]


async def test_retry_dead_letter_keeps_the_letter_when_it_cannot_run(flock: Flock) -> None:
    with pytest.raises(UsageError, match="No dead letter"):
        await flock.retry_dead_letter(flock._new_id())


async def test_one_artifact_runs_once_per_agent_even_through_a_group_and_a_plain_subscription(
    flock: Flock,
) -> None:
    flock.agent("a").consumes(Task, group="g").consumes(Task, delivery="shared").publishes(
        Result
    ).with_engines(Echo())
    flock.agent("b").consumes(Task, group="g").publishes(Result).with_engines(Echo())
    await flock.publish_many([Task(n=i) for i in range(6)])
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 6  # one run per task: a never runs a task twice
    results = await flock.store.get_by_type(Result)
    assert sorted(r.n for r in results) == list(range(6))


async def test_post_evaluate_may_return_models(flock: Flock) -> None:
    class AddOne(AgentComponent):
        async def on_post_evaluate(
            self, agent: Agent, ctx: Context, inputs: EvalInputs, result: EvalResult
        ) -> EvalResult:
            return EvalResult(artifacts=[*result.artifacts, Result(n=99)])

    flock.agent("a").consumes(Task).publishes(Result).with_engines(Echo()).with_utilities(AddOne())
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert sorted(r.n for r in await flock.store.get_by_type(Result)) == [1, 99]


async def test_embargoed_work_is_kept_at_shutdown_and_retried_with_visibility(clock: ManualClock) -> None:
    flock = Flock(clock=clock)
    got: list[int] = []
    flock.agent("a").consumes(Task).with_engines(FunctionEngine(lambda i: got.append(i.first_as(Task).n)))
    await flock.publish(Task(n=3), visibility=AfterVisibility(ttl=timedelta(hours=1)))
    summary = await flock.run_until_idle()
    assert [e.agent for e in summary.pending_embargoes] == ["a"]
    summary = await flock.shutdown()
    assert [(d.agent, d.reason) for d in summary.dead_letters] == [("a", "embargoed")]
    assert got == []


async def test_failed_best_of_tries_are_reported(flock: Flock) -> None:
    count = iter(range(10))

    def sometimes(inputs):
        n = next(count)
        if n % 2:
            raise ValueError(f"try {n} failed")
        return EvalResult(artifacts=[Result(n=n)], metrics={"score": n})

    (
        flock.agent("b")
        .consumes(Task)
        .publishes(Result)
        .with_engines(FunctionEngine(sometimes))
        .best_of(4, score=lambda r: r.metrics["score"])
    )
    await flock.publish(Task(n=0))
    summary = await flock.run_until_idle()
    assert sorted(f.stage for f in summary.failures) == ["best_of", "best_of"]
    assert len(await flock.store.get_by_type(Result)) == 1


async def test_breaker_counts_runs_not_retries() -> None:
    flock = Flock(max_agent_iterations=2, clock=ManualClock(auto_advance=True))
    tries: list[int] = []

    def flaky(inputs, ctx):
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("again")
        return Result(n=1)

    flock.agent("a").consumes(Task).publishes(Result).with_engines(FunctionEngine(flaky)).with_retry_policy(
        RetryPolicy(max_attempts=3)
    )
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert tries == [1, 2, 3] and summary.breaker_trips == [] and summary.ok


def test_reserved_and_invalid_agent_names() -> None:
    flock = Flock()
    for bad in ("external", "group:g", "<runtime>", "", "1abc"):
        with pytest.raises(InvalidDeclarationError):
            flock.agent(bad)


async def test_usage_errors_are_clear(flock: Flock) -> None:
    flock.agent("a").consumes(Task).with_engines(Echo())
    with pytest.raises(UsageError, match="visibility must be a Visibility"):
        await flock.publish(Task(n=1), visibility="private")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="instantiate it first"):
        await flock.publish(Task)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="publish_external"):
        await flock.publish({"n": 1})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="names an agent"):
        await flock.publish_external("Task", {"n": 1}, produced_by="a")
    with pytest.raises(UsageError, match="tags"):
        await flock.publish(Task(n=1), tags=[1])  # type: ignore[list-item]
    assert await flock.store.list() == []


def test_declaration_errors_are_clear() -> None:
    flock = Flock()
    with pytest.raises(InvalidDeclarationError, match="not the string 'x > 1'"):
        flock.agent("w").consumes(Task, where="x > 1")  # type: ignore[arg-type]
    with pytest.raises(InvalidDeclarationError, match="at least two types"):
        flock.agent("j").consumes(BugReport, join={"window": 3})
    with pytest.raises(InvalidDeclarationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidDeclarationError, match="backoff"):
        RetryPolicy(backoff="linearish")  # type: ignore[arg-type]
