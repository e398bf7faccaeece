"""The floor: the two-stage pipeline written in plain asyncio, with none of a runtime's features.

    python bench/floor.py --seeds 10000          # one run; prints a JSON line
    python bench/run_path.py                     # interleaved with ours in fresh processes

What it does is the least any blackboard runtime must do for the same work, so that our CPU time
per agent run can be read as a multiple of it (issue 19):

- every artifact is validated by Pydantic (the seed payloads when published, each output when an
  agent returns it) and stored with an id, its type, its producer and a correlation id;
- routing is indexed by type: a published artifact is offered to the subscribers of its type;
- one task per run, under a semaphore;
- the results are kept (a dict by id, plus a list per type).

No leases, retries, visibility, budgets, tracing hooks, dead letters or idle accounting beyond a
counter: those are what the runtime adds, and the ratio says what they cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from pydantic import BaseModel
from scenario_kit import Mid, Out, Seed, seed

Handler = Callable[["Stored"], Awaitable[BaseModel]]


@dataclass(slots=True)
class Stored:
    """An artifact on the floor's board."""

    id: int
    type: str
    payload: BaseModel
    produced_by: str
    correlation_id: int


@dataclass
class Floor:
    """A board, a type index of subscribers, and one task per run under a semaphore."""

    concurrency: int = 100
    artifacts: dict[int, Stored] = field(default_factory=dict)
    by_type: dict[str, list[Stored]] = field(default_factory=dict)
    subscribers: dict[str, list[tuple[str, type[BaseModel], Handler]]] = field(default_factory=dict)
    runs: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _active: int = 0

    def __post_init__(self) -> None:
        self._gate = asyncio.Semaphore(self.concurrency)
        self._idle = asyncio.Event()
        self._idle.set()

    def subscribe(
        self, agent: str, consumes: type[BaseModel], publishes: type[BaseModel], handler: Handler
    ) -> None:
        self.subscribers.setdefault(consumes.__name__, []).append((agent, publishes, handler))

    def publish(
        self, model: type[BaseModel], payload: dict[str, Any], produced_by: str = "external"
    ) -> Stored:
        validated = model.model_validate(payload)
        return self._store(validated, produced_by, None)

    def _store(self, payload: BaseModel, produced_by: str, correlation_id: int | None) -> Stored:
        artifact_id = next(self._ids)
        stored = Stored(
            artifact_id, type(payload).__name__, payload, produced_by, correlation_id or artifact_id
        )
        self.artifacts[artifact_id] = stored
        self.by_type.setdefault(stored.type, []).append(stored)
        self._route(stored)
        return stored

    def _route(self, stored: Stored) -> None:
        for agent, publishes, handler in self.subscribers.get(stored.type, ()):
            self._active += 1
            self._idle.clear()
            asyncio.get_running_loop().create_task(self._run(agent, publishes, handler, stored))

    async def _run(self, agent: str, publishes: type[BaseModel], handler: Handler, stored: Stored) -> None:
        try:
            async with self._gate:
                output = await handler(stored)
                validated = publishes.model_validate(output.model_dump())  # outputs are checked too
                self.runs += 1
                self._store(validated, agent, stored.correlation_id)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def until_idle(self) -> None:
        await self._idle.wait()


async def pipeline(seeds: int) -> dict[str, float]:
    """N seeds -> stage one -> stage two, as bench/pipeline.py does with function engines."""
    floor = Floor()

    async def stage_one(stored: Stored) -> BaseModel:
        return Mid(**stored.payload.model_dump())

    async def stage_two(stored: Stored) -> BaseModel:
        return Out(n=stored.payload.n, summary="ok")  # type: ignore[attr-defined]

    floor.subscribe("stage_one", Seed, Mid, stage_one)
    floor.subscribe("stage_two", Mid, Out, stage_two)
    items = [seed(i) for i in range(seeds)]
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        floor.publish(Seed, item.model_dump())
        await asyncio.sleep(0) if len(floor.artifacts) % 1000 == 0 else None
    await floor.until_idle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if floor.runs != 2 * seeds or len(floor.by_type.get("Out", ())) != seeds:
        raise SystemExit(f"floor run was not complete: {floor.runs} runs")
    return {"runs": floor.runs, "cpu_seconds": cpu, "seconds": wall, "artifacts": len(floor.artifacts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(pipeline(args.seeds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
