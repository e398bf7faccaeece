from __future__ import annotations

import random

import pytest

from flock_cli import (
    Flock,
    FlockClosedError,
    FunctionEngine,
    IdleTimeoutError,
    ManualClock,
    RetryPolicy,
    SequentialIds,
)
from flock_cli.store import InMemoryBlackboardStore
from tests.helpers import Recorder
from tests.models import Result, Task


def flaky(failures: int, calls: list) -> FunctionEngine:
    def fn(inputs, ctx):
        calls.append(ctx.attempt)
        if len(calls) <= failures:
            raise ConnectionError(f"transient #{len(calls)}")
        return Result(n=inputs.first_as(Task).n)

    return FunctionEngine(fn)


async def test_failure_is_reported_with_agent_error_and_inputs(flock: Flock) -> None:
    log: list[str] = []
    flock.agent("f").consumes(Task).publishes(Result).with_engines(flaky(9, [])).with_utilities(
        Recorder(log=log)
    )
    task = await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert not summary.ok
    failure = summary.failures[0]
    assert (failure.agent, failure.error_type, failure.stage, failure.attempts) == (
        "f",
        "ConnectionError",
        "evaluate",
        1,
    )
    assert failure.artifact_ids == [task.id]
    assert "error:AgentRunError" in log and log[-1] == "terminate"
    assert summary.retries == 0  # no retries unless configured


async def test_retry_policy_with_exponential_backoff_and_jitter() -> None:
    clock = ManualClock(auto_advance=True)
    flock = Flock(clock=clock, id_factory=SequentialIds(), rng=random.Random(1))
    calls: list[int] = []
    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, max_delay=3.0, backoff="exponential", jitter=True)
    flock.agent("f").consumes(Task).publishes(Result).with_engines(flaky(3, calls)).with_retry_policy(policy)
    await flock.publish(Task(n=5))
    summary = await flock.run_until_idle()
    assert calls == [1, 2, 3, 4]
    assert summary.retries == 3 and summary.ok
    assert await flock.store.get_by_type(Result) == [Result(n=5)]
    assert len(clock.sleeps) == 3
    for slept, base in zip(clock.sleeps, [1.0, 2.0, 3.0], strict=True):  # capped at max_delay
        assert base * 0.5 <= slept <= base


def test_retry_delays_without_jitter() -> None:
    rng = random.Random(0)
    assert [RetryPolicy(backoff="exponential", jitter=False).delay(n, rng) for n in (1, 2, 3)] == [1, 2, 4]
    assert [RetryPolicy(backoff="linear", jitter=False).delay(n, rng) for n in (1, 2, 3)] == [1, 2, 3]
    assert [
        RetryPolicy(backoff="constant", jitter=False, initial_delay=0.5).delay(n, rng) for n in (1, 5)
    ] == [0.5, 0.5]
    assert RetryPolicy(jitter=False, max_delay=10).delay(20, rng) == 10


async def test_retries_only_matching_exceptions() -> None:
    flock = Flock(clock=ManualClock(auto_advance=True))
    calls: list[int] = []
    policy = RetryPolicy(max_attempts=5, retry_on=(TimeoutError,))
    flock.agent("f").consumes(Task).publishes(Result).with_engines(flaky(9, calls)).with_retry_policy(policy)
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert calls == [1] and summary.failures[0].error_type == "ConnectionError"


async def test_exhausted_retries_go_to_dead_letters_and_can_be_retried() -> None:
    flock = Flock(clock=ManualClock(auto_advance=True))
    calls: list[int] = []
    flock.agent("f").consumes(Task).publishes(Result).with_engines(flaky(2, calls)).with_retry_policy(
        RetryPolicy(max_attempts=2)
    )
    task = await flock.publish(Task(n=8))
    summary = await flock.run_until_idle()
    assert [d.agent for d in summary.dead_letters] == ["f"]
    letters = await flock.dead_letters()
    assert len(letters) == 1 and letters[0].artifact_ids == (task.id,) and letters[0].attempts == 2
    assert letters[0].error == "transient #2" and letters[0].reason == "failed"
    await flock.retry_dead_letter(letters[0].id)
    summary = await flock.run_until_idle()
    assert summary.ok and await flock.store.get_by_type(Result) == [Result(n=8)]
    assert await flock.dead_letters() == []


async def test_failures_in_calls_are_reported_after_outputs_were_published(flock: Flock) -> None:
    def explode(result: Result) -> None:
        raise RuntimeError("webhook down")

    flock.agent("f").consumes(Task).publishes(Result).with_engines(flaky(0, [])).calls(explode)
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.failures[0].stage == "calls" and summary.failures[0].outputs_published
    assert len(await flock.store.get_by_type(Result)) == 1


async def test_run_until_idle_timeout_carries_the_summary_and_shutdown_can_cancel() -> None:
    flock = Flock()
    import asyncio

    async def hang(inputs):
        await asyncio.sleep(10)

    flock.agent("slow").consumes(Task).with_engines(FunctionEngine(hang))
    task = await flock.publish(Task(n=1))
    with pytest.raises(IdleTimeoutError) as err:
        await flock.run_until_idle(timeout=0.05)
    assert err.value.summary.artifacts_published == 1
    summary = await flock.shutdown(timeout=0.05)
    assert [(f.agent, f.stage) for f in summary.failures] == [("slow", "cancelled")]
    letters = await flock.dead_letters()
    assert [(d.agent, d.stage, d.artifact_ids) for d in letters] == [("slow", "cancelled", (task.id,))]


async def test_shutdown_refuses_new_work(flock: Flock) -> None:
    await flock.shutdown()
    with pytest.raises(FlockClosedError):
        await flock.publish(Task(n=1))


async def test_hook_errors_are_not_swallowed(flock: Flock) -> None:
    class BadTerminate(Recorder):
        async def on_terminate(self, agent, ctx):
            raise ValueError("cleanup failed")

    flock.agent("a").consumes(Task).publishes(Result).with_engines(flaky(0, [])).with_utilities(
        BadTerminate(log=[])
    )
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert [(f.stage, f.error) for f in summary.failures] == [("on_terminate", "cleanup failed")]


class LeaseFailingStore(InMemoryBlackboardStore):
    """A store whose lease call breaks, as a broken database would."""

    async def lease(self, delivery_id, owner, *, now, ttl):
        raise RuntimeError("disk full")


async def test_a_crash_inside_the_runtime_is_reported_and_does_not_hang() -> None:
    flock = Flock(store=LeaseFailingStore())
    # With a concurrency limit a run may wait for a slot, so its delivery is leased when the run
    # starts (without one it is created leased, and lease() is not called on the first attempt).
    flock.agent("a").consumes(Task).publishes(Result).with_engines(flaky(0, [])).max_concurrency(1)
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle(timeout=5)
    assert [(f.agent, f.stage, f.error) for f in summary.failures] == [("<runtime>", "runtime", "disk full")]
    assert not summary.ok
