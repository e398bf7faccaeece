"""The benchmark script runs on tiny sizes (timings are never asserted in tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
