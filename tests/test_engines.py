from __future__ import annotations

import asyncio
import enum
import types
from datetime import datetime
from typing import Literal
from uuid import UUID

import pytest
from pydantic import BaseModel, Field

from flock_cli import EvalResult, Flock, FunctionEngine, InvalidDeclarationError, TestEngine, flock_type
from tests.models import BugReport, Idea, Movie, Result, Task


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Member(BaseModel):
    name: str = Field(min_length=2, max_length=12)
    instrument: Literal["guitar", "drums", "bass"]


@flock_type(name="Band")
class Band(BaseModel):
    band_name: str = Field(pattern=r"^[A-Z][a-z]{2,8} (Cats|Dogs)$")
    members: list[Member] = Field(min_length=2, max_length=4)
    founded: datetime
    code: UUID
    rating: float = Field(gt=0, le=5, multiple_of=0.5)
    color: Color
    tags: dict[str, int] = {}
    website: str | None = None
    size: int = Field(ge=3, le=3)


async def test_test_engine_outputs_validate_against_rich_schemas() -> None:
    flock = Flock()
    flock.agent("scout").consumes(Idea).publishes(Band, BugReport, Movie).with_engines(TestEngine(count=5))
    await flock.publish(Idea(topic="rock"))
    summary = await flock.run_until_idle()
    assert summary.ok and summary.artifacts_published == 16
    bands = await flock.store.get_by_type(Band)
    assert len(bands) == 5
    for band in bands:
        assert band.size == 3 and 2 <= len(band.members) <= 4 and band.rating % 0.5 == 0
    assert {b.severity for b in await flock.store.get_by_type(BugReport)} <= {
        "Critical",
        "High",
        "Medium",
        "Low",
    }


async def test_test_engine_is_deterministic_per_seed_and_input() -> None:
    async def outputs(seed: int, topic: str) -> list[dict]:
        flock = Flock()
        flock.agent("scout").consumes(Idea).publishes(Band).with_engines(TestEngine(seed=seed, count=2))
        await flock.publish(Idea(topic=topic))
        await flock.run_until_idle()
        return [a.payload for a in await flock.store.get_artifacts_by_type("Band")]

    assert await outputs(1, "x") == await outputs(1, "x")
    assert await outputs(1, "x") != await outputs(2, "x")
    assert await outputs(1, "x") != await outputs(1, "y")


async def test_test_engine_count_per_type() -> None:
    flock = Flock()
    flock.agent("a").consumes(Idea).publishes(Movie, Result).with_engines(TestEngine(count={"Movie": 2}))
    await flock.publish(Idea(topic="x"))
    summary = await flock.run_until_idle()
    assert summary.artifacts_published == 3


async def test_function_engine_return_shapes() -> None:
    flock = Flock()
    flock.agent("none").consumes(Task, where=lambda t: t.n == 0).publishes(Result).with_engines(
        FunctionEngine(lambda i: None)
    )
    flock.agent("one").consumes(Task, where=lambda t: t.n == 1).publishes(Result).with_engines(
        FunctionEngine(lambda i: Result(n=1))
    )
    flock.agent("many").consumes(Task, where=lambda t: t.n == 2).publishes(Result).with_engines(
        FunctionEngine(lambda i: [Result(n=2), Result(n=3)])
    )

    async def async_fn(inputs, ctx):
        return EvalResult(artifacts=[Result(n=4, by=ctx.agent)])

    flock.agent("async").consumes(Task, where=lambda t: t.n == 4).publishes(Result).with_engines(
        FunctionEngine(async_fn)
    )
    for n in (0, 1, 2, 4):
        await flock.publish(Task(n=n))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert sorted(r.n for r in await flock.store.get_by_type(Result)) == [1, 2, 3, 4]


async def test_a_sync_function_may_return_any_awaitable_every_time() -> None:
    """Whether a value is awaitable is remembered per type: the second run of the same types
    must still await an awaitable and not await a plain value."""

    class Later:
        def __init__(self, value: Result) -> None:
            self.value = value

        def __await__(self):  # type: ignore[no-untyped-def]
            yield from asyncio.sleep(0).__await__()
            return self.value

    @types.coroutine
    def generator_based(n: int):  # type: ignore[no-untyped-def]
        yield from asyncio.sleep(0).__await__()
        return Result(n=n)

    def plain_generator(n: int):  # type: ignore[no-untyped-def]
        yield Result(n=n)

    flock = Flock()
    flock.agent("later").consumes(Task, where=lambda t: t.n < 10).publishes(Result).with_engines(
        FunctionEngine(lambda i: Later(Result(n=i.artifacts[0].payload["n"])))
    )
    flock.agent("gen").consumes(Task, where=lambda t: 10 <= t.n < 20).publishes(Result).with_engines(
        FunctionEngine(lambda i: generator_based(i.artifacts[0].payload["n"]))
    )
    flock.agent("plain").consumes(Task, where=lambda t: t.n == 20).publishes(Result).with_engines(
        FunctionEngine(lambda i: plain_generator(20))
    )
    for n in (1, 2, 11, 12):
        await flock.publish(Task(n=n))
    summary = await flock.run_until_idle()
    assert summary.ok, summary.failures
    assert sorted(r.n for r in await flock.store.get_by_type(Result)) == [1, 2, 11, 12]
    await flock.publish(Task(n=20))  # a plain generator is not awaitable: refused, by its type
    summary = await flock.run_until_idle()
    assert (
        summary.failures[-1].error_type == "TypeError" and "returned generator" in summary.failures[-1].error
    )


async def test_function_engine_rejects_bad_functions_and_values() -> None:
    with pytest.raises(InvalidDeclarationError, match="takes"):
        FunctionEngine(lambda a, b, c: None)
    flock = Flock()
    flock.agent("weird").consumes(Task).publishes(Result).with_engines(FunctionEngine(lambda i: 42))
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.failures[0].error_type == "TypeError" and "returned int" in summary.failures[0].error


def test_tools_are_described_from_their_signature() -> None:
    from flock_cli import flock_tool
    from flock_cli.core.registry import tool_schema

    @flock_tool
    def announce(tagline: str, loud: bool = False) -> dict:
        """Announce a tagline."""
        return {}

    schema = tool_schema(announce)
    assert schema["name"] == "announce" and schema["description"] == "Announce a tagline."
    assert schema["parameters"]["required"] == ["tagline"]
    assert schema["parameters"]["properties"]["loud"] == {"type": "boolean"}
    flock = Flock()
    builder = flock.agent("a").with_tools([announce])
    assert builder.agent.tools == [announce]
    with pytest.raises(InvalidDeclarationError):
        flock.agent("b").with_tools([42])  # type: ignore[list-item]
