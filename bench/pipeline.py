"""Two-stage pipeline benchmark: N seeds -> stage one -> stage two.

    python bench/pipeline.py --seeds 10000 --repeat 3 [--engine function] [--store sqlite] [--traces both]
    python bench/pipeline.py --seeds 2000 --repeat 3 --engine function --store sqlite,postgres

Prints artifacts/second (every artifact published, seeds included, divided by the wall time from
the first publish to idle) and writes a JSON line per run with --json. With tracing on, the time
also includes writing the last spans to the trace store (the tracer's close). ``--store`` takes
memory, sqlite, postgres (a fresh database of a throwaway server, bench/pg_kit.py, for each run),
a comma-separated list of them (alternated; the ratios to the first are printed), or ``both``
(memory,sqlite).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from scenario_kit import Mid, Out, Seed, seed

from flock_cli import Flock, FunctionEngine, TestEngine, flock_type
from flock_cli.store import BlackboardStore, SQLiteBlackboardStore

# The contract's types (bench/scenarios.md), shared with the side-by-side runners.
for _model in (Seed, Mid, Out):
    flock_type(name=_model.__name__)(_model)


STORES = ("memory", "sqlite", "postgres")


def open_board(board: str | None) -> BlackboardStore | None:
    """A PostgreSQL board for a postgresql:// URL, a SQLite board for a path, else None (in memory)."""
    if board is None:
        return None
    if board.startswith("postgresql://"):
        from flock_cli.store.postgres import PostgresBlackboardStore

        return PostgresBlackboardStore(board)
    return SQLiteBlackboardStore(board)


def build(engine: str, seeds: int, board: str | None = None, traces: str | None = None) -> Flock:
    """The pipeline with TestEngine (schema sampling) or FunctionEngine (a trivial transform), in
    memory or on the board ``board`` (a SQLite file's path or a postgresql:// URL)."""
    store = open_board(board)
    flock = Flock(max_agent_iterations=seeds + 1, store=store, traces=traces or False)
    if engine == "test":
        first, second = TestEngine(), TestEngine()
    else:
        first = FunctionEngine(lambda i: Mid(**i.artifacts[0].payload))
        second = FunctionEngine(lambda i: Out(n=i.artifacts[0].payload["n"], summary="ok"))
    flock.agent("stage_one").consumes(Seed).publishes(Mid).with_engines(first)
    flock.agent("stage_two").consumes(Mid).publishes(Out).with_engines(second)
    return flock


async def one_run(
    engine: str, seeds: int, store: str = "memory", traced: bool = False, server: Any = None
) -> dict[str, float]:
    """One measured run; ``server`` (a bench/pg_kit.py server) gives a postgres run a fresh database."""
    with contextlib.ExitStack() as stack:
        board = None
        if store == "postgres":
            from pg_kit import fresh_database

            board = stack.enter_context(fresh_database(server))
        return await _measured(engine, seeds, store, traced, board)


async def _measured(engine: str, seeds: int, store: str, traced: bool, board: str | None) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="flock-bench-")
    if store == "sqlite":
        board = os.path.join(folder, "board.db")
    flock = build(engine, seeds, board, os.path.join(folder, "traces.duckdb") if traced else None)
    items = [seed(i) for i in range(seeds)]
    if store == "postgres":
        await flock.store.ensure_ready()  # type: ignore[attr-defined]  # the schema, before the clock starts
    start = time.perf_counter()
    async with flock.traced_run("bench"):
        await flock.publish_many(items)
        summary = await flock.run_until_idle()
    await asyncio.to_thread(flock.tracer.close)
    elapsed = time.perf_counter() - start
    stored = elapsed
    if traced:  # what the flock handed off at its end is written after it: time that too
        stored = _stored(os.path.join(folder, "traces.duckdb"), start)
    if not summary.ok or summary.agent_runs != 2 * seeds:
        raise SystemExit(f"benchmark run was not clean: {summary}")
    if flock.tracer.problems:
        raise SystemExit(f"tracing reported problems: {flock.tracer.problems}")
    await flock.store.close()
    shutil.rmtree(folder)
    return {
        "seconds": elapsed,
        "seconds_to_store": stored,
        "artifacts": summary.artifacts_published,
        "artifacts_per_second": summary.artifacts_published / elapsed,
    }


def _stored(path: str, start: float) -> float:
    """Seconds from ``start`` until the trace store at ``path`` holds everything: its spool empty
    and its writer gone (a read-only open succeeds)."""
    from pathlib import Path

    from flock_cli.tracing import spool
    from flock_cli.tracing.duck import connect

    while spool.count_waiting(Path(path)):
        time.sleep(0.01)
    connect(Path(path), read_only=True, wait=60).close()
    return time.perf_counter() - start


def parse_stores(text: str) -> list[str]:
    """``--store``'s value: one store, several separated by commas, or ``both``."""
    stores = ["memory", "sqlite"] if text == "both" else [part.strip() for part in text.split(",")]
    unknown = [store for store in stores if store not in STORES]
    if unknown or len(set(stores)) != len(stores):
        raise argparse.ArgumentTypeError(f"expected {', '.join(STORES)} or both, each once; got {text!r}")
    return stores


@contextlib.contextmanager
def server_if(needed: bool) -> Iterator[Any]:
    """A throwaway PostgreSQL server (bench/pg_kit.py) when ``needed``, else None."""
    if not needed:
        yield None
        return
    from pg_kit import throwaway_server

    with throwaway_server() as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", choices=["test", "function"], default="test")
    parser.add_argument(
        "--store",
        type=parse_stores,
        default=["memory"],
        help="memory, sqlite or postgres, or several separated by commas (alternated, with the ratio of"
        " each median to the first's); 'both' is memory,sqlite",
    )
    parser.add_argument(
        "--traces",
        choices=["off", "on", "both"],
        default="off",
        help="trace into a DuckDB file; 'both' alternates untraced and traced runs and prints the"
        " overhead ratio (the target is at most 1.5x)",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="keep N CPU-bound processes spinning while the runs go (1 on a 2-core machine: the other"
        " core busy, as on a shared server); the pairs' spread of the overhead ratio is printed",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = parser.parse_args(argv)
    with busy_cores(args.busy):
        return measure(args)


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes that spin on a core each until the block ends."""
    import subprocess
    import sys

    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def measure(args: argparse.Namespace) -> int:
    """Run the variants ``args`` asks for, alternating, and print the figures."""
    stores: list[str] = args.store
    tracings = {"off": [False], "on": [True], "both": [False, True]}[args.traces]
    variants = [(store, traced) for store in stores for traced in tracings]
    rates: dict[tuple[str, bool], list[float]] = {variant: [] for variant in variants}
    stored: dict[str, list[float]] = {store: [] for store in stores}  # traced: seconds until stored
    with server_if("postgres" in stores) as server:
        for _ in range(args.repeat):
            for store, traced in variants:  # alternate, so drift on a noisy machine hits all alike
                result = asyncio.run(one_run(args.engine, args.seeds, store, traced, server))
                rates[store, traced].append(result["artifacts_per_second"])
                if traced:
                    stored[store].append(result["seconds_to_store"] / result["seconds"])
                if args.json:
                    print(json.dumps({"engine": args.engine, "store": store, "traced": traced,
                                      "seeds": args.seeds, **result}), flush=True)  # fmt: skip
    for (store, traced), values in rates.items():
        print(
            f"two-stage pipeline, {args.seeds} seeds, {args.engine} engines, {store} store,"
            f" tracing {'on' if traced else 'off'}:"
            f" median {statistics.median(values):,.0f} artifacts/s over {args.repeat} runs"
        )
    median = {variant: statistics.median(values) for variant, values in rates.items()}
    first = stores[0]
    for other in stores[1:]:
        ratio = median[first, tracings[0]] / median[other, tracings[0]]
        if (first, other) == ("memory", "sqlite"):
            print(f"durable pipeline is {ratio:.1f}x slower than in memory")
        else:
            print(
                f"{other} board: {ratio:.2f}x slower than {first} (the {first} median / the {other} median)"
            )
    if len(tracings) == 2:
        for store in stores:
            ratio = median[store, False] / median[store, True]
            busy = f", {args.busy} core(s) kept busy" if args.busy else ""
            print(f"tracing overhead, {store} store{busy}: {ratio:.2f}x the untraced time (target: <= 1.5x)")
            pairs = sorted(off / on for off, on in zip(rates[store, False], rates[store, True], strict=True))
            listed = ", ".join(f"{p:.2f}x" for p in pairs)
            print(f"  run pairs: {listed} (spread {pairs[0]:.2f}x-{pairs[-1]:.2f}x)")
            later = statistics.median(stored[store])
            print(f"  every trace in the store: {later:.2f}x the traced run's time after its start (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
