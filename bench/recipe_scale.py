"""How recipe loading scales with the number of agents.

Generates recipes with N agents (default 500, 1,000, 2,000 and 4,000) over N/10 types, every
agent with a ``where`` expression, a third of them also consuming a second type through a keyed
join, a retry policy on some, and times ``load_recipe`` (read, parse, validate, merge, resolve,
graph, static checks). Loading should grow about linearly: the script prints the
seconds per N and the time per agent, which should stay roughly flat.

Usage: ``python bench/recipe_scale.py [--agents 500 1000 2000 4000] [--shape fan layered cyclic]
[--repeat 3] [--timeout 120] [--json] [--profile N]``. Each size loads in a fresh process; a size
that takes longer than ``--timeout`` is reported as such and the larger ones of its shape are
skipped. ``--profile N`` prints the top functions of one load of N agents.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


SHAPES = ("fan", "layered", "cyclic")


def recipe_text(agents: int, shape: str = "fan") -> str:
    """A valid recipe with ``agents`` agents over ``agents // 10`` types (at least 4).

    Agent ``a`` consumes type ``a % types`` (every third one joins it with the next type by key)
    and publishes, by ``shape``:

    - ``fan``: the final type ``Tinal``: many independent agents, few paths;
    - ``layered``: the type two steps on (``Tinal`` past the last): a deep workflow with very
      many paths through it;
    - ``cyclic``: the type two steps on, wrapping round, so the graph is full of cycles (each agent
      has a ``where``, so none of them is unbounded).
    """
    count = max(4, agents // 10)
    lines = [f"name: scale-{agents}", "types:"]
    for t in range(count):
        lines += [
            f"  T{t}:",
            "    fields:",
            "      key: str",
            "      score: {type: int, ge: 0, le: 100}",
            "      tags: list[str]",
        ]
    lines += ["  Tinal:", "    fields:", "      key: str", "agents:"]
    for a in range(agents):
        consumed, other = a % count, (a + 1) % count
        published = {
            "fan": "inal",
            "layered": consumed + 2 if consumed + 2 < count else "inal",
            "cyclic": (consumed + 2) % count,
        }[shape]
        lines.append(f"  agent_{a}:")
        if a % 3 == 0:
            lines += [
                f"    consumes: {{types: [T{consumed}, T{other}], join: {{by: key, within: 5m}},"
                f' where: "score > {a % 100}"}}'
            ]
        else:
            lines.append(
                f"    consumes: {{types: T{consumed}, where: \"score >= {a % 100} and 'x' in tags\"}}"
            )
        lines += [f"    publishes: T{published}", "    engine: test"]
        if a % 5 == 0:
            lines.append("    retry: {max_attempts: 3, backoff: exponential, initial_delay: 1s}")
    return "\n".join(lines) + "\n"


def time_load(path: Path, repeat: int) -> float:
    """Median seconds of ``repeat`` loads of ``path``."""
    from flock_cli.recipe import load_recipe

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load_recipe(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(shape: str, agents: int, repeat: int, timeout: float) -> float | None:
    """Median seconds of ``repeat`` loads in a fresh process, or None past ``timeout``."""
    command = [sys.executable, __file__, "--one", shape, str(agents), str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--shape", choices=SHAPES, nargs="+", default=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per size before giving up")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", type=int, metavar="N", help="profile one load of N agents (first shape)")
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "N", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="recipe-scale-"))
    if args.one:  # the child process of measure()
        shape, n, repeat = args.one[0], int(args.one[1]), int(args.one[2])
        path = folder / "recipe.yaml"
        path.write_text(recipe_text(n, shape))
        print(time_load(path, repeat))
        return
    if args.profile:
        import cProfile
        import pstats

        from flock_cli.recipe import load_recipe

        path = folder / "recipe.yaml"
        path.write_text(recipe_text(args.profile, args.shape[0]))
        profiler = cProfile.Profile()
        profiler.runcall(load_recipe, path)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    results: dict[str, dict[str, float | None]] = {}
    if not args.json:
        print(f"load_recipe, median of {args.repeat} (fresh process per size)")
        print(f"{'shape':>8}  {'agents':>7}  {'seconds':>8}  {'ms per agent':>12}")
    for shape in args.shape:
        results[shape] = {}
        for n in args.agents:
            seconds = measure(shape, n, args.repeat, args.timeout)
            results[shape][str(n)] = seconds
            if not args.json:
                shown = (
                    f"{seconds:>8.2f}  {seconds / n * 1000:>12.2f}" if seconds else f"> {args.timeout:g} s"
                )
                print(f"{shape:>8}  {n:>7}  {shown}", flush=True)
            if seconds is None:
                break  # larger sizes would take longer still
    if args.json:
        print(json.dumps({"repeat": args.repeat, "timeout": args.timeout, "seconds": results}))


if __name__ == "__main__":
    main()
