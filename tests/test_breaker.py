"""The circuit breaker stops runaway loops, not long-lived servers (issue 14, item 4): it counts
the runs of an agent within one workflow (correlation id), so independent inputs never add up."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from flock_cli import Flock, FunctionEngine, flock_type
from flock_cli.core.breaker import BreakerCounts
from tests.models import Task
from tests.test_cli import cli, spawn, wait_for, write


@flock_type(name="breaker.Draft")
class Draft(BaseModel):
    n: int


@flock_type(name="breaker.Critique")
class Critique(BaseModel):
    n: int


async def test_independent_inputs_never_trip_the_breaker() -> None:
    flock = Flock(max_agent_iterations=3)
    done: list[int] = []
    flock.agent("worker").consumes(Task).with_engines(
        FunctionEngine(lambda i: done.append(i.first_as(Task).n))
    )
    await flock.publish_many([Task(n=n) for n in range(50)])  # fifty workflows of one run each
    summary = await flock.run_until_idle()
    assert len(done) == 50 and summary.breaker_trips == [] and summary.ok


async def test_a_loop_trips_in_its_own_workflow_only() -> None:
    """Two looping workflows each trip after the limit; a third, quiet one is untouched."""
    flock = Flock(max_agent_iterations=4)
    flock.agent("writer").consumes(Task).consumes(Critique).publishes(Draft).with_engines(
        FunctionEngine(lambda i: Draft(n=len(i.artifacts)))
    )
    flock.agent("critic").consumes(Draft).publishes(Critique).with_engines(
        FunctionEngine(lambda i: Critique(n=1))
    )
    flock.agent("quiet").consumes(Task).with_engines(FunctionEngine(lambda i: None))
    first = await flock.publish(Task(n=1))
    second = await flock.publish(Task(n=2))
    summary = await flock.run_until_idle(timeout=10)
    assert summary.runs_by_agent == {"writer": 8, "critic": 8, "quiet": 2}
    (trip,) = summary.breaker_trips
    assert trip.agent == "writer" and trip.held == 2
    assert sorted(map(str, trip.correlation_ids)) == sorted(
        [str(first.correlation_id), str(second.correlation_id)]
    )
    assert all("in workflow" in (d.error or "") for d in summary.dead_letters)


def test_the_counts_stay_bounded_and_keep_the_active_loop() -> None:
    counts = BreakerCounts(capacity=100)
    from uuid import uuid4

    loop = uuid4()
    for _ in range(1000):
        counts.count("writer", loop)  # the running loop stays the most recently active
        counts.count("worker", uuid4())  # a stream of independent workflows
    assert len(counts) == 100
    assert counts.of("writer", loop) == 1000
    assert counts.highest_by_agent() == {"writer": 1000, "worker": 1}


def test_the_highest_count_follows_what_the_table_still_holds() -> None:
    from uuid import uuid4

    counts = BreakerCounts(capacity=3)
    loop = uuid4()
    for _ in range(5):
        counts.count("writer", loop)
    counts.count("writer", None)  # runs outside any workflow count under None
    assert counts.highest_by_agent() == {"writer": 5}
    for _ in range(3):  # three newer workflows push the loop out of the table
        counts.count("writer", uuid4())
    assert counts.of("writer", loop) == 0
    assert counts.highest_by_agent() == {"writer": 1}
    counts.clear()
    assert counts.highest_by_agent() == {}
    assert len(counts) == 0


def test_a_watch_server_serves_more_inputs_than_the_breaker_limit(tmp_path: Path) -> None:
    """The reported soak: a --watch server stopped an agent after max_agent_iterations runs for the
    life of the process. Now 30 independent inputs pass a limit of 5, and the server exits 0."""
    recipe = write(
        tmp_path / "serve.yaml",
        """
        name: serve
        settings: {max_agent_iterations: 5}
        types:
          Request: {fields: {n: int}}
          Answer: {fields: {n: int}}
        agents:
          answerer: {consumes: Request, publishes: Answer, engine: test}
        """,
    )
    proc = spawn("run", recipe, "--watch", "--quiet", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".flock" / "serve.db").exists())
        write(tmp_path / "requests.json", json.dumps([{"n": n} for n in range(30)]))
        published = cli("publish", "Request", "requests.json", "--recipe", recipe, cwd=tmp_path)
        assert published.returncode == 0, published.stderr
        deadline = time.monotonic() + 60

        def answered() -> int:
            listed = cli(
                "board", "list", "--recipe", recipe, "--type", "Answer", "--json", "-n", "1", cwd=tmp_path
            )
            return int(json.loads(listed.stdout)["total"])

        while answered() < 30:
            assert time.monotonic() < deadline, "the server stopped answering"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "circuit breaker" not in out and "dead letter" not in out
