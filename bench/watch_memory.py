"""Memory of a long-lived ``--watch`` server: does it level off, and where does it grow?

A flock watches a SQLite board (as ``flock run RECIPE --watch`` does) while a publisher flock in
the same process appends independent inputs in rounds; after each round the server has run
every input through a two-agent pipeline. Resident memory is read after a full collection at
the end of each round. The first rounds warm caches (SQLite's page cache, interned strings,
DSPy-free code paths), so growth is measured as the slope over the second half of the rounds.

    python bench/watch_memory.py [--rounds 20] [--per-round 500] [--traces] [--top 10]

``--top N`` compares tracemalloc snapshots of the middle and the last round and prints the N
allocation sites that grew the most (slower; for finding a leak, not for the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flock_cli import Flock, FunctionEngine, flock_type
from flock_cli.store import SQLiteBlackboardStore


@flock_type(name="bench.Request")
class Request(BaseModel):
    n: int
    text: str


@flock_type(name="bench.Draft")
class Draft(BaseModel):
    n: int
    text: str


@flock_type(name="bench.Answer")
class Answer(BaseModel):
    n: int
    text: str


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def build(board: Path, traces: Path | bool, role: str = "orchestrator") -> Flock:
    flock = Flock(store=SQLiteBlackboardStore(board), traces=traces, role=role)  # type: ignore[arg-type]
    flock.agent("drafter").consumes(Request).publishes(Draft).with_engines(
        FunctionEngine(lambda i: Draft(n=i.first_as(Request).n, text="draft " * 10))
    )
    flock.agent("answerer").consumes(Draft).publishes(Answer).with_engines(
        FunctionEngine(lambda i: Answer(n=i.first_as(Draft).n, text="answer " * 10))
    )
    return flock


def answered(board: sqlite3.Connection) -> int:
    # A plain count: the store's query pages after filtering by visibility, which reads every row.
    return int(board.execute("SELECT count(*) FROM artifacts WHERE type = 'bench.Answer'").fetchone()[0])


async def main(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp())
    board = folder / "board.db"
    traces: Path | bool = folder / "traces.duckdb" if args.traces else False
    server = build(board, traces)
    publisher = build(board, False, role="publisher")
    stop = asyncio.Event()
    watching = asyncio.ensure_future(server.watch(poll_interval=0.05, stop=stop))
    probe = sqlite3.connect(board)
    samples: list[int] = []
    snapshots: list[tracemalloc.Snapshot] = []
    if args.top:
        tracemalloc.start(25)
    started = time.perf_counter()
    for round_no in range(args.rounds):
        base = round_no * args.per_round
        await publisher.publish_many([Request(n=base + k, text="hello " * 10) for k in range(args.per_round)])
        target = base + args.per_round
        while answered(probe) < target:
            await asyncio.sleep(0.05)
        gc.collect()
        samples.append(rss_kb())
        if args.top and round_no in (args.rounds // 2, args.rounds - 1):
            snapshots.append(tracemalloc.take_snapshot())
    seconds = time.perf_counter() - started
    stop.set()
    summary = await watching
    await server.shutdown()
    for flock in (server, publisher):
        await flock.store.close()
    probe.close()
    runs_per_round = 2 * args.per_round
    half = len(samples) // 2
    slope = (samples[-1] - samples[half]) / ((len(samples) - 1 - half) * runs_per_round)
    result = {
        "rounds": args.rounds,
        "runs": summary.agent_runs,
        "traces": bool(args.traces),
        "seconds": round(seconds, 1),
        "rss_kb": samples,
        "kb_per_run_second_half": round(slope, 4),
        "ok": summary.ok,
    }
    if len(snapshots) == 2:
        stats = snapshots[1].compare_to(snapshots[0], "traceback")
        result["top_growth"] = [
            f"{s.size_diff / 1024:.1f} KiB {s.count_diff:+d} blocks at "
            + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in list(s.traceback)[-4:])
            for s in stats[: args.top]
        ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--traces", action="store_true", help="write traces, as flock run does by default")
    parser.add_argument("--top", type=int, default=0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
