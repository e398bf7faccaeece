"""The benchmark script runs on tiny sizes (timings are never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pipeline_bench_runs_for_both_stores() -> None:
    done = subprocess.run(
        [sys.executable, "bench/pipeline.py", "--seeds", "30", "--repeat", "1", "--store", "both", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"store": "sqlite"' in done.stdout and '"store": "memory"' in done.stdout
    assert "slower than in memory" in done.stdout


def test_side_by_side_harness_runs_our_side_on_tiny_sizes(tmp_path: Path) -> None:
    """Every scenario of bench/compare.py runs and lands in both result files (the peer needs its
    own virtual environment, so .ci/run checks the two systems together)."""
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "--scale", "tiny", "--no-peer", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "side_by_side.json").read_text())
    measured = {(row["scenario"], row["metric"]) for row in report["rows"]}
    assert ("pipeline_memory", "artifacts_per_second") in measured
    assert ("concurrency", "efficiency") in measured
    assert len(measured) == 13
    assert all(row["flock-flow"]["median"] > 0 for row in report["rows"])
    table = (tmp_path / "side_by_side.md").read_text()
    assert "| memory per stored artifact (300-byte payload) |" in table
    assert "CLI cold start, seconds (ours)" in table


def test_a_scenario_that_does_the_wrong_work_fails_loudly() -> None:
    """A runner exits 1 with one line when its checks fail (here: 150 items leave a partial batch)."""
    done = subprocess.run(
        [sys.executable, "bench/ours_scenarios.py", "batch", "--size", "150"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("batch: wrong result:"), done.stderr
    assert "Traceback" not in done.stderr


def test_only_and_repeat_pick_the_scenarios_and_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "--scale", "tiny", "--no-peer", "--only", "memory",
         "--only", "batch", "--repeat", "2", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "side_by_side.json").read_text())
    assert [row["scenario"] for row in report["rows"]] == ["batch", "memory"]
    assert all(len(row["flock-flow"]["runs"]) == 2 for row in report["rows"])
    assert report["targets"] == []  # none of the targets' figures was measured


def test_scale_out_bench_runs_every_part_and_writes_its_figures(tmp_path: Path) -> None:
    """bench/scale_out.py on tiny sizes: orchestrator processes on a throwaway PostgreSQL server,
    every part measured and written to both result files."""
    from tests.postgres_server import PostgresUnavailable, find_binaries, require_psycopg, unavailable

    try:
        require_psycopg()
        find_binaries()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    done = subprocess.run(
        [sys.executable, "bench/scale_out.py", "--rounds", "1", "--processes", "1,2", "--seeds", "6",
         "--pipeline-seeds", "6", "--publishes", "4", "--gap-min", "0.01", "--gap-max", "0.02",
         "--idle-seconds", "0.5", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "scale_out.json").read_text())
    assert sorted(r["processes"] for r in report["scale"]) == [1, 2]
    assert all(r["runs"] == 12 and r["runs_per_second"] > 0 for r in report["scale"])
    assert sorted(sum(r["runs_by_process"]) for r in report["scale"]) == [12, 12]
    assert sorted(r["store"] for r in report["pipeline"]["one_process"]) == ["postgres", "sqlite"]
    assert sorted(r["processes"] for r in report["pipeline"]["processes"]) == [1, 2]
    assert [len(r["publish_to_start_seconds"]) for r in report["latency"]] == [4, 4]
    assert len(report["idle"]["orchestrators"]) == 2
    table = (tmp_path / "scale_out.md").read_text()
    for heading in ("## Scale-out", "## The no-LLM two-stage pipeline", "## Wake-up latency", "## Idle CPU"):
        assert heading in table
    assert "- target 2 processes ≥ 1.9x one:" in table


def test_serve_load_bench_counts_on_the_board(tmp_path: Path) -> None:
    """bench/serve_load.py on a tiny size: real `flock serve` processes, its figures written."""
    pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
    out = tmp_path / "serve"
    done = subprocess.run(
        [sys.executable, "bench/serve_load.py", "--clients", "4", "--artifacts", "60",
         "--scenarios", "sqlite-1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.with_suffix(".json").read_text())["results"][0]
    assert (result["lost"], result["doubled"], result["stored_answers"]) == (0, 0, 60)


def test_mcp_calls_bench_runs() -> None:
    done = subprocess.run(
        [sys.executable, "bench/mcp_calls.py", "--calls", "5", "--repeat", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {"start_s", "call_median_ms", "call_p95_ms", "concurrent_calls_per_s"}


def test_run_path_bench_measures_ours_beside_the_floor(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/run_path.py", "--seeds", "50", "--rounds", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "run_path.md").read_text()
    for variant in ("| floor |", "| memory |", "| sqlite |"):
        assert variant in table
    runs = json.loads((tmp_path / "run_path.json").read_text())
    assert {variant: [r["runs"] for r in results] for variant, results in runs.items()} == {
        "floor": [100],
        "memory": [100],
        "sqlite": [100],
    }


def test_the_floor_runs_every_seed_through_both_stages() -> None:
    done = subprocess.run(
        [sys.executable, "bench/floor.py", "--seeds", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["runs"], result["artifacts"]) == (40, 60)


def test_run_path_bench_measures_a_baseline_checkout_beside_ours(tmp_path: Path) -> None:
    # This checkout serves as its own baseline: what is checked is that both run, interleaved.
    done = subprocess.run(
        [sys.executable, "bench/run_path.py", "--seeds", "30", "--rounds", "1", "--only", "memory",
         "--baseline", str(ROOT), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "run_path.json").read_text())
    assert {variant: [r["runs"] for r in results] for variant, results in runs.items()} == {
        "memory": [60],
        "memory (baseline)": [60],
    }
    assert "memory: " in done.stdout and "x the baseline (rounds" in done.stdout
    refused = subprocess.run(
        [sys.executable, "bench/run_path.py", "--baseline", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "no flock_cli package in that folder" in refused.stderr
