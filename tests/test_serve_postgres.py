"""Two `flock serve` replicas over one PostgreSQL board: clients publishing through both with
idempotency keys lose nothing and double nothing, even when one replica is killed (SIGKILL) in
the middle; a replica's event stream shows what the other published."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.postgres_server import PostgresServer
from tests.serve_helpers import ROOT, ServeProcess, auth, read_events, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

RECIPE = str(ROOT / "recipes" / "multi_tenant.yaml")
CLIENTS = 4
EACH = 40


def publish_until_stored(urls: list[str], body: dict[str, Any], key: str) -> str:
    """Publish through the first replica that answers, retrying others with the same key."""
    for url in itertools.islice(itertools.cycle(urls), 20):
        try:
            answer = httpx.post(
                f"{url}/v1/types/SupportRequest/artifacts",
                json=body,
                headers={**auth("acme-app"), "Idempotency-Key": key},
                timeout=10,
            )
        except httpx.HTTPError:
            continue  # that replica is gone: the next one gets the same key
        if answer.status_code in (200, 201):
            return str(answer.json()["id"])
        if answer.status_code not in (429, 503):
            raise AssertionError(f"{answer.status_code} {answer.text}")
    raise AssertionError(f"no replica stored {key}")


def test_replicas_share_the_board_and_survive_a_kill(tmp_path: Path, postgres_url: str) -> None:
    tokens = str(token_file(tmp_path))
    args = [RECIPE, "--board", postgres_url, "--tokens", tokens, "--engine", "test", "--no-traces"]
    first = ServeProcess([*args], tmp_path)
    second = ServeProcess([*args, "--no-orchestrator"], tmp_path)
    try:
        first.wait_ready()
        second.wait_ready()
        correlation = str(uuid.uuid4())
        seen: list[dict[str, Any]] = []
        with (
            httpx.Client(base_url=second.url, timeout=30) as client,
            client.stream(
                "GET", "/v1/events", params={"correlation_id": correlation}, headers=auth("acme-app")
            ) as stream,
        ):
            body = {
                "payload": {"customer": "acme", "subject": "Export", "body": "b"},
                "correlation_id": correlation,
            }
            assert httpx.post(f"{first.url}/v1/types/SupportRequest/artifacts", json=body,
                              headers=auth("acme-app")).status_code == 201  # fmt: skip
            seen = read_events(
                stream, lambda e: any(x["data"]["artifact"]["type"] == "Case" for x in e), limit=30
            )
        assert [e["data"]["artifact"]["type"] for e in seen] == ["SupportRequest", "Case"]

        stored: dict[str, str] = {}
        lock = threading.Lock()
        half = threading.Event()

        def client_thread(n: int) -> None:
            for i in range(EACH):
                key = f"c{n}-{i}"
                body = {"payload": {"customer": "acme", "subject": f"load {key}", "body": "b"}}
                order = [first.url, second.url] if (n + i) % 2 else [second.url, first.url]
                artifact = publish_until_stored(order, body, key)
                with lock:
                    stored[key] = artifact
                    if len(stored) == CLIENTS * EACH // 2:
                        half.set()

        threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        assert half.wait(60)
        first.kill()  # SIGKILL in the middle of the load
        for thread in threads:
            thread.join(120)
        assert len(stored) == CLIENTS * EACH and len(set(stored.values())) == CLIENTS * EACH
        with httpx.Client(base_url=second.url, timeout=30) as client:
            page = client.get(
                "/v1/artifacts", params={"type": "SupportRequest", "produced_by": "acme-app", "limit": 1000},
                headers=auth("acme-app"),
            ).json()  # fmt: skip
        subjects = [a["payload"]["subject"] for a in page["items"]]
        loaded = [s for s in subjects if s.startswith("load ")]
        assert len(loaded) == CLIENTS * EACH  # nothing lost
        assert len(set(loaded)) == len(loaded)  # nothing doubled
        assert {a["id"] for a in page["items"] if a["payload"]["subject"].startswith("load ")} == set(
            stored.values()
        )
    finally:
        first.kill()
        assert second.terminate() == 0


def test_readiness_turns_503_while_the_board_is_down_and_200_when_it_is_back(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    # The board's connection pool keeps reconnecting for up to a minute: readiness said 200
    # "board ok" all through an outage, from the last check that had answered.
    tokens = str(token_file(tmp_path))
    args = [RECIPE, "--board", postgres_url, "--tokens", tokens, "--engine", "test", "--no-traces"]
    served = ServeProcess(args, tmp_path)
    try:
        served.wait_ready()

        def ready_status() -> tuple[int, Any]:
            answer = httpx.get(f"{served.url}/health/ready", timeout=30)
            return answer.status_code, answer.json()

        assert ready_status()[0] == 200
        postgres_server.stop()
        try:
            deadline = time.monotonic() + 30
            while (status := ready_status())[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            code, body = status
            assert code == 503, body
            assert "board unreachable" in json.dumps(body), body
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 60
        while ready_status()[0] != 200:
            assert time.monotonic() < deadline, "not ready again after the board came back"
            time.sleep(0.5)
    finally:
        served.terminate()
