"""Cold start of the command line and of the library, measured as a user meets them.

Each figure is the median wall time of fresh processes (so nothing is cached in the process;
the OS file cache is warm after the first run, as on a machine in use):

- ``flock --help``: the console script, as installed;
- ``import flock_cli``: the package (its public names load lazily);
- ``from flock_cli import Flock``: the runtime, what a Python user imports first;
- ``flock validate``: loading and checking an example recipe, end to end.

Usage: ``python bench/cli_startup.py [--repeat N] [--json]``. Target: ``flock --help`` < 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], repeat: int) -> float:
    """Median seconds of ``repeat`` runs of ``command`` (each must succeed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    flock = shutil.which("flock", path=str(Path(sys.executable).parent)) or "flock"
    py = sys.executable
    subprocess.run([flock, "--help"], check=True, capture_output=True)  # warm the file cache
    results = {
        "python -c pass": timed([py, "-c", "pass"], args.repeat),
        "flock --help": timed([flock, "--help"], args.repeat),
        "import flock_cli": timed([py, "-c", "import flock_cli"], args.repeat),
        "from flock_cli import Flock": timed([py, "-c", "from flock_cli import Flock"], args.repeat),
        "flock validate recipes/code_review.yaml": timed(
            [flock, "validate", "recipes/code_review.yaml"], args.repeat
        ),
    }
    if args.json:
        print(json.dumps({"repeat": args.repeat, "seconds": results}))
        return
    width = max(map(len, results))
    print(f"median of {args.repeat} fresh processes")
    for name, seconds in results.items():
        print(f"  {name:<{width}}  {seconds * 1000:7.1f} ms")
    verdict = "meets" if results["flock --help"] < 0.3 else "MISSES"
    print(f"flock --help {verdict} the 0.3 s target")


if __name__ == "__main__":
    main()
