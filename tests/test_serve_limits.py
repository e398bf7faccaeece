"""The service's limits over real HTTP: the body size cap, the rate limit per token, and the
backpressure of a full board (429 with Retry-After instead of memory growing without bound)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flock_cli.recipe.loader import load_recipe
from flock_cli.store.sqlite import SQLiteBlackboardStore
from tests.serve_helpers import ROOT, auth, in_thread, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

RECIPE = ROOT / "recipes" / "multi_tenant.yaml"
BODY = {"payload": {"customer": "acme", "subject": "Export", "body": "Please."}}


def test_body_size_and_rate_limits(tmp_path: Path) -> None:
    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "b.db"), engine_override="test", traces=False
    )
    served = flock.serve(
        port=0, tokens=token_file(tmp_path), max_body_bytes=2048, requests_per_second=0.5, burst=3
    )
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        big = {"payload": {"customer": "acme", "subject": "Export", "body": "x" * 5000}}
        answer = client.post("/v1/types/SupportRequest/artifacts", json=big, headers=auth("acme-app"))
        assert answer.status_code == 413 and answer.headers["content-type"] == "application/problem+json"
        assert "2048" in answer.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
            yield b'{"payload": {"customer": "acme", "subject": "Export", "body": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}}'

        chunked = client.post(
            "/v1/types/SupportRequest/artifacts",
            content=chunks(),
            headers={**auth("globex-app"), "content-type": "application/json"},
        )
        assert chunked.status_code == 413
        # The oversized bodies were refused before they reached the rate limit.
        statuses = [client.get("/v1/whoami", headers=auth("acme-app")).status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
        limited = client.get("/v1/whoami", headers=auth("acme-app"))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/whoami", headers=auth("globex-app")).status_code == 200  # per token
        assert client.get("/health/live").status_code == 200  # probes are not rate limited


def test_a_full_board_answers_429(tmp_path: Path) -> None:
    # An API-only replica: nothing routes what it publishes, so open work only grows.
    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "b.db"), engine_override="test", traces=False, role="publisher"
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path), max_pending=2)
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        ready = client.get("/health/ready").json()
        assert ready["checks"]["scheduler"] == "none (API only)"
        statuses = []
        for _ in range(4):
            statuses.append(
                client.post(
                    "/v1/types/SupportRequest/artifacts", json=BODY, headers=auth("acme-app")
                ).status_code
            )
            time.sleep(0.7)  # the service counts the board's open work twice a second
        assert statuses == [201, 201, 201, 429]
        full = client.post("/v1/types/SupportRequest/artifacts", json=BODY, headers=auth("acme-app"))
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert "max_pending" in full.json()["detail"]


def test_event_streams_per_token_are_capped(tmp_path: Path) -> None:
    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "b.db"), engine_override="test", traces=False
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path), max_streams_per_token=2)
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("GET", "/v1/events", headers=auth("acme-app")) as one:
            first = one.iter_lines()  # kept: a dropped line iterator closes its response
            next(first)
            with client.stream("GET", "/v1/events", headers=auth("acme-app")) as two:
                second = two.iter_lines()
                next(second)
                third = client.get("/v1/events", headers=auth("acme-app"))
                assert third.status_code == 429 and "2 event streams open" in third.json()["detail"]
                with client.stream("GET", "/v1/events", headers=auth("globex-app")) as other:
                    assert other.status_code == 200  # per token
        deadline = time.monotonic() + 10  # closed streams give their slots back
        while time.monotonic() < deadline:
            with client.stream("GET", "/v1/events", headers=auth("acme-app")) as again:
                if again.status_code == 200:
                    break
            time.sleep(0.1)
        assert again.status_code == 200


def test_concurrent_stream_opens_respect_the_cap(tmp_path: Path) -> None:
    import threading

    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "b.db"), engine_override="test", traces=False
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path), max_streams_per_token=2)
    statuses: list[int] = []
    release = threading.Event()

    def open_one(url: str) -> None:
        with (
            httpx.Client(base_url=url, timeout=30) as client,
            client.stream("GET", "/v1/events", headers=auth("acme-app")) as stream,
        ):
            statuses.append(stream.status_code)
            release.wait(10)

    with in_thread(served) as url:
        threads = [threading.Thread(target=open_one, args=(url,)) for _ in range(10)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(statuses) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()
        for thread in threads:
            thread.join(15)
    assert sorted(statuses) == [200, 200] + [429] * 8


ANY_RECIPE = """\
name: anything
types:
  Loose:
    fields:
      v: any
      l: {type: "list[any]", default: []}
  Done: {fields: {ok: bool}}
agents:
  eat: {consumes: Loose, publishes: Done, engine: test}
"""


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ('{"payload": {"v": NaN}}', [], "NaN is not a JSON number"),
        ('{"payload": {"v": 1, "l": [1, -Infinity]}}', [], "-Infinity is not a JSON number"),
        ('{"payload": {"v": 1e999}}', ["payload", "v"], "infinity"),
        ('{"payload": {"v": {"deep": [{"x": 1e999}]}}}', ["payload", "v", "deep", 0, "x"], "infinity"),
        ('{"payload": {"v": "\\ud800"}}', ["payload", "v"], "not text"),
        ('{"payload": {"v": 1}, "tags": ["\\udc00"]}', ["tags", 0], "not text"),
        ('{"payload": {"v": 1, "v": 2}}', [], "the key 'v' is written twice"),
    ],
)
def test_values_json_cannot_hold_are_refused_not_stored_changed(
    tmp_path: Path, body: str, where: list[str | int], says: str
) -> None:
    # An ``any`` field takes whatever the JSON parser made of the body: NaN and infinity would be
    # stored as null, a lone surrogate could not be written. The CLI and `flock mcp` refuse them.
    (tmp_path / "anything.yaml").write_text(ANY_RECIPE)
    flock = load_recipe(tmp_path / "anything.yaml").build(
        store=SQLiteBlackboardStore(tmp_path / "b.db"), engine_override="test", traces=False
    )
    tokens = token_file(tmp_path, {"ops": ("tok-ops", {"publish": "*", "operator": True})})
    headers = {"Authorization": "Bearer tok-ops", "content-type": "application/json"}
    with (
        in_thread(flock.serve(port=0, tokens=tokens)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        answer = client.post("/v1/types/Loose/artifacts", content=body.encode(), headers=headers)
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["errors"] if "errors" in answer.json() else answer.json()["detail"]
        assert error["loc"] == ["body", *where] and says in error["msg"], error
        fine = client.post(
            "/v1/types/Loose/artifacts", json={"payload": {"v": [1.5, "x", None]}}, headers=headers
        )
        assert fine.status_code == 201, fine.text
        listed = client.get("/v1/artifacts", headers=headers).json()
    loose = [a["payload"] for a in listed["items"] if a["type"] == "Loose"]
    assert loose == [{"v": [1.5, "x", None], "l": []}]  # nothing else was stored
