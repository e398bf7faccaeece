"""Small engines and components the tests use to observe the runtime."""

from __future__ import annotations

import asyncio
from typing import Any

from flock_cli import AgentComponent, Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.core.agent import Agent
from tests.models import Result, Task


class Echo(EngineComponent):
    """Publishes one Result per input Task, recording what it saw."""

    seen: Any = None
    delay: float = 0.0

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        tasks = inputs.all_as(Task)
        if self.seen is not None:
            self.seen.append([t.n for t in tasks])
        if self.delay:
            await asyncio.sleep(self.delay)
        return EvalResult(artifacts=[Result(n=t.n, by=agent.name) for t in tasks])


class Recorder(AgentComponent):
    """Appends the name of every hook it sees to ``log``."""

    log: Any = None
    tag: str = ""

    def _note(self, what: str) -> None:
        self.log.append(f"{self.tag}{what}")

    async def on_initialize(self, agent: Agent, ctx: Context) -> None:
        self._note("initialize")

    async def on_pre_consume(self, agent: Agent, ctx: Context, inputs: Any) -> Any:
        self._note("pre_consume")
        return inputs

    async def on_pre_evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalInputs:
        self._note("pre_evaluate")
        return inputs

    async def on_post_evaluate(
        self, agent: Agent, ctx: Context, inputs: EvalInputs, result: EvalResult
    ) -> EvalResult:
        self._note("post_evaluate")
        return result

    async def on_post_publish(self, agent: Agent, ctx: Context, artifact: Any) -> None:
        self._note("post_publish")

    async def on_error(self, agent: Agent, ctx: Context, error: BaseException) -> None:
        self._note(f"error:{type(error).__name__}")

    async def on_terminate(self, agent: Agent, ctx: Context) -> None:
        self._note("terminate")
