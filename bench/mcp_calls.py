"""What an MCP tool costs an agent: starting a server, and one call through the flock's connection.

Uses the example recipe's notes server (recipes/mcp/notes_server.py) over stdio, through the same
pool agents use (``flock_cli.mcp_tools.McpServers``):

- start: from nothing to the server's tool list (the first call of a flock pays it once);
- sequential: one ``read_note`` call after another (median and 95th percentile);
- concurrent: ``--concurrency`` calls at once on the one shared connection (calls per second).

Usage: ``python bench/mcp_calls.py [--calls N] [--concurrency C] [--repeat R] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from flock_cli.mcp_tools import McpServer, McpServers

ROOT = Path(__file__).resolve().parent.parent


async def measure(calls: int, concurrency: int) -> dict[str, float]:
    """One round: a fresh server, ``calls`` sequential calls, then ``calls`` concurrent ones."""
    servers = McpServers()
    servers.declare(
        McpServer(
            name="notes",
            command=sys.executable,
            args=[str(ROOT / "recipes" / "mcp" / "notes_server.py")],
        )
    )
    try:
        began = time.perf_counter()
        await servers.tools_for(["notes.*"])
        start = time.perf_counter() - began
        each = []
        for _ in range(calls):
            began = time.perf_counter()
            outcome = await servers.call("notes", "read_note", {"name": "wifi"})
            each.append(time.perf_counter() - began)
            assert not outcome.is_error, outcome.text
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                outcome = await servers.call("notes", "read_note", {"name": "office"})
                assert not outcome.is_error, outcome.text

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        together = time.perf_counter() - began
    finally:
        await servers.aclose()
    each.sort()
    return {
        "start_s": start,
        "call_median_ms": statistics.median(each) * 1000,
        "call_p95_ms": each[int(0.95 * (len(each) - 1))] * 1000,
        "concurrent_calls_per_s": calls / together,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    rounds = [asyncio.run(measure(options.calls, options.concurrency)) for _ in range(options.repeat)]
    result = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    if options.json:
        print(json.dumps(result))
    else:
        print(f"MCP server start (stdio, to its tool list): {result['start_s']:.2f} s")
        print(
            f"one tool call: median {result['call_median_ms']:.2f} ms,"
            f" p95 {result['call_p95_ms']:.2f} ms ({options.calls} calls)"
        )
        print(
            f"{options.concurrency} at once on one connection: {result['concurrent_calls_per_s']:.0f} calls/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
