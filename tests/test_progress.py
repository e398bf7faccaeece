"""The live progress panel of `flock run` shows what runs, what waits and what failed."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from rich.console import Console

from flock_cli import Flock, FunctionEngine, flock_type
from flock_cli.cli.progress import LiveProgress


@flock_type(name="ProgressJob")
class Job(BaseModel):
    n: int


@flock_type(name="ProgressDone")
class Done(BaseModel):
    n: int


def text_of(renderable: object) -> str:
    console = Console(width=80, record=True)
    console.print(renderable)
    return console.export_text()


async def test_the_panel_shows_running_and_queued_runs_then_the_counts() -> None:
    release = asyncio.Event()

    async def work(inputs):  # type: ignore[no-untyped-def]
        await release.wait()
        return Done(n=inputs.first_as(Job).n)

    flock = Flock()
    flock.agent("worker").consumes(Job).publishes(Done).with_engines(FunctionEngine(work)).max_concurrency(1)
    progress = LiveProgress(flock, enabled=False, title="demo")
    await flock.attach()
    for n in range(3):
        await flock.publish(Job(n=n))
    await asyncio.sleep(0.05)
    status = flock.status()
    assert (status.running_by_agent, status.queued_by_agent) == ({"worker": 1}, {"worker": 2})
    panel = text_of(progress._render())
    assert panel.splitlines()[0].startswith("demo") and "artifacts 3  failures 0" in panel
    assert row_of(panel, "worker") == ["worker", "1", "2", "1"]  # running, queued, runs started
    release.set()
    while flock.status().running or flock.status().queued_by_agent:
        await asyncio.sleep(0.01)
    panel = text_of(progress._render())
    assert row_of(panel, "worker") == ["worker", "0", "0", "3"]
    assert "artifacts 6" in panel
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"worker": 3}


def row_of(panel: str, agent: str) -> list[str]:
    line = next(line for line in panel.splitlines() if f" {agent} " in line)
    return [cell.strip() for cell in line.split("│")[1:-1]]
