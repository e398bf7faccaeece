"""Flock-Flow's side of the side-by-side benchmarks (bench/compare.py runs it).

    python bench/ours_scenarios.py SCENARIO [--size N] [--latency SECONDS]

Prints one JSON line ``{"system", "scenario", "size", "metrics"}`` on stdout; a run whose result is
wrong (missing runs or outputs, mismatched pairs) exits 1 with a one-line message instead. Each
scenario does exactly what bench/scenarios.md says, the contract the peer's runner
(bench/peer_scenarios.py) follows too.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline
from scenario_kit import (
    L1,
    L2,
    L3,
    Doc,
    Left,
    Out,
    Right,
    Seed,
    WrongResult,
    check,
    doc,
    parse_args,
    percentile,
    rss_bytes,
    seed,
)

from flock_cli import BatchSpec, Flock, FunctionEngine, JoinSpec, flock_type
from flock_cli.core.components import EvalInputs

SYSTEM = "flock-flow"


# bench/pipeline.py registers Seed, Mid and Out; the contract's other types are registered here.
for _model in (Left, Right, L1, L2, L3, Doc):
    flock_type(name=_model.__name__)(_model)


def quiet_flock(**options: Any) -> Flock:
    """A flock with tracing off and a breaker that never trips on benchmark volumes."""
    return Flock(traces=False, max_agent_iterations=10**9, **options)


async def pipeline_run(size: int, store: str, traced: bool) -> dict[str, float]:
    result = await pipeline.one_run("function", size, store, traced)
    check(result["artifacts"] == 3 * size, f"{result['artifacts']} artifacts, expected {3 * size}")
    return result


async def pipeline_memory(size: int, latency: float) -> dict[str, float]:
    return await pipeline_run(size, "memory", traced=False)


async def pipeline_traced(size: int, latency: float) -> dict[str, float]:
    return await pipeline_run(size, "memory", traced=True)


async def pipeline_durable(size: int, latency: float) -> dict[str, float]:
    return await pipeline_run(size, "sqlite", traced=False)


async def fanout(size: int, latency: float) -> dict[str, float]:
    flock = quiet_flock()
    for i in range(100):
        engine = FunctionEngine(lambda inputs: Out(n=inputs.artifacts[0].payload["n"], summary="ok"))
        flock.agent(f"fan_{i}").consumes(Seed).publishes(Out).with_engines(engine)
    rounds: list[float] = []
    runs = 0
    for n in range(size):
        start = time.perf_counter()
        await flock.publish(seed(n))
        summary = await flock.run_until_idle()
        rounds.append((time.perf_counter() - start) * 1000)
        check(summary.ok and summary.agent_runs == 100, f"round {n}: {summary.agent_runs} runs, expected 100")
        runs += summary.agent_runs
    return {
        "round_ms_median": statistics.median(rounds),
        "round_ms_p99": percentile(rounds, 99),
        "runs": runs,
    }


async def pairs(size: int, join: bool) -> dict[str, float]:
    flock = quiet_flock()
    mismatched: list[tuple[int, int]] = []

    def pair(inputs: EvalInputs) -> Out:
        left = inputs.first_as(Left)
        right = inputs.first_as(Right)
        if left.key != right.key:
            mismatched.append((left.key, right.key))
        return Out(n=left.key, summary=f"{left.key}-{right.key}")

    # The contract's AND gate pairs first in, first out across publishes (the peer's only kind);
    # ours gathers per correlation id unless told so.
    spec = JoinSpec(by=lambda item: item.key, window=3600) if join else JoinSpec(by="arrival")
    name = "joiner" if join else "gate"
    flock.agent(name).consumes(Left, Right, join=spec).publishes(Out).with_engines(FunctionEngine(pair))
    if join:
        items: list[BaseModel] = [Left(key=k) for k in range(size)]
        items += [Right(key=k) for k in reversed(range(size))]
    else:
        items = [item for k in range(size) for item in (Left(key=k), Right(key=k))]
    start = time.perf_counter()
    await flock.publish_many(items)
    summary = await flock.run_until_idle()
    seconds = time.perf_counter() - start
    check(summary.ok and summary.agent_runs == size, f"{summary.agent_runs} runs, expected {size}")
    check(not (join and mismatched), f"joined pairs with different keys: {mismatched[:3]}")
    return {"seconds": seconds, "pairs_per_second": size / seconds}


async def and_gate(size: int, latency: float) -> dict[str, float]:
    return await pairs(size, join=False)


async def join(size: int, latency: float) -> dict[str, float]:
    return await pairs(size, join=True)


async def batch(size: int, latency: float) -> dict[str, float]:
    flock = quiet_flock()
    sizes: list[int] = []

    def count(inputs: EvalInputs) -> Out:
        sizes.append(len(inputs.artifacts))
        return Out(n=len(inputs.artifacts), summary="batch")

    spec = BatchSpec(size=100, within=3600)
    flock.agent("batcher").consumes(Seed, batch=spec).publishes(Out).with_engines(FunctionEngine(count))
    items = [seed(n) for n in range(size)]
    start = time.perf_counter()
    await flock.publish_many(items)
    summary = await flock.run_until_idle()
    seconds = time.perf_counter() - start
    check(
        summary.ok and sizes == [100] * (size // 100), f"batches of {sorted(set(sizes))}, {len(sizes)} runs"
    )
    return {"seconds": seconds, "items_per_second": size / seconds}


async def publish_latency(size: int, latency: float) -> dict[str, float]:
    flock = quiet_flock()
    types = [flock_type(name=f"T{i}")(create_model(f"T{i}", n=(int, ...))) for i in range(50)]
    for i in range(1000):
        flock.agent(f"a{i}").consumes(types[i % 50]).with_engines(FunctionEngine(lambda inputs: None))
    micros: list[float] = []
    for k in range(size):
        item = types[k % 50](n=k)
        start = time.perf_counter()
        await flock.publish(item)
        micros.append((time.perf_counter() - start) * 1e6)
        summary = await flock.run_until_idle()
        check(summary.ok and summary.agent_runs == 20, f"publish {k}: {summary.agent_runs} runs, expected 20")
    return {
        "p50_us": statistics.median(micros),
        "p99_us": percentile(micros, 99),
        "mean_us": statistics.fmean(micros),
    }


async def concurrency(size: int, latency: float) -> dict[str, float]:
    flock = quiet_flock()

    def slow(make: Callable[[int], BaseModel], lane: int) -> Callable[[EvalInputs], Awaitable[BaseModel]]:
        async def engine(inputs: EvalInputs) -> BaseModel:
            await asyncio.sleep(latency)  # a simulated model call
            return make(lane)

        return engine

    def lane_is(j: int) -> Callable[[Any], bool]:
        return lambda item: item.lane == j

    first = (size + 2) // 3
    rest = (size - first) // 2
    for i in range(first):
        engine = FunctionEngine(slow(lambda lane: L1(lane=lane), i))
        flock.agent(f"l1_{i}").consumes(Seed).publishes(L1).with_engines(engine)
    for j in range(rest):
        engine = FunctionEngine(slow(lambda lane: L2(lane=lane), j))
        flock.agent(f"l2_{j}").consumes(L1, where=lane_is(j)).publishes(L2).with_engines(engine)
        engine = FunctionEngine(slow(lambda lane: L3(lane=lane), j))
        flock.agent(f"l3_{j}").consumes(L2, where=lane_is(j)).publishes(L3).with_engines(engine)
    start = time.perf_counter()
    await flock.publish(seed(0))
    summary = await flock.run_until_idle()
    makespan = time.perf_counter() - start
    agents = first + 2 * rest
    check(summary.ok and summary.agent_runs == agents, f"{summary.agent_runs} runs, expected {agents}")
    check(summary.runs_by_agent.get(f"l3_{rest - 1}") == 1, "the last level did not run")
    critical = 3 * latency
    return {"makespan_s": makespan, "critical_path_s": critical, "efficiency": makespan / critical}


async def memory(size: int, latency: float) -> dict[str, float]:
    flock = quiet_flock()
    check(len(json.dumps(doc(12345).model_dump())) == 300, "the payload is not 300 bytes")
    docs = [doc(n) for n in range(size)]
    gc.collect()
    before = rss_bytes()
    for start in range(0, size, 1000):
        await flock.publish_many(docs[start : start + 1000])
    del docs
    gc.collect()
    after = rss_bytes()
    stored = len(await flock.store.list())
    check(stored == size, f"{stored} artifacts stored, expected {size}")
    return {
        "bytes_per_artifact": (after - before) / size,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
    }


SCENARIOS: dict[str, Callable[[int, float], Awaitable[dict[str, float]]]] = {
    "pipeline_memory": pipeline_memory,
    "pipeline_traced": pipeline_traced,
    "pipeline_durable": pipeline_durable,
    "fanout": fanout,
    "and_gate": and_gate,
    "join": join,
    "batch": batch,
    "publish_latency": publish_latency,
    "concurrency": concurrency,
    "memory": memory,
}


def main(argv: list[str] | None = None) -> int:
    scenario, size, latency = parse_args(__doc__.splitlines()[0], argv)
    try:
        metrics = asyncio.run(SCENARIOS[scenario](size, latency))
    except WrongResult as exc:
        print(f"{scenario}: wrong result: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"system": SYSTEM, "scenario": scenario, "size": size, "metrics": metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
