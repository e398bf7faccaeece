"""Load on `flock serve`: concurrent HTTP clients publish thousands of artifacts.

Scenarios (each on a fresh board):

* ``sqlite-1``: one `flock serve` over a SQLite board;
* ``postgres-2``: two replicas over one PostgreSQL board (a throwaway server, bench/pg_kit.py);
* ``postgres-2-kill``: the same, one replica killed with SIGKILL when half the artifacts are in;
* ``postgres-2-api``: two API-only replicas (``--no-orchestrator``): the publish path alone, no
  agent runs competing for the two cores.

Every publish carries an Idempotency-Key; a client whose request fails (a dead replica, a cut
connection) retries it with the same key on the next replica. Afterwards the board itself is read
(not the API): ``lost`` counts keys whose artifact is missing, ``doubled`` artifacts stored twice.
Latency is per artifact, from the first try to the stored answer (retries included).

    python bench/serve_load.py                      # 20 clients, 5,000 artifacts per scenario
    python bench/serve_load.py --artifacts 500 --scenarios sqlite-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

from flock_cli.service.tokens import hash_token  # noqa: E402

RECIPE = ROOT / "recipes" / "multi_tenant.yaml"
TOKEN = "bench-token"
SCENARIOS = ("sqlite-1", "postgres-2", "postgres-2-kill", "postgres-2-api")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(self, board: str, folder: Path, tokens: Path, *, api_only: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / f"serve-{self.port}.log").open("w")
        args = [
            *(
                sys.executable,
                "-m",
                "flock_cli",
                "serve",
                str(RECIPE),
                "--board",
                board,
                "--tokens",
                str(tokens),
            ),
            *("--engine", "test", "--no-traces", "--port", str(self.port)),
            *("--rate", "1000000", "--burst", "1000000", "--max-pending", "1000000"),
            *(("--no-orchestrator",) if api_only else ()),
        ]
        self.process = subprocess.Popen(args, cwd=folder, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"flock serve exited {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit("flock serve did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def load(urls: list[str], clients: int, artifacts: int, kill: Replica | None) -> dict[str, Any]:
    """Publish ``artifacts`` through ``urls`` from ``clients`` threads; returns the figures."""
    latencies: list[float] = []
    stored: dict[str, str] = {}
    retries = 0
    lock = threading.Lock()
    half = threading.Event()

    def work(n: int) -> None:
        nonlocal retries
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            for i in range(n, artifacts, clients):
                key = f"k{i}"
                body = {"payload": {"customer": "acme", "subject": f"load {key}", "body": "b"}}
                started = time.perf_counter()
                for attempt in range(60):
                    url = urls[(i + attempt) % len(urls)]
                    try:
                        answer = client.post(f"{url}/v1/types/SupportRequest/artifacts", json=body,
                                             headers={"Idempotency-Key": key})  # fmt: skip
                    except httpx.HTTPError:
                        with lock:
                            retries += 1
                        continue
                    if answer.status_code in (200, 201):
                        break
                    with lock:
                        retries += 1
                    time.sleep(0.05)
                else:
                    raise SystemExit(f"{key} was never stored")
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    stored[key] = answer.json()["id"]
                    if len(stored) >= artifacts // 2:
                        half.set()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    if kill is not None:
        half.wait()
        kill.stop(signal.SIGKILL)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "stored_answers": len(stored),
        "retries": retries,
        "seconds": round(wall, 2),
        "per_second": round(len(stored) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "ids": stored,
    }


def count_on_board(board: str) -> list[tuple[str, str]]:
    """(subject, id) of every load artifact, read from the board itself."""
    from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery
    from flock_cli.store.locate import open_store

    async def read() -> list[tuple[str, str]]:
        store = open_store(board, must_exist=True)
        try:
            page = await store.query(ArtifactQuery(types=frozenset({"SupportRequest"})), viewer=UNRESTRICTED)
        finally:
            await store.close()
        return [
            (a.payload["subject"], str(a.id)) for a in page.items if a.payload["subject"].startswith("load ")
        ]

    return asyncio.run(read())


@contextlib.contextmanager
def boards(scenario: str, folder: Path, server: Any) -> Iterator[str]:
    if scenario.startswith("sqlite"):
        yield str(folder / "board.db")
        return
    from pg_kit import fresh_database

    with fresh_database(server) as url:
        yield url


def run(scenario: str, clients: int, artifacts: int, server: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokens = folder / "tokens.json"
        entry = {"name": "bench", "sha256": hash_token(TOKEN), "tenant": "acme", "publish": "*"}
        tokens.write_text(json.dumps({"tokens": [entry]}))
        with boards(scenario, folder, server) as board:
            api_only = scenario.endswith("-api")
            replicas = [
                Replica(board, folder, tokens, api_only=api_only)
                for _ in range(1 if scenario == "sqlite-1" else 2)
            ]
            try:
                for replica in replicas:
                    replica.wait_ready()
                kill = replicas[0] if scenario.endswith("kill") else None
                figures = load([r.url for r in replicas], clients, artifacts, kill)
            finally:
                for replica in replicas:
                    replica.stop()
            on_board = count_on_board(board)
    subjects = [s for s, _ in on_board]
    ids = figures.pop("ids")
    figures["lost"] = len({f"load k{i}" for i in range(artifacts)} - set(subjects))
    figures["doubled"] = len(subjects) - len(set(subjects))
    figures["answers_match_board"] = set(ids.values()) == {i for _, i in on_board}
    return {"scenario": scenario, "clients": clients, "artifacts": artifacts, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--artifacts", type=int, default=5000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--out", type=Path, help="write the results as JSON and Markdown (a path without suffix)"
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(
            f"unknown scenarios: {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}"
        )
    results = []
    server_context: Any = contextlib.nullcontext(None)
    if any(s.startswith("postgres") for s in chosen):
        from pg_kit import throwaway_server

        server_context = throwaway_server()
    load_before = os.getloadavg()
    with server_context as server:
        for scenario in chosen:
            result = run(scenario, args.clients, args.artifacts, server)
            print(json.dumps(result))
            results.append(result)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before,
               "load_after": os.getloadavg()}  # fmt: skip
    if args.out:
        args.out.with_suffix(".json").write_text(
            json.dumps({"machine": machine, "results": results}, indent=2)
        )
        columns = ("scenario", "clients", "artifacts", "lost", "doubled", "retries", "seconds", "per_second",
                   "p50_ms", "p99_ms")  # fmt: skip
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in results]
        args.out.with_suffix(".table.md").write_text("\n".join(lines) + "\n")
    failed = [r for r in results if r["lost"] or r["doubled"] or not r["answers_match_board"]]
    if failed:
        raise SystemExit(f"lost or doubled artifacts: {failed}")


if __name__ == "__main__":
    main()
