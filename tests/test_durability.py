"""Crash safety and several processes on one SQLite board, with real processes and SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from flock_cli import BoardBusyError, Flock, FunctionEngine, ResumeRefusedError
from flock_cli.store import UNRESTRICTED, DeliveryStatus, RunRecord, SQLiteBlackboardStore
from tests.board_worker import Digest, Draft, Final, Seed, build

ROOT = Path(__file__).resolve().parent.parent


def worker(*args: str, delay: float | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if delay is not None:
        env["BOARD_WORKER_DELAY"] = str(delay)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.board_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def check_board(board: Path, seeds: int) -> None:
    """No artifact lost, no (artifact, agent) pair completed twice, batches complete."""
    store = SQLiteBlackboardStore(board)
    try:
        artifacts = (await store.query(viewer=UNRESTRICTED)).items
        by_type = Counter(a.type for a in artifacts)
        assert by_type["Seed"] == seeds
        assert sorted(a.payload["n"] for a in artifacts if a.type == "Draft") == list(range(seeds))
        assert sorted(a.payload["n"] for a in artifacts if a.type == "Final") == list(range(seeds))
        assert sorted(a.payload["n"] for a in artifacts if a.type == "Pair") == list(range(seeds))
        assert await store.gate_entries() == [] and await store.batch_entries() == []
        digests = [a.payload for a in artifacts if a.type == "Digest"]
        assert sum(d["count"] for d in digests) == seeds
        assert sum(d["total"] for d in digests) == sum(range(seeds))
        done = await store.deliveries(status=DeliveryStatus.DONE)
        pairs = Counter((d.agent, d.artifact_ids) for d in done)
        assert max(pairs.values()) == 1
        assert await store.deliveries(status=DeliveryStatus.PENDING) == []
        assert await store.deliveries(status=DeliveryStatus.LEASED) == []
        assert await store.unrouted() == []
    finally:
        await store.close()


async def run_records(board: Path) -> int:
    """How many orchestrators have attached to the board so far."""
    store = SQLiteBlackboardStore(board)
    try:
        return len(await store.runs())
    finally:
        await store.close()


async def left_mid_flight(board: Path) -> int:
    """1 if a killed orchestrator left runs leased (it died while they were running)."""
    store = SQLiteBlackboardStore(board)
    try:
        return int(bool(await store.deliveries(status=DeliveryStatus.LEASED)))
    finally:
        await store.close()


async def publish_seeds(board: Path, seeds: int, start: int = 0) -> None:
    publisher = build(str(board), role="publisher")
    await publisher.publish_many([Seed(n=n) for n in range(start, start + seeds)])
    await publisher.store.close()


async def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    per_round, rounds = 40, 20
    rng = random.Random(20261126)
    kills = interrupted = 0
    for round_no in range(rounds):
        # New work every round, so each orchestrator is busy (runs leased, batches half full,
        # outputs unrouted) at the moment it is killed.
        await publish_seeds(board, per_round, start=round_no * per_round)
        runs_before = await run_records(board)
        proc = worker("run", str(board), delay=0.03)
        # Killed at a random point of its work, timed from when it attached: how long a process
        # takes to start says nothing about the board, and varies with the machine's load.
        deadline = time.monotonic() + 60
        while await run_records(board) == runs_before and proc.poll() is None:
            assert time.monotonic() < deadline, "the orchestrator never attached"
            await asyncio.sleep(0.02)
        time.sleep(rng.uniform(0.1, 0.4))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
        interrupted += await left_mid_flight(board)
    final = worker("run", str(board))
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    print(f"kills={kills} interrupted={interrupted}")
    assert kills >= rounds - 2, f"only {kills} of {rounds} orchestrators were still working when killed"
    assert interrupted >= rounds // 2, f"only {interrupted} kills left leased runs behind"
    await check_board(board, per_round * rounds)


async def test_publisher_orchestrator_and_reader_processes_share_a_board(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    await SQLiteBlackboardStore(board).close()  # create the schema before the processes race for it
    orchestrator = worker("watch", str(board), "2.0")
    time.sleep(0.5)
    reader = worker("read", str(board), "3")
    publisher = worker("publish", str(board), "40")
    outputs = {
        name: p.communicate(timeout=120)
        for name, p in [("publisher", publisher), ("reader", reader), ("orchestrator", orchestrator)]
    }
    for name, proc in [("publisher", publisher), ("reader", reader), ("orchestrator", orchestrator)]:
        _out, err = outputs[name]
        assert proc.returncode == 0, f"{name}: {err}"
        assert "locked" not in err and "Traceback" not in err, f"{name}: {err}"
    assert "reads=" in outputs["reader"][0]
    await check_board(board, 40)


async def test_resume_with_a_changed_definition_is_refused_unless_forced(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    await publish_seeds(board, 3)
    store = SQLiteBlackboardStore(board)  # an earlier run of another definition crashed, leaving work
    now = datetime.now(UTC)
    await store.save_run(
        RunRecord(
            id=uuid4(),
            fingerprint="0ld0ld0ld0ld0ld0",
            owner="gone",
            pid=1,
            host="elsewhere",
            started_at=now,
            heartbeat_at=now,
            status="crashed",
        )
    )
    await store.close()
    changed = build(str(board))
    changed.agent("extra").consumes(Seed).with_engines(FunctionEngine(lambda i: None))
    with pytest.raises(ResumeRefusedError, match="different workflow definition"):
        await changed.attach()
    await changed.attach(force=True)
    summary = await changed.run_until_idle()
    assert summary.ok and summary.runs_by_agent["extra"] == 3
    await changed.shutdown()
    await changed.store.close()


async def test_replay_publishes_copies_and_resume_does_not(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    flock = build(str(board))
    seed = await flock.publish(Seed(n=7))
    assert (await flock.run_until_idle()).ok
    copies = await flock.replay([seed.id])
    summary = await flock.run_until_idle()
    assert copies[0].id != seed.id and f"replay-of:{seed.id}" in copies[0].tags
    assert summary.runs_by_agent == {"drafter": 1, "finisher": 1, "pairer": 1, "digester": 1}
    await flock.shutdown()
    await flock.store.close()
    again = build(str(board))
    assert (await again.run_until_idle()).agent_runs == 0  # resuming a finished board re-runs nothing
    await again.shutdown()
    await again.store.close()


async def test_lineage_on_the_board(tmp_path: Path) -> None:
    flock = build(str(tmp_path / "board.db"))
    seed = await flock.publish(Seed(n=1))
    await flock.run_until_idle()
    lineage = await flock.store.lineage(seed.id)
    kinds = [(await flock.store.get(i, viewer=UNRESTRICTED)).type for i in lineage.children]  # type: ignore[union-attr]
    assert kinds == ["Draft", "Final", "Pair", "Digest"]
    await flock.shutdown()
    await flock.store.close()


def test_types_used_by_the_worker_are_importable() -> None:
    assert {Seed, Draft, Final, Digest}
    assert Flock


async def test_two_publishers_and_an_orchestrator_in_one_process(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    orchestrator = build(str(board))
    stop = asyncio.Event()
    watching = asyncio.create_task(orchestrator.watch(poll_interval=0.02, stop=stop))
    publishers = [build(str(board), role="publisher") for _ in range(2)]
    await asyncio.gather(
        *(p.publish_many([Seed(n=n) for n in range(i * 10, i * 10 + 10)]) for i, p in enumerate(publishers))
    )
    for p in publishers:
        await p.store.close()
    for _ in range(200):
        if len(await orchestrator.store.get_by_type(Final, viewer=UNRESTRICTED)) == 20:
            break
        await asyncio.sleep(0.05)
    stop.set()
    summary = await watching
    assert summary.ok
    await orchestrator.shutdown()
    await orchestrator.store.close()
    await check_board(board, 20)


async def test_a_second_orchestrator_in_the_same_process_is_refused(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    first = build(str(board))
    await first.attach()
    second = build(str(board))
    with pytest.raises(BoardBusyError):
        await second.attach()
    await first.shutdown()
    await second.attach()  # once the first has finished, the board is free
    await second.shutdown()
    for flock in (first, second):
        await flock.store.close()


async def test_publishes_gathered_at_start_resume_a_crashed_board_once(tmp_path: Path) -> None:
    # An orchestrator killed mid-flight leaves leased runs, half-filled joins and batches, and a
    # run record still "running". Attaching to that board writes before it is done, so several
    # publishes gathered at start overlap with the first one's attach: they must wait for it,
    # not resume the board again (a second run record, gates restored under the routing begun).
    board = tmp_path / "board.db"
    await publish_seeds(board, 40)
    # imported, not run as __main__: its engines' names, and so its definition's fingerprint,
    # are this process's
    script = (
        "import asyncio, sys; from tests.board_worker import main; sys.exit(asyncio.run(main(sys.argv[1:])))"
    )
    env = {**os.environ, "BOARD_WORKER_DELAY": "0.03"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "run", str(board)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not await left_mid_flight(board):  # killed while its runs are leased
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        await asyncio.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    flock = build(str(board))
    await asyncio.gather(*(flock.publish(Seed(n=n)) for n in range(40, 45)))
    summary = await flock.run_until_idle()
    assert summary.ok, summary.failures
    mine = [r for r in await flock.store.runs() if r.pid == os.getpid()]
    assert [r.status for r in mine] == ["running"]
    await flock.shutdown()
    await flock.store.close()
    await check_board(board, 45)


async def test_resume_routes_every_unrouted_artifact_not_just_a_page(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    await publish_seeds(board, 1200)
    flock = build(str(board))
    # 1,200 independent inputs: the breaker (1,000 runs of one agent per workflow) never trips
    summary = await flock.run_until_idle()
    assert flock.resumed["unrouted"] == 1200
    assert summary.runs_by_agent["drafter"] == 1200
    await flock.shutdown()
    await flock.store.close()


async def test_a_cancelled_run_leaves_a_dead_delivery_and_a_letter(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    flock = Flock(store=SQLiteBlackboardStore(board))

    async def hang(inputs):
        await asyncio.sleep(30)

    flock.agent("slow").consumes(Seed).with_engines(FunctionEngine(hang))
    await flock.publish(Seed(n=1))
    summary = await flock.shutdown(timeout=0.2)
    assert [f.stage for f in summary.failures] == ["cancelled"]
    assert await flock.store.deliveries(status=DeliveryStatus.LEASED) == []
    assert len(await flock.store.deliveries(status=DeliveryStatus.DEAD)) == 1
    assert [d.stage for d in await flock.store.dead_letters()] == ["cancelled"]
    await flock.store.close()
