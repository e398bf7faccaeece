"""What both scenario runners share: the payload types, the checks, the measurements, the sizes
and the command line of bench/scenarios.md.

Imported by bench/ours_scenarios.py (our Python) and bench/peer_scenarios.py (the peer's Python),
so it needs nothing but the standard library and Pydantic, which both environments have.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

__all__ = [
    "L1",
    "L2",
    "L3",
    "SIZES",
    "TYPES",
    "Doc",
    "Left",
    "Mid",
    "Out",
    "Right",
    "Seed",
    "WrongResult",
    "check",
    "doc",
    "parse_args",
    "percentile",
    "rss_bytes",
    "seed",
]

SIZES = {
    "pipeline_memory": 10_000,
    "pipeline_traced": 10_000,
    "pipeline_durable": 10_000,
    "fanout": 20,
    "and_gate": 1000,
    "join": 1000,
    "batch": 10_000,
    "publish_latency": 1000,
    "concurrency": 100,
    "memory": 100_000,
}
"""Each scenario's full size (seeds, rounds, pairs, items, publishes, agents or artifacts)."""


class WrongResult(Exception):
    """The run finished but did not do the scenario's work."""


class Seed(BaseModel):
    n: int
    text: str


class Mid(BaseModel):
    n: int
    text: str


class Out(BaseModel):
    n: int
    summary: str


class Left(BaseModel):
    key: int


class Right(BaseModel):
    key: int


class L1(BaseModel):
    lane: int


class L2(BaseModel):
    lane: int


class L3(BaseModel):
    lane: int


class Doc(BaseModel):
    id: int
    title: str
    body: str


TYPES = (Seed, Mid, Out, Left, Right, L1, L2, L3, Doc)
"""Every payload type; each runner registers them under their bare names with its own system."""


def check(condition: bool, message: str) -> None:
    """Raise WrongResult with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WrongResult(message)


def seed(n: int) -> Seed:
    return Seed(n=n, text="x" * 40)


def doc(n: int) -> Doc:
    """A Doc whose JSON payload is exactly 300 bytes."""
    title = f"document {n}".ljust(40, ".")
    body_length = 300 - len(json.dumps({"id": n, "title": title, "body": ""}))
    return Doc(id=n, title=title, body="b" * body_length)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise WrongResult("no VmRSS in /proc/self/status")


def percentile(values: list[float], pct: float) -> float:
    """The value below which ``pct`` percent of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def parse_args(description: str, argv: list[str] | None = None) -> tuple[str, int, float]:
    """A runner's command line: ``SCENARIO [--size N] [--latency SECONDS]`` -> (scenario, size, latency)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("scenario", choices=sorted(SIZES))
    parser.add_argument("--size", type=int, help="the scenario's size (default: bench/scenarios.md)")
    parser.add_argument("--latency", type=float, default=0.5, help="simulated model latency (concurrency)")
    args = parser.parse_args(argv)
    return args.scenario, args.size or SIZES[args.scenario], args.latency
