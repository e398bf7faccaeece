"""The Markdown summary of bench/scale_out.py's report (medians, spread, ratios and targets)."""

from __future__ import annotations

import statistics
from typing import Any

TARGETS = {2: 1.9, 4: 3.6}
"""Speed-up over one process that the scale part must reach (issue 15)."""


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _range(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _per_run_ms(runs: list[dict[str, Any]], key: str) -> float:
    """Median over rounds of CPU milliseconds per agent run (``key``: a list or a number)."""
    values = []
    for r in runs:
        used = r[key] if isinstance(r[key], int | float) else sum(r[key])
        values.append(1000 * used / r["runs"])
    return statistics.median(values)


def by_processes(runs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["processes"], []).append(run)
    return dict(sorted(grouped.items()))


def speedups(runs: list[dict[str, Any]]) -> dict[int, tuple[float, list[float]]]:
    """Per process count: the ratio of medians to one process, and the ratio within each round."""
    grouped = by_processes(runs)
    if 1 not in grouped:
        return {}
    base = _median(grouped[1], "runs_per_second")
    single = {r["round"]: r["runs_per_second"] for r in grouped[1]}
    found = {}
    for count, group in grouped.items():
        rounds = [r["runs_per_second"] / single[r["round"]] for r in group if r["round"] in single]
        found[count] = (_median(group, "runs_per_second") / base, rounds)
    return found


def _throughput_table(runs: list[dict[str, Any]], ideal_per_process: float | None) -> list[str]:
    lines = [
        "| processes | median runs/s | min-max | speed-up (medians) | speed-up per round |"
        + (" of ideal |" if ideal_per_process else "")
        + " wall runs/s | orchestrator CPU / run | server CPU / run | transactions / run"
        " | connections opened / run | runs per process (last round) |",
        "|---:|---:|---:|---:|---:|"
        + ("---:|" if ideal_per_process else "")
        + "---:|---:|---:|---:|---:|---|",
    ]
    ratios = speedups(runs)
    for count, group in by_processes(runs).items():
        rates = [r["runs_per_second"] for r in group]
        ratio, rounds = ratios.get(count, (float("nan"), []))
        cells = [
            str(count),
            f"{statistics.median(rates):.1f}",
            _range(rates),
            f"{ratio:.2f}x",
            ", ".join(f"{x:.2f}" for x in rounds),
        ]
        if ideal_per_process:
            cells.append(f"{100 * statistics.median(rates) / (count * ideal_per_process):.0f} %")
        cells += [
            f"{_median(group, 'wall_runs_per_second'):.1f}",
            f"{_per_run_ms(group, 'orchestrator_cpu_seconds'):.1f} ms",
            f"{_per_run_ms(group, 'server_cpu_seconds'):.1f} ms",
            f"{statistics.median(r['transactions'] / r['runs'] for r in group):.1f}",
            f"{statistics.median(r['connections_opened'] / r['runs'] for r in group):.3f}",
            " / ".join(str(n) for n in group[-1]["runs_by_process"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scale(report: dict[str, Any]) -> list[str]:
    runs, settings = report["scale"], report["settings"]
    ideal = settings["concurrency"] / settings["latency"]
    lines = [
        "## Scale-out: 1, 2 and 4 orchestrator processes, 0.2 s simulated model latency",
        "",
        f"{settings['seeds']} seeds → stage_a → stage_b ({2 * settings['seeds']} runs), every engine call"
        f" awaiting `asyncio.sleep({settings['latency']})`, `max_concurrency={settings['concurrency']}`"
        f" per process (ideal: {ideal:.0f} runs/s per process). {settings['rounds']} rounds, a fresh"
        " database each, the order of the configurations rotated each round. Throughput: runs divided"
        " by the time from the first seed's `created_at` to the newest artifact's `created_at` on the"
        " board (wall: from just before the publish until the board was seen idle, looked at every"
        " 0.1 s).",
        "",
        *_throughput_table(runs, ideal),
        "",
    ]
    for count, target in TARGETS.items():
        ratio = speedups(runs).get(count)
        if ratio is not None:
            verdict = "met" if ratio[0] >= target else "MISSED"
            lines.append(f"- target {count} processes ≥ {target}x one: {ratio[0]:.2f}x, **{verdict}**")
    return [*lines, ""]


def _pipeline(report: dict[str, Any]) -> list[str]:
    part = report["pipeline"]
    lines = ["## The no-LLM two-stage pipeline on PostgreSQL", ""]
    one = part["one_process"]
    if one:
        seeds = one[0]["seeds"]
        rates = {
            s: [r["artifacts_per_second"] for r in one if r["store"] == s] for s in ("sqlite", "postgres")
        }
        sqlite, postgres = statistics.median(rates["sqlite"]), statistics.median(rates["postgres"])
        lines += [
            f"One process, `bench/pipeline.py --engine function --store sqlite,postgres --seeds {seeds}`"
            f" ({3 * seeds} artifacts, {2 * seeds} runs; artifacts/s from the first publish until"
            " `run_until_idle` returns):",
            "",
            "| board | median artifacts/s | min-max | runs/s |",
            "|---|---:|---:|---:|",
            f"| SQLite | {sqlite:,.0f} | {_range(rates['sqlite'], 0)} | {sqlite * 2 / 3:,.0f} |",
            f"| PostgreSQL | {postgres:,.0f} | {_range(rates['postgres'], 0)} | {postgres * 2 / 3:,.0f} |",
            "",
            f"PostgreSQL / SQLite: {postgres / sqlite:.3f} (SQLite is {sqlite / postgres:.1f}x faster).",
            "",
        ]
    if part["processes"]:
        seeds = part["processes"][0]["seeds"]
        lines += [
            f"Separate orchestrator processes on PostgreSQL, the same pipeline with instant engines"
            f" ({seeds} seeds, {2 * seeds} runs, no `max_concurrency`: 32 leases per process):",
            "",
            *_throughput_table(part["processes"], None),
            "",
        ]
    return lines


def _latency(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Wake-up latency",
        "",
        "A publisher Flock in this process publishes one Seed at a time, uniformly 20-50 ms apart,"
        " stamping `time.time()` just before `publish`; stage_a's engine (instant) stamps `time.time()`"
        " when it starts, in an orchestrator process in watch mode. Same machine, same clock. The second"
        " figure is one hop inside the board: from a Mid's `created_at` (its run's output) to stage_b's"
        " run starting on it.",
        "",
        "| orchestrators | publishes | publish → run start p50 | p90 | p99 | max |"
        " output → next run start p50 | p99 | runs per process |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["latency"]:
        a, b = r["publish_to_start"], r["output_to_next_start"]
        lines.append(
            f"| {r['processes']} | {r['publishes']} | {a['p50_ms']:.1f} ms | {a['p90_ms']:.1f} ms"
            f" | {a['p99_ms']:.1f} ms | {a['max_ms']:.1f} ms | {b['p50_ms']:.1f} ms | {b['p99_ms']:.1f} ms"
            f" | {' / '.join(str(n) for n in r['runs_by_process'])} |"
        )
    return [*lines, ""]


def _idle(report: dict[str, Any]) -> list[str]:
    r = report["idle"]
    lines = [
        "## Idle CPU",
        "",
        f"{r['processes']} orchestrators in watch mode on an empty board, after 3 s of start-up;"
        f" CPU (user + system, /proc/PID/stat) over {r['seconds']:.0f} s:",
        "",
        "| process | CPU seconds | CPU |",
        "|---|---:|---:|",
    ]
    for o in r["orchestrators"]:
        lines.append(f"| orchestrator ({o['role']}) | {o['cpu_seconds']:.2f} | {o['cpu_percent']:.2f} % |")
    lines += [
        f"| PostgreSQL server, every process | {r['server_cpu_seconds']:.2f}"
        f" | {r['server_cpu_percent']:.2f} % |",
        "",
        f"The server counted {r['transactions_per_second']:.1f} transactions/s in the board's database"
        " (pg_stat_database, from the start of the window until the orchestrators had left, their"
        " leaving included).",
        "",
    ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"# bench/scale_out.py, {report['date']}",
        "",
        f"{machine['cpus']} CPUs shared with other work"
        f" (load average {machine['load_average_at_start'][0]:.1f}"
        f" at the start, {machine['load_average_at_end'][0]:.1f} at the end), Python {machine['python']},"
        f" PostgreSQL {machine.get('postgresql', '?')} (a throwaway cluster on 127.0.0.1, fsync off).",
        "",
    ]
    for key, part in (("scale", _scale), ("pipeline", _pipeline), ("latency", _latency), ("idle", _idle)):
        if key in report:
            lines += part(report)
    return "\n".join(lines)
