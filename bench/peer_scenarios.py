"""The peer's side of the side-by-side benchmarks: PyPI flock-core 0.5.7 (import name ``flock``).

    <peer venv>/bin/python bench/peer_scenarios.py SCENARIO [--size N] [--latency SECONDS]

Runs under the peer's own virtual environment (bench/compare.py builds it from
bench/peer-requirements.txt), never ours: it needs only the standard library, Pydantic and
flock-core. Each scenario does exactly what bench/scenarios.md says, the contract our runner
(bench/ours_scenarios.py) follows too. Prints one JSON line ``{"system", "scenario", "size",
"metrics"}`` on stdout; a run whose result is wrong (missing runs or outputs, mismatched pairs)
exits 1 with a one-line message on stderr instead.

The peer's defaults that would distort the figures, and what this runner does about each:

- ``FLOCK_AUTO_TRACE`` (an OpenTelemetry span around every public method, DEBUG logging) is read
  once, when flock is imported. It is set to "false" before the import, except for pipeline_traced,
  which runs with none of the peer's tracing variables set, i.e. its default (on).
- ``publish()`` clears the terminal and prints a banner unless it is called with
  ``is_dashboard=True``. It copies that argument into the orchestrator's ``is_dashboard`` attribute
  on every call, so setting the attribute beforehand is not enough: every publish here passes it.
- An agent without utilities gets an ``OutputUtilityComponent`` that prints every result with Rich:
  every agent here gets a silent utility instead.
- ``max_agent_iterations`` defaults to 1000, a circuit breaker that silently drops work past 1000
  schedulings of one agent between idle points: it is raised to 10**9.
- ``run_until_idle()`` returns nothing and swallows agent exceptions: the engines count the runs,
  the utility records errors, and the board is counted after each run.
- Whatever the peer still writes to stdout goes to stderr (file descriptor 1 is pointed at 2); the
  JSON line goes to the original stdout.

Agents keep the peer's default ``max_concurrency`` (2). No scenario needs more: in fanout,
publish_latency and concurrency every agent runs once per round, so the limit never binds; in the
others the engines are pure CPU work on one event loop, so a higher limit would only let more runs
of one agent interleave at the board's awaits.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from pydantic import BaseModel, create_model
from scenario_kit import (
    L1,
    L2,
    L3,
    TYPES,
    Left,
    Mid,
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

TRACED_SCENARIO = "pipeline_traced"
# Environment variables that configure the peer's tracing; pipeline_traced runs with none of them.
TRACING_VARIABLES = (
    "FLOCK_AUTO_TRACE",
    "FLOCK_AUTO_WORKFLOW_TRACE",
    "FLOCK_TRACE_FILE",
    "FLOCK_TRACE_SERVICES",
    "FLOCK_TRACE_IGNORE",
    "FLOCK_TRACE_TTL_DAYS",
    "FLOCK_DISABLE_TELEMETRY_AUTOSETUP",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


# The peer, imported late ---------------------------------------------------------------------------


def configure_tracing(traced: bool) -> None:
    """Choose the peer's tracing before it is imported: it reads FLOCK_AUTO_TRACE at import time."""
    if traced:
        for name in TRACING_VARIABLES:
            os.environ.pop(name, None)  # the peer's defaults: auto-tracing on, no exporter
    else:
        os.environ["FLOCK_AUTO_TRACE"] = "false"


def divert_stdout() -> TextIO:
    """Point file descriptor 1 at stderr for the rest of the process; return a stream on the real stdout.

    Working on the descriptor catches everything the peer could print: Rich consoles, print(),
    logging handlers that hold on to sys.stdout.
    """
    sys.stdout.flush()
    real_stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return real_stdout


def load_peer() -> SimpleNamespace:
    """Import flock-core, register the types, and define the two components every agent gets."""
    from flock import Flock
    from flock.components import AgentComponent, EngineComponent
    from flock.registry import flock_type
    from flock.runtime import EvalResult
    from flock.store import SQLiteBlackboardStore
    from flock.subscription import BatchSpec, JoinSpec

    class FunctionEngine(EngineComponent):
        """A no-LLM engine: ``fn(inputs)``, plain or async, returns one model to publish, or None."""

        fn: Any
        tally: Any

        async def evaluate(self, agent, ctx, inputs):
            return await self._apply(agent, inputs)

        async def evaluate_batch(self, agent, ctx, inputs):  # what a BatchSpec subscription calls
            return await self._apply(agent, inputs)

        async def _apply(self, agent, inputs):
            output = self.fn(inputs)
            if inspect.isawaitable(output):
                output = await output
            self.tally.runs += 1
            if output is None:
                return EvalResult.empty()
            return EvalResult.from_object(output, agent=agent)

    class Silent(AgentComponent):
        """The agent's only utility, so the peer adds no printing one; it records errors."""

        tally: Any

        async def on_error(self, agent, ctx, error):
            self.tally.errors.append(f"{agent.name}: {type(error).__name__}: {error}")

    for model in TYPES:
        flock_type(model, name=model.__name__)
    return SimpleNamespace(
        Flock=Flock,
        FunctionEngine=FunctionEngine,
        Silent=Silent,
        flock_type=flock_type,
        JoinSpec=JoinSpec,
        BatchSpec=BatchSpec,
        SQLiteBlackboardStore=SQLiteBlackboardStore,
        version=metadata.version("flock-core"),
    )


class Tally:
    """What the agents did, counted here: the peer reports no runs and swallows agent errors."""

    def __init__(self) -> None:
        self.runs = 0
        self.errors: list[str] = []


class Bench:
    """One peer orchestrator, set up quiet, plus the counting that every scenario checks."""

    def __init__(self, peer: SimpleNamespace, store: Any = None) -> None:
        self.peer = peer
        self.flock = peer.Flock(store=store, max_agent_iterations=10**9)
        self.tally = Tally()

    def agent(
        self,
        name: str,
        consumes: list[type[BaseModel]],
        fn: Callable[[Any], Any],
        publishes: type[BaseModel] | None = None,
        **options: Any,
    ) -> None:
        """Add an agent that runs ``fn`` on what it consumes; ``options`` go to ``consumes()``."""
        builder = self.flock.agent(name).consumes(*consumes, **options)
        if publishes is not None:
            builder.publishes(publishes)
        builder.with_utilities(self.peer.Silent(tally=self.tally))
        builder.with_engines(self.peer.FunctionEngine(fn=fn, tally=self.tally))

    async def publish(self, item: BaseModel) -> None:
        await self.flock.publish(item, is_dashboard=True)

    async def publish_many(self, items: list[BaseModel]) -> None:
        await self.flock.publish_many(items, is_dashboard=True)

    async def idle(self) -> None:
        """Wait until no agent task is left (the peer polls its task set every 10 ms)."""
        await self.flock.run_until_idle()

    def check_runs(self, expected: int, where: str = "") -> None:
        """Fail unless exactly ``expected`` engine runs have completed so far, none of them failing."""
        prefix = f"{where}: " if where else ""
        check(not self.tally.errors, f"{prefix}agent errors: {self.tally.errors[:3]}")
        check(self.tally.runs == expected, f"{prefix}{self.tally.runs} runs, expected {expected}")

    async def board(self) -> Counter[str]:
        """How many artifacts of each type are on the board."""
        return Counter(artifact.type for artifact in await self.flock.store.list())


def flush_traces() -> None:
    """Flush the tracer, if there is one (the peer's default provider has no exporter to flush)."""
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


# Scenarios (bench/scenarios.md) ------------------------------------------------------------------------


async def pipeline(peer: SimpleNamespace, size: int, store: Any = None) -> dict[str, float]:
    """Seed -> stage_one -> Mid -> stage_two -> Out, all seeds published in one go, timed to idle."""
    bench = Bench(peer, store)
    bench.agent("stage_one", [Seed], lambda inputs: Mid(**inputs.artifacts[0].payload), publishes=Mid)
    bench.agent(
        "stage_two",
        [Mid],
        lambda inputs: Out(n=inputs.artifacts[0].payload["n"], summary="ok"),
        publishes=Out,
    )
    seeds = [seed(n) for n in range(size)]
    start = time.perf_counter()
    await bench.publish_many(seeds)
    await bench.idle()
    flush_traces()
    seconds = time.perf_counter() - start
    bench.check_runs(2 * size)
    board = await bench.board()
    artifacts = sum(board.values())
    check(board["Out"] == size, f"{board['Out']} Out artifacts, expected {size}")
    check(artifacts == 3 * size, f"{artifacts} artifacts, expected {3 * size}")
    return {"seconds": seconds, "artifacts": artifacts, "artifacts_per_second": artifacts / seconds}


async def pipeline_memory(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    return await pipeline(peer, size)


async def pipeline_traced(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    return await pipeline(peer, size)  # the same run: main() left the peer's tracing at its default


async def pipeline_durable(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """The pipeline on the peer's SQLiteBlackboardStore, in a fresh temporary folder."""
    folder = tempfile.mkdtemp(prefix="peer-bench-")
    store = peer.SQLiteBlackboardStore(str(Path(folder) / "board.db"))
    try:
        await store.ensure_schema()  # opening the board is not timed
        return await pipeline(peer, size, store)
    finally:
        await store.close()
        shutil.rmtree(folder)


async def fanout(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """One Seed to 100 agents per round, each round timed from the publish to idle."""
    bench = Bench(peer)
    for i in range(100):
        bench.agent(
            f"fan_{i}",
            [Seed],
            lambda inputs: Out(n=inputs.artifacts[0].payload["n"], summary="ok"),
            publishes=Out,
        )
    rounds: list[float] = []
    for n in range(size):
        start = time.perf_counter()
        await bench.publish(seed(n))
        await bench.idle()
        rounds.append((time.perf_counter() - start) * 1000)
        bench.check_runs(100 * (n + 1), f"round {n}")
    return {
        "round_ms_median": statistics.median(rounds),
        "round_ms_p99": percentile(rounds, 99),
        "runs": bench.tally.runs,
    }


def payload_of(inputs: Any, type_name: str) -> dict[str, Any]:
    """The payload of the first input artifact of that type."""
    return next(artifact.payload for artifact in inputs.artifacts if artifact.type == type_name)


async def pairs(peer: SimpleNamespace, size: int, join: bool) -> dict[str, float]:
    """Left/Right pairs into one agent: a plain AND gate, or a join on ``key``."""
    bench = Bench(peer)
    mismatched: list[tuple[int, int]] = []

    def pair(inputs: Any) -> Out:
        left, right = payload_of(inputs, "Left")["key"], payload_of(inputs, "Right")["key"]
        if left != right:
            mismatched.append((left, right))
        return Out(n=left, summary=f"{left}-{right}")

    items: list[BaseModel]
    if join:
        spec = peer.JoinSpec(by=lambda item: item.key, within=timedelta(hours=1))
        bench.agent("joiner", [Left, Right], pair, publishes=Out, join=spec)
        items = [Left(key=k) for k in range(size)]
        items += [Right(key=k) for k in reversed(range(size))]
    else:
        bench.agent("gate", [Left, Right], pair, publishes=Out)
        items = [item for k in range(size) for item in (Left(key=k), Right(key=k))]
    start = time.perf_counter()
    await bench.publish_many(items)
    await bench.idle()
    seconds = time.perf_counter() - start
    bench.check_runs(size)
    board = await bench.board()
    check(board["Out"] == size, f"{board['Out']} Out artifacts, expected {size}")
    check(not (join and mismatched), f"joined pairs with different keys: {mismatched[:3]}")
    return {"seconds": seconds, "pairs_per_second": size / seconds}


async def and_gate(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    return await pairs(peer, size, join=False)


async def join(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    return await pairs(peer, size, join=True)


async def batch(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """Seeds in batches of 100 (the timeout too long to fire), one Out per batch."""
    bench = Bench(peer)
    sizes: list[int] = []

    def count(inputs: Any) -> Out:
        sizes.append(len(inputs.artifacts))
        return Out(n=len(inputs.artifacts), summary="batch")

    spec = peer.BatchSpec(size=100, timeout=timedelta(hours=1))
    bench.agent("batcher", [Seed], count, publishes=Out, batch=spec)
    seeds = [seed(n) for n in range(size)]
    start = time.perf_counter()
    await bench.publish_many(seeds)
    await bench.idle()
    seconds = time.perf_counter() - start
    batches = size // 100
    bench.check_runs(batches)
    check(sizes == [100] * batches, f"batches of {sorted(set(sizes))}, {len(sizes)} runs")
    board = await bench.board()
    check(board["Out"] == batches, f"{board['Out']} Out artifacts, expected {batches}")
    return {"seconds": seconds, "items_per_second": size / seconds}


async def publish_latency(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """1000 silent agents over 50 types; each publish() timed alone, idle awaited untimed."""
    bench = Bench(peer)
    types = [create_model(f"T{i}", n=(int, ...)) for i in range(50)]
    for model in types:
        peer.flock_type(model, name=model.__name__)
    for i in range(1000):
        bench.agent(f"a{i}", [types[i % 50]], lambda inputs: None)
    micros: list[float] = []
    for k in range(size):
        item = types[k % 50](n=k)
        start = time.perf_counter()
        await bench.flock.publish(item, is_dashboard=True)
        micros.append((time.perf_counter() - start) * 1e6)
        await bench.idle()
        bench.check_runs(20 * (k + 1), f"publish {k}")
    return {
        "p50_us": statistics.median(micros),
        "p99_us": percentile(micros, 99),
        "mean_us": statistics.fmean(micros),
    }


async def concurrency(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """Three levels of agents that each sleep ``latency`` (a model call); makespan vs 3 x latency."""
    bench = Bench(peer)

    def slow(model: type[BaseModel], lane: int) -> Callable[[Any], Awaitable[BaseModel]]:
        async def engine(inputs: Any) -> BaseModel:
            await asyncio.sleep(latency)  # a simulated model call
            return model(lane=lane)

        return engine

    def lane_is(lane: int) -> Callable[[Any], bool]:
        return lambda item: item.lane == lane

    first = (size + 2) // 3
    rest = (size - first) // 2
    for i in range(first):
        bench.agent(f"l1_{i}", [Seed], slow(L1, i), publishes=L1)
    for j in range(rest):
        bench.agent(f"l2_{j}", [L1], slow(L2, j), publishes=L2, where=lane_is(j))
        bench.agent(f"l3_{j}", [L2], slow(L3, j), publishes=L3, where=lane_is(j))
    start = time.perf_counter()
    await bench.publish(seed(0))
    await bench.idle()
    makespan = time.perf_counter() - start
    bench.check_runs(first + 2 * rest)
    board = await bench.board()
    check(board["L3"] == rest, f"{board['L3']} L3 artifacts, expected {rest}")
    critical = 3 * latency
    return {"makespan_s": makespan, "critical_path_s": critical, "efficiency": makespan / critical}


async def memory(peer: SimpleNamespace, size: int, latency: float) -> dict[str, float]:
    """Resident memory per artifact on the in-memory board, no agents."""
    bench = Bench(peer)
    check(len(json.dumps(doc(12345).model_dump())) == 300, "the payload is not 300 bytes")
    docs = [doc(n) for n in range(size)]
    gc.collect()
    before = rss_bytes()
    for start in range(0, size, 1000):
        await bench.publish_many(docs[start : start + 1000])
    del docs
    gc.collect()
    after = rss_bytes()
    stored = sum((await bench.board()).values())
    check(stored == size, f"{stored} artifacts stored, expected {size}")
    return {
        "bytes_per_artifact": (after - before) / size,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
    }


Scenario = Callable[[SimpleNamespace, int, float], Awaitable[dict[str, float]]]
SCENARIOS: dict[str, Scenario] = {
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
    configure_tracing(scenario == TRACED_SCENARIO)
    stdout = divert_stdout()
    try:
        peer = load_peer()
        metrics = asyncio.run(SCENARIOS[scenario](peer, size, latency))
    except WrongResult as exc:
        print(f"{scenario}: wrong result: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # With tracing on, the peer replaces sys.excepthook with one that prints nothing.
        traceback.print_exc()
        print(f"{scenario}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()  # anything the peer left buffered goes to stderr, not after the JSON line
    result = {"system": f"flock-core {peer.version}", "scenario": scenario, "size": size}
    print(json.dumps({**result, "metrics": metrics}), file=stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
