"""Many orchestrators on one PostgreSQL board (a real throwaway server, tests/postgres_server.py):
work split exactly once, leases taken over from killed processes, cut connections and a stopped
server survived, definitions compared, breaker and budgets counted board-wide, draining."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from flock_cli import Flock, FunctionEngine, ResumeRefusedError, RunSummary
from flock_cli.store import UNRESTRICTED, DeliveryStatus
from tests.board_worker import Seed, build

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

from flock_cli.store.postgres import PostgresBlackboardStore
from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


async def check_board(url: str, seeds: int) -> dict[str, int]:
    """Every seed has exactly one output of every stage, no delivery completed twice, nothing
    pending, leased or unrouted, and batches summed every Final once. Returns runs per stage."""
    store = PostgresBlackboardStore(url)
    try:
        artifacts = (await store.query(viewer=UNRESTRICTED)).items
        by_type = Counter(a.type for a in artifacts)
        assert by_type["Seed"] == seeds
        for stage in ("Draft", "Final", "Pair"):
            assert sorted(a.payload["n"] for a in artifacts if a.type == stage) == list(range(seeds)), stage
        digests = [a.payload for a in artifacts if a.type == "Digest"]
        assert sum(d["count"] for d in digests) == seeds
        assert sum(d["total"] for d in digests) == sum(range(seeds))
        done = await store.deliveries(status=DeliveryStatus.DONE)
        assert max(Counter((d.agent, d.artifact_ids) for d in done).values()) == 1
        assert await store.deliveries(status=DeliveryStatus.PENDING) == []
        assert await store.deliveries(status=DeliveryStatus.LEASED) == []
        assert await store.unrouted() == []
        assert await store.gate_entries() == [] and await store.batch_entries() == []
        assert await store.dead_letters() == []
        return dict(Counter(d.agent for d in done))
    finally:
        await store.close()


def worker(*args: str, delay: float = 0.007, lease_ttl: float = 2.0) -> subprocess.Popen[str]:
    env = dict(os.environ, BOARD_WORKER_DELAY=str(delay), BOARD_WORKER_LEASE_TTL=str(lease_ttl))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.board_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_processes(url: str, count: int, timeout: float = 60) -> None:
    """Wait until ``count`` orchestrators have joined the board (their start-up takes a while)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            found = conn.execute("SELECT to_regclass('flock.processes') IS NOT NULL").fetchone()
            if found and found[0]:
                rows = conn.execute("SELECT count(*) FROM flock.processes").fetchone()
                if rows and rows[0] >= count:
                    return
        time.sleep(0.1)
    raise AssertionError(f"{count} orchestrators did not join the board within {timeout} s")


def wait_for_seeds(url: str, timeout: float = 60) -> None:
    """Wait until the first Seed is on the board (a publisher's start-up takes a while)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM flock.artifacts WHERE type = 'Seed'").fetchone()
            if row and row[0] > 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"no Seed was published within {timeout} s")


def finished(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out


async def watch_together(*flocks: Flock, idle_exit: float) -> list[RunSummary]:
    """Every flock watches the board until it has been idle for ``idle_exit`` seconds."""
    return list(await asyncio.gather(*(f.watch(poll_interval=0.05, idle_exit=idle_exit) for f in flocks)))


async def leave(*flocks: Flock) -> None:
    for flock in flocks:
        await flock.shutdown()
        await flock.store.close()


async def test_two_orchestrators_share_the_work_and_run_each_delivery_once(postgres_url: str) -> None:
    first, second = build(postgres_url), build(postgres_url)
    await first.attach()
    await second.attach()
    assert [first.store.leading, second.store.leading].count(True) == 1  # one routes, both run
    publisher = build(postgres_url, role="publisher")
    await publisher.publish_many([Seed(n=n) for n in range(40)])
    summaries = await watch_together(first, second, idle_exit=2)
    assert all(s.ok for s in summaries)
    runs = await check_board(postgres_url, 40)
    assert sum(runs.values()) == sum(s.agent_runs for s in summaries) == 40 * 3 + 8
    assert all(s.agent_runs > 0 for s in summaries)  # both processes worked
    # each artifact counted once: outputs by the process that made them, seeds by the router
    assert sum(s.artifacts_published for s in summaries) == 40 + 40 * 3 + 8
    processes = await first.store.processes()  # type: ignore[attr-defined]
    assert {p.owner for p in processes} == {first._runtime.owner, second._runtime.owner}
    await leave(first, second)
    await publisher.store.close()
    board = PostgresBlackboardStore(postgres_url)
    assert await board.processes() == []  # both left the board when they shut down
    await board.close()


async def test_publishes_gathered_at_start_join_the_board_once(postgres_url: str) -> None:
    # Each publish attaches first; joining a shared board takes several round trips, so the
    # publishes overlap with the first one's join and must wait for it, not join again.
    flock = build(postgres_url)
    await asyncio.gather(*(flock.publish(Seed(n=n)) for n in range(6)))
    summary = await flock.run_until_idle()
    assert summary.ok, summary.failures
    processes = await flock.store.processes()  # type: ignore[attr-defined]
    assert [p.owner for p in processes] == [flock._runtime.owner]
    assert len([r for r in await flock.store.runs() if r.owner == flock._runtime.owner]) == 1
    await leave(flock)


async def test_three_orchestrators_killed_twenty_times_lose_and_double_nothing(postgres_url: str) -> None:
    seeds, rng = 150, random.Random(15)
    publisher = worker("publish", postgres_url, str(seeds))
    workers = [worker("watch", postgres_url, "3", delay=0.12, lease_ttl=1.5) for _ in range(3)]
    kills = 0
    while kills < 20:
        time.sleep(rng.uniform(0.2, 0.5))
        victim = rng.randrange(3)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].communicate()
        kills += 1
        workers[victim] = worker("watch", postgres_url, "3", delay=0.12, lease_ttl=1.5)
    assert "published" in finished(publisher)
    for proc in workers:
        finished(proc)
    # Whatever the killed ones held was taken over; a last orchestrator checks the board is idle.
    finished(worker("run", postgres_url, lease_ttl=1.5))
    await check_board(postgres_url, seeds)


async def test_cut_connections_are_reopened_and_nothing_is_lost(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    seeds = 60
    workers = [worker("watch", postgres_url, "3", delay=0.05) for _ in range(2)]
    wait_for_processes(postgres_url, 2)
    publisher = worker("publish", postgres_url, str(seeds))
    for _ in range(5):
        time.sleep(0.4)
        victim = workers[0].pid  # all of one process's connections, the routing lock's too
        postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s OR application_name LIKE %s",
            (f"flock-flow pid {victim}", f"flock-flow pid {victim} %"),
        )
    assert "published" in finished(publisher)
    for proc in workers:
        finished(proc)
    finished(worker("run", postgres_url))
    await check_board(postgres_url, seeds)


async def test_a_server_stopped_for_five_seconds_mid_run(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    seeds = 60
    workers = [worker("watch", postgres_url, "8", delay=0.05) for _ in range(2)]
    wait_for_processes(postgres_url, 2)  # a board never reached is an error at once, by design
    publisher = worker("publish", postgres_url, str(seeds))
    wait_for_seeds(postgres_url)  # the publisher reached the board: from now on it must ride out the stop
    time.sleep(0.2)
    postgres_server.stop()
    time.sleep(5.0)
    postgres_server.start()
    assert "published" in finished(publisher)
    for proc in workers:
        finished(proc)
    finished(worker("run", postgres_url))
    await check_board(postgres_url, seeds)


async def test_a_different_definition_is_refused_unless_forced(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = build(postgres_url)
    await running.attach()
    changed = build(postgres_url)
    changed.agent("extra").consumes(Seed).with_engines(FunctionEngine(lambda i: None))
    with pytest.raises(ResumeRefusedError, match="different definition"):
        await changed.attach()
    with caplog.at_level("WARNING", logger="flock_cli.board"):
        await changed.attach(force=True)
    assert "forced to join orchestrators of a different definition" in caplog.text  # and what it means
    assert "routes every artifact by its own definition" in caplog.text
    for flock in (running, changed):
        await flock.shutdown()
        await flock.store.close()


async def test_the_circuit_breaker_counts_runs_of_every_process(postgres_url: str) -> None:
    from pydantic import BaseModel

    from flock_cli import flock_type

    @flock_type(name="Ping")
    class Ping(BaseModel):
        n: int

    def looping(store: PostgresBlackboardStore) -> Flock:
        flock = Flock(store=store, max_agent_iterations=5)

        async def again(inputs):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.01)
            return Ping(n=inputs.first_as(Ping).n + 1)

        flock.agent("looper").consumes(Ping).publishes(Ping).with_engines(
            FunctionEngine(again)
        ).prevent_self_trigger(False)
        return flock

    first, second = (
        looping(PostgresBlackboardStore(postgres_url)),
        looping(PostgresBlackboardStore(postgres_url)),
    )
    await first.attach()
    await second.attach()
    await first.publish(Ping(n=0))
    summaries = await watch_together(first, second, idle_exit=1.5)
    assert sum(s.agent_runs for s in summaries) == 5  # the limit of both processes together
    letters = await first.store.dead_letters()
    assert [letter.reason for letter in letters] == ["breaker"]
    await leave(first, second)


async def test_schema_of_a_newer_release_is_refused_and_an_older_one_migrated(postgres_url: str) -> None:
    import psycopg

    from flock_cli.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION, BoardSchemaError

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a board of release 1
        conn.execute("CREATE SCHEMA flock")
        conn.execute("CREATE TABLE flock.meta (key text PRIMARY KEY, value text NOT NULL)")
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)  # type: ignore[call-overload]
        conn.execute("INSERT INTO flock.meta VALUES ('schema_version', '1')")
    store = PostgresBlackboardStore(postgres_url)
    await store.ensure_ready()
    assert store.schema_version_before == 1
    assert await store.processes() == []  # a table of version 2
    await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE flock.meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    newer = PostgresBlackboardStore("postgresql://flock:secret@" + postgres_url.split("@", 1)[1])
    with pytest.raises(BoardSchemaError, match=f"schema version {SCHEMA_VERSION + 1}") as raised:
        await newer.ensure_ready()
    assert "secret" not in str(raised.value) and "flock:***@" in str(raised.value)
    await newer.close()


async def test_a_migration_cut_off_after_the_server_was_reached_runs_again(postgres_url: str) -> None:
    import psycopg

    from flock_cli.store.postgres_schema import MIGRATION_LOCK

    store = PostgresBlackboardStore(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True, application_name="blocker") as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))  # the migration waits here
        ready = asyncio.create_task(store.ensure_ready())
        waiting: list[tuple[int]] = []
        for _ in range(200):
            await asyncio.sleep(0.05)
            waiting = blocker.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'flock-flow pid %%'"
                " AND wait_event_type = 'Lock'"
            ).fetchall()
            if waiting:
                break
        assert waiting, "the migration never waited for its lock"
        blocker.execute("SELECT pg_terminate_backend(%s)", waiting[0])
        await asyncio.sleep(0.2)
        blocker.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        await asyncio.wait_for(ready, 30)
    assert await store.processes() == []  # the schema is there
    await store.close()


async def test_a_calls_budget_counts_the_model_calls_of_every_process(postgres_url: str) -> None:
    from typing import Any, ClassVar

    from flock_cli import Budget
    from tests.models import Idea, Tagline

    class ModelLike(FunctionEngine):
        calls_models: ClassVar[bool] = True  # admitted like a model-calling engine

    async def write(inputs: Any, ctx: Any) -> Tagline:
        await asyncio.sleep(0.05)
        ctx.trace.usage(model="m", input_tokens=3, output_tokens=2, calls=1)
        return Tagline(line=inputs.artifacts[0].payload["topic"])

    def member() -> Flock:
        flock = Flock(store=PostgresBlackboardStore(postgres_url), max_concurrency=4)
        flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(ModelLike(write)).budget(
            Budget(calls=10)
        )
        return flock

    first, second = member(), member()
    await first.attach()
    await second.attach()
    for n in range(30):
        await first.publish(Idea(topic=f"t{n}"))
    summaries = await watch_together(first, second, idle_exit=1.5)
    assert sum(s.agent_runs for s in summaries) == 10  # 10 calls across both processes
    letters = await first.store.dead_letters()
    assert Counter(letter.reason for letter in letters) == {"budget": 20}
    counters = await first.store.counters("usage:calls:")  # type: ignore[attr-defined]
    assert counters == {"usage:calls:agent:writer": 10.0, "usage:calls:flock": 10.0}
    await leave(first, second)


async def test_an_exclusive_group_across_processes_runs_each_artifact_once(postgres_url: str) -> None:
    from typing import Any

    from tests.models import Idea, Tagline

    async def write(inputs: Any) -> Tagline:
        await asyncio.sleep(0.02)
        return Tagline(line=inputs.artifacts[0].payload["topic"])

    def member() -> Flock:
        flock = Flock(store=PostgresBlackboardStore(postgres_url), max_concurrency=3)
        for name in ("left", "right"):
            flock.agent(name).consumes(Idea, group="writers").publishes(Tagline).with_engines(
                FunctionEngine(write)
            )
        return flock

    first, second = member(), member()
    await first.attach()
    await second.attach()
    for n in range(24):
        await second.publish(Idea(topic=f"t{n}"))
    summaries = await watch_together(first, second, idle_exit=1.5)
    taglines = await first.store.get_by_type(Tagline, viewer=UNRESTRICTED)
    assert sorted(t.line for t in taglines) == sorted(f"t{n}" for n in range(24))  # once each
    assert sum(s.agent_runs for s in summaries) == 24
    await leave(first, second)


def test_one_recipe_has_one_fingerprint_in_every_process() -> None:
    """Two processes running one recipe (replayed answers included) must agree on its definition,
    or the second orchestrator of a shared board is refused (and a resume too)."""
    from flock_cli.core.session import fingerprint
    from flock_cli.recipe.loader import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "code_review.yaml")
    first, second = recipe.build(), recipe.build()  # two Recording objects at two addresses
    assert fingerprint(first.agents) == fingerprint(second.agents)
    script = (
        "from flock_cli.core.session import fingerprint; from flock_cli.recipe.loader import load_recipe;"
        "print(fingerprint(load_recipe('recipes/code_review.yaml').build().agents))"
    )
    printed = {
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert printed == {fingerprint(first.agents) + "\n"}
