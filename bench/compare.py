"""Flock-Flow side by side with PyPI flock-core 0.5.7, the closest existing implementation.

    python bench/compare.py                     # every scenario, full sizes, 3 alternating runs each
    python bench/compare.py --scale tiny        # tiny sizes: checks the harness, measures nothing
    python bench/compare.py --only pipeline_memory --only memory --repeat 5

Installs the peer into its own virtual environment (bench/.peer-venv, or --peer-venv) when it is
missing, from the pins in bench/peer-requirements.txt (plain ``pip install flock-core`` does not
resolve). Each scenario (bench/scenarios.md) runs in fresh processes, ours and the peer's in turn,
the order swapped every round so drift on a noisy machine hits both alike. Prints and writes the
medians, the ratio ours/peer and the targets to bench/results/side_by_side.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scenario_kit import SIZES  # noqa: E402 - the scenarios' sizes, shared with both runners

ROOT = BENCH.parent
PEER_VERSION = "0.5.7"


@dataclass(frozen=True)
class Metric:
    """One figure of one scenario, and which way is better."""

    scenario: str
    key: str
    label: str
    unit: str
    higher_is_better: bool


METRICS = [
    Metric(
        "pipeline_memory",
        "artifacts_per_second",
        "two-stage pipeline, in memory, tracing off",
        "artifacts/s",
        True,
    ),
    Metric(
        "pipeline_traced", "artifacts_per_second", "two-stage pipeline, default tracing", "artifacts/s", True
    ),
    Metric(
        "pipeline_durable", "artifacts_per_second", "two-stage pipeline, durable store", "artifacts/s", True
    ),
    Metric("fanout", "round_ms_median", "fan-out: 1 artifact to 100 agents", "ms", False),
    Metric("and_gate", "pairs_per_second", "fan-in: AND gate", "pairs/s", True),
    Metric("join", "pairs_per_second", "fan-in: join by key", "pairs/s", True),
    Metric("batch", "items_per_second", "batches of 100", "items/s", True),
    Metric("publish_latency", "p50_us", "publish latency p50, 1,000 agents / 50 types", "µs", False),
    Metric("publish_latency", "p99_us", "publish latency p99, 1,000 agents / 50 types", "µs", False),
    Metric("concurrency", "efficiency", "concurrency: makespan / critical path", "x", False),
    Metric("memory", "bytes_per_artifact", "memory per stored artifact (300-byte payload)", "bytes", False),
    Metric("cold_cli", "seconds", "cold start: CLI --help", "s", False),
    Metric("cold_import", "seconds", "cold start: import the library", "s", False),
]
SCENARIOS = list(dict.fromkeys(m.scenario for m in METRICS))
TINY = {
    "pipeline_memory": 50,
    "pipeline_traced": 50,
    "pipeline_durable": 50,
    "fanout": 2,
    "and_gate": 20,
    "join": 20,
    "batch": 200,
    "publish_latency": 20,
    "concurrency": 100,
    "memory": 1000,
}


@dataclass
class System:
    """One side: its Python, its scenario runner and its command line."""

    name: str
    python: Path
    runner: Path
    cli: list[str]
    library_import: str
    env: dict[str, str] = field(default_factory=dict)

    def scenario(self, scenario: str, size: int | None, latency: float) -> dict[str, float]:
        command = [str(self.python), str(self.runner), scenario, "--latency", str(latency)]
        if size:
            command += ["--size", str(size)]
        # stderr goes to a file: the peer's default tracing logs about 135 MB per 10,000 seeds.
        with tempfile.TemporaryFile() as log:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=ROOT,
                env={**os.environ, **self.env},
                timeout=3600,
            )
            if done.returncode != 0:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 2000))
                tail = log.read().decode(errors="replace").strip()
                raise SystemExit(f"{self.name} {scenario} failed: {tail}")
        metrics: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]
        return metrics

    def cold(self, scenario: str) -> dict[str, float]:
        command = self.cli if scenario == "cold_cli" else [str(self.python), "-c", self.library_import]
        # As a user meets it: with the bytecode caches that the untimed first run writes (a
        # PYTHONDONTWRITEBYTECODE in the environment, as on some CI machines, would time compiling
        # every module from source on every start: 0.65 s for ours, 7.5 s for the peer).
        env = {**os.environ, **self.env}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
        return {"seconds": time.perf_counter() - start}

    def run(self, scenario: str, size: int | None, latency: float) -> dict[str, float]:
        if scenario.startswith("cold_"):
            return self.cold(scenario)
        return self.scenario(scenario, size, latency)


def ours() -> System:
    bin_dir = Path(sys.executable).parent
    return System(
        name="flock-flow",
        python=Path(sys.executable),
        runner=BENCH / "ours_scenarios.py",
        cli=[str(bin_dir / "flock"), "--help"],
        library_import="from flock_cli import Flock",
    )


def peer(venv: Path) -> System:
    return System(
        name=f"flock-core {PEER_VERSION}",
        python=venv / "bin" / "python",
        runner=BENCH / "peer_scenarios.py",
        cli=[str(venv / "bin" / "flock-flow"), "--help"],
        library_import="from flock import Flock",
    )


def ensure_peer(venv: Path) -> None:
    """Create the peer's virtual environment unless it already imports flock-core at our version."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('flock-core'))"
    if python.exists():
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == PEER_VERSION:
            return
    print(f"installing flock-core {PEER_VERSION} into {venv} (about a minute)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pins = BENCH / "peer-requirements.txt"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(pins)],
        check=True,
    )


def measure(
    systems: list[System],
    scenarios: list[str],
    repeat: int,
    sizes: dict[str, int],
    latency: float,
    cold_rounds: int = 5,
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Every scenario ``repeat`` times per system, alternating which system goes first."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for scenario in scenarios:
        results[scenario] = {system.name: [] for system in systems}
        if scenario.startswith("cold_"):
            for system in systems:  # one untimed run warms the OS file cache for both alike
                system.run(scenario, None, latency)
        rounds = max(repeat, cold_rounds) if scenario.startswith("cold_") else repeat
        for round_no in range(rounds):
            order = systems if round_no % 2 == 0 else list(reversed(systems))
            for system in order:
                metrics = system.run(scenario, sizes.get(scenario), latency)
                results[scenario][system.name].append(metrics)
                print(f"  {scenario:<17} {system.name:<18} {json.dumps(metrics)}", file=sys.stderr)
    return results


def summarise(
    raw: dict[str, dict[str, list[dict[str, float]]]], systems: list[System]
) -> list[dict[str, Any]]:
    """One row per metric: each system's median and the ratio ours/peer."""
    rows = []
    for metric in METRICS:
        if metric.scenario not in raw:
            continue
        row: dict[str, Any] = {
            "scenario": metric.scenario,
            "metric": metric.key,
            "label": metric.label,
            "unit": metric.unit,
            "higher_is_better": metric.higher_is_better,
        }
        for system in systems:
            values = [run[metric.key] for run in raw[metric.scenario][system.name]]
            row[system.name] = {"median": statistics.median(values), "runs": values}
        if len(systems) == 2:
            row["ratio"] = row[systems[0].name]["median"] / row[systems[1].name]["median"]
        rows.append(row)
    return rows


def targets(rows: list[dict[str, Any]], ours_name: str) -> list[dict[str, Any]]:
    """The issue's targets for ours, each with the figure it is judged on."""
    by = {(row["scenario"], row["metric"]): row for row in rows}

    def ours_median(scenario: str, key: str) -> float | None:
        row = by.get((scenario, key))
        return None if row is None else float(row[ours_name]["median"])

    def ratio(scenario: str, key: str) -> float | None:
        row = by.get((scenario, key))
        return None if row is None or "ratio" not in row else float(row["ratio"])

    untraced = ours_median("pipeline_memory", "artifacts_per_second")
    traced = ours_median("pipeline_traced", "artifacts_per_second")
    checks = [
        (
            "in-memory pipeline throughput, ours/peer",
            ratio("pipeline_memory", "artifacts_per_second"),
            ">=",
            10.0,
        ),
        ("slowdown from our default tracing", untraced / traced if untraced and traced else None, "<=", 1.5),
        (
            "durable store throughput, ours/peer",
            ratio("pipeline_durable", "artifacts_per_second"),
            ">=",
            10.0,
        ),
        ("concurrency efficiency (ours)", ours_median("concurrency", "efficiency"), "<=", 1.05),
        ("CLI cold start, seconds (ours)", ours_median("cold_cli", "seconds"), "<", 0.3),
    ]
    out = []
    for name, value, op, bound in checks:
        if value is None:
            continue
        met = value >= bound if op == ">=" else value <= bound if op == "<=" else value < bound
        out.append({"target": name, "value": value, "bound": f"{op} {bound:g}", "met": met})
    return out


def figure(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    systems = report["systems"]
    lines = [
        f"# Side by side: {' vs '.join(systems)}",
        "",
        f"{report['date']}, {report['machine']}; `{report['command']}`.",
        f"Medians of {report['repeat']} alternating runs per system (cold start: at least 5 at full"
        " scale), each run a fresh process. Sizes and definitions: bench/scenarios.md.",
        "",
        f"| scenario | {' | '.join(systems)} | unit | ours/peer | better |",
        f"|---|{'---:|' * len(systems)}---|---:|---|",
    ]
    for row in report["rows"]:
        medians = " | ".join(figure(row[name]["median"]) for name in systems)
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        better = "higher" if row["higher_is_better"] else "lower"
        lines.append(f"| {row['label']} | {medians} | {row['unit']} | {ratio} | {better} |")
    lines += ["", "| target | measured | bound | met |", "|---|---:|---|---|"]
    for target in report["targets"]:
        lines.append(
            f"| {target['target']} | {figure(target['value'])} | {target['bound']} |"
            f" {'yes' if target['met'] else '**no**'} |"
        )
    sizes = ", ".join(f"{name} {size:,}" for name, size in report["sizes"].items())
    lines += ["", f"Sizes: {sizes}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--repeat", type=int, help="runs per system and scenario (default 3, tiny: 1)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--latency", type=float, help="simulated model latency in seconds (default 0.5)")
    parser.add_argument("--peer-venv", type=Path, default=BENCH / ".peer-venv")
    parser.add_argument("--no-peer", action="store_true", help="measure ours only (no install, no ratios)")
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results", help="folder for side_by_side.json/.md"
    )
    args = parser.parse_args(argv)
    tiny = args.scale == "tiny"
    repeat = args.repeat or (1 if tiny else 3)
    latency = args.latency or (0.05 if tiny else 0.5)
    sizes = TINY if tiny else SIZES
    systems = [ours()]
    if not args.no_peer:
        ensure_peer(args.peer_venv.resolve())
        systems.append(peer(args.peer_venv.resolve()))
    scenarios = args.only or SCENARIOS
    raw = measure(systems, scenarios, repeat, sizes, latency, cold_rounds=1 if tiny else 5)
    rows = summarise(raw, systems)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()} on {platform.machine()}",
        "command": "python bench/compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "systems": [system.name for system in systems],
        "repeat": repeat,
        "latency": latency,
        "sizes": {name: size for name, size in sizes.items() if name in scenarios},
        "rows": rows,
        "targets": targets(rows, systems[0].name),
        "raw": raw,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "side_by_side.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "side_by_side.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
