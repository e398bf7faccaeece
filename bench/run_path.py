"""CPU time per agent run: ours in memory and on SQLite against the plain-asyncio floor.

    python bench/run_path.py                          # 10,000 seeds, 5 rounds, every variant
    python bench/run_path.py --seeds 2000 --rounds 3 --only floor --only memory
    python bench/run_path.py --out bench/results      # also write run_path.md
    python bench/run_path.py --baseline /tmp/before   # also the code checked out in /tmp/before

``--baseline DIR`` adds ``memory (baseline)`` and ``sqlite (baseline)``: the same children run with
``DIR`` first on ``PYTHONPATH`` (a ``git worktree add DIR <rev>`` of the code to compare with),
interleaved with ours in every round, and the table gains the change against them.

Each measured run is a fresh process (no warm caches, no heap left over), and the variants
alternate inside every round, the order rotating from round to round, so that drift on a noisy
machine hits all of them alike. Each child times only the work: from the first publish until the
flock is idle, as CPU seconds of its process (``time.process_time``) and wall seconds; start-up,
imports and building the flock are outside. The figures printed are medians of microseconds per
agent run (2 runs per seed) and each variant's ratio to the floor; the load average is printed
beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("floor", "memory", "sqlite")


def child(variant: str, seeds: int) -> dict[str, float]:
    """One measured run of ``variant`` in this process."""
    if variant == "floor":
        import floor

        return asyncio.run(floor.pipeline(seeds))
    return asyncio.run(_ours(variant, seeds))


async def _ours(variant: str, seeds: int) -> dict[str, float]:
    import pipeline
    from scenario_kit import seed

    with tempfile.TemporaryDirectory(prefix="flock-run-path-") as folder:
        board = os.path.join(folder, "board.db") if variant == "sqlite" else None
        flock = pipeline.build("function", seeds, board)
        items = [seed(i) for i in range(seeds)]
        cpu, wall = time.process_time(), time.perf_counter()
        async with flock.traced_run("bench"):
            await flock.publish_many(items)
            summary = await flock.run_until_idle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if not summary.ok or summary.agent_runs != 2 * seeds:
            raise SystemExit(f"run was not clean: {summary}")
        await flock.store.close()
    return {"runs": summary.agent_runs, "cpu_seconds": cpu, "seconds": wall}


BASELINE = " (baseline)"


def measure(
    variants: list[str], seeds: int, rounds: int, baseline: Path | None = None
) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of every variant in fresh processes, the order rotating each round
    (with ``baseline``, each of ours also runs on the code in that folder)."""
    if baseline is not None:
        variants = variants + [v + BASELINE for v in variants if v != "floor"]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for index in range(rounds):
        order = variants[index % len(variants) :] + variants[: index % len(variants)]
        for variant in order:
            env = dict(os.environ)
            if variant.endswith(BASELINE):
                assert baseline is not None
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(baseline), env.get("PYTHONPATH")]))
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant.removesuffix(BASELINE), "--seeds", str(seeds)],
                capture_output=True,
                text=True,
                check=False,
                cwd=HERE,
                env=env,
            )
            if out.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{out.stderr[-2000:]}")
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def report(results: dict[str, list[dict[str, float]]], seeds: int, load: str) -> str:
    """A markdown table of the medians, per agent run, with ratios to the floor."""
    medians = {
        v: (
            statistics.median(r["cpu_seconds"] / r["runs"] * 1e6 for r in runs),
            statistics.median(r["seconds"] / r["runs"] * 1e6 for r in runs),
        )
        for v, runs in results.items()
    }
    base = medians.get("floor")
    lines = [
        f"Two-stage pipeline, {seeds:,} seeds ({2 * seeds:,} agent runs), function engines, tracing off;"
        f" {len(next(iter(results.values())))} rounds in fresh processes; load before: {load}",
        "",
        "| variant | CPU µs per run | wall µs per run | CPU vs floor |",
        "|---|---:|---:|---:|",
    ]
    for variant, (cpu, wall) in medians.items():
        ratio = f"{cpu / base[0]:.2f}x" if base else "-"
        lines.append(f"| {variant} | {cpu:,.1f} | {wall:,.1f} | {ratio} |")
    for variant in ("memory", "sqlite"):
        if variant in medians and variant + BASELINE in medians:
            before, after = medians[variant + BASELINE][0], medians[variant][0]
            # Round by round: the two ran back to back, so a drift of the machine's speed
            # between rounds cancels out of their ratio.
            paired = [
                (new["cpu_seconds"] / new["runs"]) / (old["cpu_seconds"] / old["runs"])
                for new, old in zip(results[variant], results[variant + BASELINE], strict=True)
            ]
            lines.append("")
            lines.append(
                f"{variant}: {before:,.1f} -> {after:,.1f} CPU µs per run; paired by round,"
                f" {statistics.median(paired):.2f}x the baseline"
                f" (rounds {min(paired):.2f}x-{max(paired):.2f}x)"
            )
    if "memory" in medians and "sqlite" in medians:
        lines.append("")
        lines.append(f"SQLite vs in memory (CPU): {medians['sqlite'][0] / medians['memory'][0]:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=VARIANTS, help="a variant to run (repeatable)")
    parser.add_argument("--out", type=Path, help="a folder to write run_path.md and run_path.json into")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of other code (git worktree) to measure beside ours"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.seeds)))
        return 0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.baseline is not None and not (args.baseline / "flock_cli" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no flock_cli package in that folder")
    results = measure(list(args.only or VARIANTS), args.seeds, args.rounds, args.baseline)
    text = report(results, args.seeds, load)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run_path.md").write_text(f"# bench/run_path.py\n\n{text}\n")
        (args.out / "run_path.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
