"""The measured runs of bench/scale_out.py: orchestrator processes (bench/board_node.py) on a fresh
database of a throwaway PostgreSQL server, a publisher in this process, and the board read from
outside (bench/board_probe.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from board_node import Seed, build
from board_probe import BoardProbe, WrongResult, board_activity, cpu_of, postmaster_pid, server_cpu
from pg_kit import fresh_database

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 120.0


@dataclass
class Node:
    """One orchestrator process and the file its stderr goes to."""

    proc: asyncio.subprocess.Process
    stderr: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_nodes(
    url: str, count: int, latency: float, concurrency: int | None, logs: Path
) -> list[Node]:
    """Start ``count`` orchestrators and wait until each has joined the board."""
    nodes = []
    for i in range(count):
        stderr = logs / f"node-{i}.err"
        args = [str(HERE / "board_node.py"), url, "--latency", str(latency)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=HERE.parent
            )
        nodes.append(Node(proc, stderr))
    for node in nodes:
        assert node.proc.stdout is not None
        try:
            line = await asyncio.wait_for(node.proc.stdout.readline(), READY_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await stop_nodes(nodes, check=False)
            raise WrongResult(f"orchestrator {node.pid} did not start:\n{node.stderr.read_text()[-3000:]}")
    return nodes


async def stop_nodes(nodes: list[Node], *, check: bool = True) -> list[dict[str, Any]]:
    """SIGTERM every orchestrator (each drains and leaves the board) and read its report."""
    for node in nodes:
        if node.proc.returncode is None:
            node.proc.send_signal(signal.SIGTERM)
    reports = []
    for node in nodes:
        assert node.proc.stdout is not None
        out = (await asyncio.wait_for(node.proc.stdout.read(), READY_TIMEOUT)).decode()
        code = await node.proc.wait()
        if not check:
            continue
        err = node.stderr.read_text()
        lines = out.strip().splitlines()
        if code != 0 or not lines or "Traceback" in err:
            raise WrongResult(f"orchestrator {node.pid} exited {code}:\n{out[-2000:]}\n{err[-3000:]}")
        reports.append(json.loads(lines[-1]))
    return reports


async def throughput(
    server: Any, processes: int, seeds: int, latency: float, concurrency: int | None
) -> dict[str, Any]:
    """N seeds published at once to ``processes`` orchestrators; runs/s until the board is idle."""
    with fresh_database(server) as url, tempfile.TemporaryDirectory(prefix="flock-scale-") as logs:
        publisher = build(url, role="publisher")
        await publisher.store.ensure_ready()  # type: ignore[attr-defined]  # the schema exists first
        nodes = await start_nodes(url, processes, latency, concurrency, Path(logs))
        activity_before = await board_activity(url)
        probe = await BoardProbe.open(url)
        try:
            postmaster = postmaster_pid(server.datadir)
            server_before, load_before = server_cpu(postmaster), os.getloadavg()[0]
            items = [Seed(n=n) for n in range(seeds)]
            started = time.time()
            await publisher.publish_many(items)
            ideal = 2 * seeds * latency / (processes * (concurrency or 32))
            await probe.wait_until_done(seeds, timeout=max(300.0, 20 * ideal))
            ended = time.time()
            server_used = server_cpu(postmaster) - server_before
            reports = await stop_nodes(nodes)
            figures = await probe.figures()
        finally:
            await probe.close()
            await publisher.store.close()
        await asyncio.sleep(0.5)  # the server processes of those connections add their counts as they end
        activity_after = await board_activity(url)
    # Less the first read's and this probe's own (the publisher's two or three are left in).
    commits = activity_after[0] - activity_before[0] - 1 - probe.statements
    sessions = activity_after[1] - activity_before[1] - 2
    figures.check(seeds)
    runs = sum(r["runs"] for r in reports)
    if runs != 2 * seeds or not all(r["ok"] for r in reports):
        raise WrongResult(f"{runs} runs for {seeds} seeds, failures: {[r['failures'] for r in reports]}")
    board_seconds = figures.last_artifact - figures.first_seed
    return {
        "processes": processes,
        "seeds": seeds,
        "latency": latency,
        "concurrency": concurrency,
        "runs": runs,
        "board_seconds": board_seconds,
        "runs_per_second": runs / board_seconds,
        "wall_seconds": ended - started,
        "wall_runs_per_second": runs / (ended - started),
        "runs_by_process": [r["runs"] for r in reports],
        "orchestrator_cpu_seconds": [round(r["cpu_seconds"], 3) for r in reports],
        "server_cpu_seconds": round(server_used, 3),
        "transactions": commits,
        "connections_opened": sessions,
        "load_average_before": load_before,
    }


def percentile(values: list[float], pct: float) -> float:
    """The value below which ``pct`` percent of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max, in milliseconds, of ``values`` in seconds."""
    return {
        "p50_ms": 1000 * statistics.median(values),
        "p90_ms": 1000 * percentile(values, 90),
        "p99_ms": 1000 * percentile(values, 99),
        "max_ms": 1000 * max(values),
    }


async def wake_up_latency(
    server: Any, processes: int, publishes: int, gap: tuple[float, float], seed: int = 15
) -> dict[str, Any]:
    """Seeds published one at a time, ``gap`` seconds apart (uniform), to ``processes``
    orchestrators running instant engines: from just before each publish to its stage_a run's
    start (the engine's ``time.time()``), and from each Mid's creation to its stage_b run's start."""
    rng = random.Random(seed)
    with fresh_database(server) as url, tempfile.TemporaryDirectory(prefix="flock-latency-") as logs:
        publisher = build(url, role="publisher")
        await publisher.store.ensure_ready()  # type: ignore[attr-defined]
        nodes = await start_nodes(url, processes, 0.0, 8, Path(logs))
        probe = await BoardProbe.open(url)
        try:
            await asyncio.sleep(1.0)  # past the members' start-up
            for n in range(publishes):
                await publisher.publish(Seed(n=n, sent=time.time()))
                await asyncio.sleep(rng.uniform(*gap))
            await probe.wait_until_done(publishes, timeout=300.0)
            reports = await stop_nodes(nodes)
            figures = await probe.figures()
            times = await probe.starts()
        finally:
            await probe.close()
            await publisher.store.close()
    figures.check(publishes)
    if sum(r["runs"] for r in reports) != 2 * publishes:
        raise WrongResult(f"runs {[r['runs'] for r in reports]} for {publishes} publishes")
    to_start = [times["Mid"][n] - times["Seed"][n] for n in range(publishes)]
    hop = [times["Out"][n] - times["Mid@"][n] for n in range(publishes)]
    return {
        "processes": processes,
        "publishes": publishes,
        "gap_seconds": list(gap),
        "publish_to_start": spread(to_start),
        "output_to_next_start": spread(hop),
        "runs_by_process": [r["runs"] for r in reports],
        "publish_to_start_seconds": [round(v, 6) for v in to_start],
        "output_to_next_start_seconds": [round(v, 6) for v in hop],
    }


async def idle_cpu(server: Any, processes: int, seconds: float) -> dict[str, Any]:
    """CPU used over ``seconds`` by ``processes`` orchestrators serving an empty board, and by the
    whole database server meanwhile, with the transactions the server counted."""
    with fresh_database(server) as url, tempfile.TemporaryDirectory(prefix="flock-idle-") as logs:
        nodes = await start_nodes(url, processes, 0.2, 8, Path(logs))
        probe = await BoardProbe.open(url)
        try:
            await asyncio.sleep(3.0)  # past the members' start-up
            leader = await probe.leader_pid()
            postmaster = postmaster_pid(server.datadir)
            await probe.close()
            await asyncio.sleep(0.5)  # its server process adds its counts as it ends
            loop = asyncio.get_running_loop()
            began, (commits_before, _) = loop.time(), await board_activity(url)
            before = {node.pid: cpu_of(node.pid) for node in nodes}
            server_before = server_cpu(postmaster)
            await asyncio.sleep(seconds)
            after = {node.pid: cpu_of(node.pid) for node in nodes}
            server_used = server_cpu(postmaster) - server_before
            await stop_nodes(nodes)
            window = loop.time() - began
        finally:
            await probe.close()
        await asyncio.sleep(0.5)  # the server processes of those connections add their counts as they end
        commits = (await board_activity(url))[0] - commits_before - 1
    return {
        "processes": processes,
        "seconds": seconds,
        "orchestrators": [
            {
                "role": "routing leader" if node.pid == leader else "member",
                "cpu_seconds": round(after[node.pid] - before[node.pid], 3),
                "cpu_percent": 100 * (after[node.pid] - before[node.pid]) / seconds,
            }
            for node in nodes
        ],
        "server_cpu_seconds": round(server_used, 3),
        "server_cpu_percent": 100 * server_used / seconds,
        "transactions_per_second": commits / window,
    }
