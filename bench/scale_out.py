"""Many orchestrator processes on one PostgreSQL board: throughput with 1, 2 and 4 processes, the
no-LLM pipeline on PostgreSQL next to SQLite, wake-up latency and idle CPU (issue 15).

    python bench/scale_out.py                    # every part, full sizes (about 15 minutes)
    python bench/scale_out.py --only scale --rounds 5
    python bench/scale_out.py --only latency --only idle

Needs no server set up: a throwaway PostgreSQL server (bench/pg_kit.py) is started, and each
measured run gets a fresh database. Orchestrators are separate processes (bench/board_node.py)
serving the board in watch mode; this process publishes and reads the board. Writes every run to
``scale_out.json`` and the medians to ``scale_out.md`` in ``--out`` (bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from board_probe import WrongResult
from pg_kit import throwaway_server
from scale_report import markdown
from scale_runs import idle_cpu, throughput, wake_up_latency

HERE = Path(__file__).resolve().parent
PARTS = ("scale", "pipeline", "latency", "idle")


def rotated(items: list[int], by: int) -> list[int]:
    """``items`` starting at a different one each round, so drift on a noisy machine hits all alike."""
    by %= len(items)
    return items[by:] + items[:by]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def scale_part(server: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for round_no in range(args.rounds):
        for processes in rotated(args.processes, round_no):
            result = await throughput(server, processes, args.seeds, args.latency, args.concurrency)
            result["round"] = round_no
            runs.append(result)
            say(f"scale round {round_no + 1}: {processes} process(es): {result['runs_per_second']:.1f} runs/s"
                f" ({result['board_seconds']:.1f} s)")  # fmt: skip
    return runs


def in_process_pipeline(seeds: int) -> list[dict[str, Any]]:
    """One round of bench/pipeline.py on SQLite and on PostgreSQL (function engines, one process)."""
    done = subprocess.run(
        [sys.executable, str(HERE / "pipeline.py"), "--seeds", str(seeds), "--repeat", "1",
         "--engine", "function", "--store", "sqlite,postgres", "--json"],
        capture_output=True, text=True, check=False, cwd=HERE.parent,
    )  # fmt: skip
    if done.returncode != 0:
        raise WrongResult(f"bench/pipeline.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


async def pipeline_part(server: Any, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    one_process: list[dict[str, Any]] = []
    processes: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        for run in await asyncio.to_thread(in_process_pipeline, args.pipeline_seeds):
            run["round"] = round_no
            one_process.append(run)
            say(f"pipeline round {round_no + 1}: {run['store']} in one process:"
                f" {run['artifacts_per_second']:.0f} artifacts/s")  # fmt: skip
        for count in rotated([1, 2], round_no):
            result = await throughput(server, count, args.pipeline_seeds, 0.0, None)
            result["round"] = round_no
            processes.append(result)
            say(f"pipeline round {round_no + 1}: {count} process(es) on PostgreSQL:"
                f" {result['runs_per_second']:.1f} runs/s")  # fmt: skip
    return {"one_process": one_process, "processes": processes}


async def latency_part(server: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for processes in (1, 2):
        result = await wake_up_latency(server, processes, args.publishes, (args.gap_min, args.gap_max))
        results.append(result)
        figures = result["publish_to_start"]
        say(f"latency, {processes} process(es): publish to start p50 {figures['p50_ms']:.1f} ms,"
            f" p99 {figures['p99_ms']:.1f} ms")  # fmt: skip
    return results


async def idle_part(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    result = await idle_cpu(server, 2, args.idle_seconds)
    say(f"idle: {[round(o['cpu_percent'], 2) for o in result['orchestrators']]} % CPU,"
        f" server {result['server_cpu_percent']:.2f} %")  # fmt: skip
    return result


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "only")},
    }
    with throwaway_server() as server:
        report["machine"]["postgresql"] = server.binaries.major
        parts = args.only or list(PARTS)
        if "scale" in parts:
            report["scale"] = await scale_part(server, args)
        if "pipeline" in parts:
            report["pipeline"] = await pipeline_part(server, args)
        if "latency" in parts:
            report["latency"] = await latency_part(server, args)
        if "idle" in parts:
            report["idle"] = await idle_part(server, args)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of scale and pipeline, fresh database each"
    )
    parser.add_argument("--processes", type=lambda s: [int(p) for p in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, default=1000, help="seeds of the scale part (2 runs each)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated model latency, seconds")
    parser.add_argument("--concurrency", type=int, default=8, help="max_concurrency of each process")
    parser.add_argument("--pipeline-seeds", type=int, default=2000, help="seeds of the no-LLM pipeline")
    parser.add_argument("--publishes", type=int, default=250, help="publishes of the latency part")
    parser.add_argument("--gap-min", type=float, default=0.02, help="seconds between publishes, at least")
    parser.add_argument("--gap-max", type=float, default=0.05, help="seconds between publishes, at most")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU is measured over this")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the results are written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(measure(args))
    except WrongResult as exc:
        print(f"scale_out: wrong result: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_out.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    (args.out / "scale_out.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
