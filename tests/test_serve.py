"""``flock serve`` over real HTTP: uvicorn on 127.0.0.1, httpx as the client, a real SQLite board.

The flock is recipes/multi_tenant.yaml on the offline test engine: an Acme SupportRequest becomes
an Acme Case (tenant acme), the Case an Escalation only `compliance` may see, and that a
Resolution private to the compliance officer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flock_cli.recipe.loader import load_recipe
from flock_cli.store.sqlite import SQLiteBlackboardStore
from tests.serve_helpers import ROOT, auth, in_thread, read_events, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

RECIPE = ROOT / "recipes" / "multi_tenant.yaml"
REQUEST = {"customer": "acme", "subject": "Data export", "body": "Please export our records."}


def build(tmp_path: Path, **limits: Any) -> Any:
    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "board.db"), engine_override="test", traces=False
    )
    return flock.serve(port=0, tokens=token_file(tmp_path), **limits)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Any, httpx.Client]]:
    served = build(tmp_path)
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield served, client


def publish(
    client: httpx.Client, who: str, payload: dict[str, Any] = REQUEST, **envelope: Any
) -> httpx.Response:
    headers = {**auth(who), **envelope.pop("headers", {})}
    return client.post(
        "/v1/types/SupportRequest/artifacts", json={"payload": payload, **envelope}, headers=headers
    )


def wait_for(client: httpx.Client, who: str, params: dict[str, Any], count: int) -> dict[str, Any]:
    """List until at least ``count`` artifacts match (the agents run in the background)."""
    import time

    deadline = time.monotonic() + 20
    while True:
        page: dict[str, Any] = client.get("/v1/artifacts", params=params, headers=auth(who)).json()
        if page["total"] >= count or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def test_publish_read_list_and_lineage(service: tuple[Any, httpx.Client]) -> None:
    _, client = service
    answer = publish(client, "acme-app")
    assert answer.status_code == 201, answer.text
    artifact = answer.json()
    assert answer.headers["location"] == f"/v1/artifacts/{artifact['id']}"
    assert artifact["produced_by"] == "acme-app"
    assert artifact["visibility"] == {"kind": "Tenant", "tenant_id": "acme"}  # the token's tenant
    assert client.get(f"/v1/artifacts/{artifact['id']}", headers=auth("acme-app")).json() == artifact

    cases = wait_for(client, "acme-app", {"type": "Case", "correlation_id": artifact["correlation_id"]}, 1)
    assert cases["total"] == 1
    case = cases["items"][0]
    assert case["produced_by"] == "acme_support"
    lineage = client.get(f"/v1/artifacts/{artifact['id']}/lineage", headers=auth("acme-app")).json()
    assert lineage["parents"] == [] and case["id"] in lineage["children"]
    # The Escalation below the Case is labelled `compliance`: Acme's token does not see it.
    everything = client.get("/v1/artifacts", params={"order": "oldest"}, headers=auth("acme-app")).json()
    assert {a["type"] for a in everything["items"]} == {"SupportRequest", "Case"}
    page = client.get("/v1/artifacts", params={"limit": 1, "offset": 1}, headers=auth("acme-app")).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["limit"] == 1 and page["offset"] == 1


def test_idempotency_key_returns_the_first_artifact(service: tuple[Any, httpx.Client]) -> None:
    _, client = service
    key = {"Idempotency-Key": "order-1"}
    first = publish(client, "acme-app", headers=key)
    again = publish(client, "acme-app", headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = publish(client, "acme-app", {**REQUEST, "subject": "something else"}, headers=key)
    assert other.status_code == 409 and other.headers["content-type"] == "application/problem+json"
    # Another token's same key is its own.
    assert publish(client, "globex-app", {**REQUEST, "customer": "globex"}, headers=key).status_code == 201
    acme = client.get("/v1/artifacts", params={"type": "SupportRequest"}, headers=auth("acme-app")).json()
    assert [a["id"] for a in acme["items"]] == [first.json()["id"]]
    ops = client.get("/v1/artifacts", params={"type": "SupportRequest"}, headers=auth("ops")).json()
    assert ops["total"] == 0  # the ops token has no tenant: tenant artifacts are not for it
    tagged = publish(client, "acme-app", headers=key, tags=["urgent"])  # same payload, other tags
    assert tagged.status_code == 409 and "tags" in tagged.json()["detail"]
    empty = publish(client, "acme-app", headers={"Idempotency-Key": ""})
    assert empty.status_code == 422 and "idempotency-key" in empty.json()["detail"]


def test_errors_are_problem_documents(service: tuple[Any, httpx.Client]) -> None:
    _, client = service
    bad = publish(client, "acme-app", {"customer": 5})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["status"] == 422 and problem["type_name"] == "SupportRequest"
    fields = {tuple(e["loc"]) for e in problem["errors"]}
    assert {
        ("body", "payload", "customer"),
        ("body", "payload", "subject"),
        ("body", "payload", "body"),
    } <= fields
    assert "SupportRequest" in problem["detail"]

    none = client.get("/v1/artifacts")
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/artifacts", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert publish(client, "auditor").status_code == 403  # may publish nothing
    assert publish(client, "auditor", {"subject": "x"}).status_code == 403  # rights before the schema
    assert client.post("/v1/types/Nope/artifacts", json={}, headers=auth("ops")).status_code == 404
    assert client.get("/v1/agents", headers=auth("acme-app")).status_code == 403
    assert client.get(f"/v1/artifacts/{uuid.uuid4()}", headers=auth("ops")).status_code == 404
    wrong_visibility = publish(client, "acme-app", visibility="private:nobody")
    assert wrong_visibility.status_code == 422 and "nobody" in wrong_visibility.json()["detail"]
    assert publish(client, "acme-app", extra=1).status_code == 422  # unknown envelope field
    # A tenant's token writes into its own tenant only.
    elsewhere = publish(client, "acme-app", visibility="tenant:globex")
    assert elsewhere.status_code == 403 and "tenant:acme only" in elsewhere.json()["detail"]
    assert publish(client, "acme-app", visibility="tenant:acme").status_code == 201
    deep = '{"payload": ' + "[" * 5000 + "]" * 5000 + "}"
    nested = client.post(
        "/v1/types/SupportRequest/artifacts",
        content=deep,
        headers={**auth("acme-app"), "content-type": "application/json"},
    )
    assert nested.status_code == 422 and "deeper" in nested.json()["detail"]


def test_operator_views_health_metrics_and_openapi(service: tuple[Any, httpx.Client]) -> None:
    _, client = service
    publish(client, "acme-app")
    wait_for(client, "acme-app", {"type": "Case"}, 1)
    agents = {a["name"]: a for a in client.get("/v1/agents", headers=auth("ops")).json()}
    assert set(agents) == {
        "acme_support",
        "globex_support",
        "acme_analyst",
        "globex_analyst",
        "compliance_officer",
    }
    assert agents["acme_support"]["consumes"] == ["SupportRequest"]
    assert agents["acme_support"]["publishes"] == ["Case"]
    assert agents["acme_support"]["runs"] >= 1
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["scheduler"] == "running"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "flock_artifacts_published_total" in metrics.text
    who = client.get("/v1/whoami", headers=auth("acme-app")).json()
    assert who == {
        "name": "acme-app",
        "tenant": "acme",
        "labels": [],
        "publish": ["SupportRequest"],
        "operator": False,
    }
    schema = client.get("/openapi.json").json()
    names = set(schema["components"]["schemas"])
    assert {"SupportRequest", "Case", "Escalation", "Resolution", "PublishSupportRequest", "Problem"} <= names
    body = schema["paths"]["/v1/types/SupportRequest/artifacts"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    assert body["schema"] == {"$ref": "#/components/schemas/PublishSupportRequest"}
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_dead_letters_and_redelivery(tmp_path: Path) -> None:
    recipe = tmp_path / "fails.yaml"
    recipe.write_text(
        "name: fails\ntypes:\n  Job: {fields: {n: int}}\n  Done: {fields: {n: int}}\n"
        "agents:\n  worker:\n    consumes: Job\n    publishes: Done\n"
        "    engine: {kind: function, function: helpers_fail:explode}\n"
    )
    (tmp_path / "helpers_fail.py").write_text("def explode(job):\n    raise RuntimeError('boom')\n")
    tokens = {
        "ops": ("tok-ops", {"publish": "*", "operator": True}),
        "reader": ("tok-r", {"publish": ["Job"]}),
    }
    flock = load_recipe(recipe).build(store=SQLiteBlackboardStore(tmp_path / "b.db"), traces=False)
    served = flock.serve(port=0, tokens=token_file(tmp_path, tokens))
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        ops = {"Authorization": "Bearer tok-ops"}
        reader = {"Authorization": "Bearer tok-r"}
        assert (
            client.post("/v1/types/Job/artifacts", json={"payload": {"n": 1}}, headers=reader).status_code
            == 201
        )
        letters: list[dict[str, Any]] = []
        for _ in range(400):
            letters = client.get("/v1/dead-letters", headers=ops).json()
            if letters:
                break
            import time

            time.sleep(0.05)
        assert len(letters) == 1 and letters[0]["agent"] == "worker" and "boom" in letters[0]["error"]
        assert client.get("/v1/dead-letters", headers=reader).json() == letters  # a public Job: it may see it
        letter = letters[0]["id"]
        assert client.post(f"/v1/dead-letters/{letter}/redeliver", headers=reader).status_code == 403
        assert client.post(f"/v1/dead-letters/{uuid.uuid4()}/redeliver", headers=ops).status_code == 404
        assert client.post(f"/v1/dead-letters/{letter}/redeliver", headers=ops).status_code == 202


def test_events_in_order_and_resumed_without_gaps(service: tuple[Any, httpx.Client]) -> None:
    _, client = service
    correlation = str(uuid.uuid4())
    params = {"correlation_id": correlation}

    def done(events: list[dict[str, Any]]) -> bool:
        return any(e["event"] == "run.finished" and e["data"]["agent"] == "acme_analyst" for e in events)

    with client.stream("GET", "/v1/events", params=params, headers=auth("acme-app")) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert publish(client, "acme-app", correlation_id=correlation).status_code == 201
        live = read_events(stream, done)
    kinds = [(e["event"], e["data"].get("agent") or e["data"]["artifact"]["type"]) for e in live]
    # A run's end and its output come from two sources (this process's runs, the board's tail):
    # either may be sent first. Everything else has one order: an artifact before the runs it
    # starts, a run's start before its end.
    middle = {("run.finished", "acme_support"), ("artifact.published", "Case")}
    assert kinds[:2] == [("artifact.published", "SupportRequest"), ("run.started", "acme_support")]
    assert set(kinds[2:4]) == middle
    assert kinds[4:] == [("run.started", "acme_analyst"), ("run.finished", "acme_analyst")]
    published = {
        e["data"]["artifact"]["id"]: i for i, e in enumerate(live) if e["event"] == "artifact.published"
    }
    for i, event in enumerate(live):  # every run comes after the artifacts it works on
        for input_id in event["data"].get("inputs", []):
            assert published[input_id] < i
    # The compliance officer's run is on inputs Acme may not see: not in Acme's stream.
    assert all(e["data"].get("agent") != "compliance_officer" for e in live)

    # A new client of the same correlation gets its artifacts from the start; one that stops after
    # the first and resumes with Last-Event-ID gets the rest: nothing twice, nothing missing.
    def artifacts(events: list[dict[str, Any]]) -> list[str]:
        return [e["data"]["artifact"]["id"] for e in events if e["event"] == "artifact.published"]

    with client.stream("GET", "/v1/events", params=params, headers=auth("acme-app")) as stream:
        first = read_events(stream, lambda events: len(artifacts(events)) == 1)
    with client.stream(
        "GET", "/v1/events", params=params, headers={**auth("acme-app"), "Last-Event-ID": first[-1]["id"]}
    ) as stream:
        rest = read_events(stream, lambda events: len(artifacts(events)) == 1)
    assert artifacts(first) + artifacts(rest) == artifacts(live)
    # An id that is not one of ours (or absurd) is no id: the stream starts as a new one would.
    for junk in ("²:x:1".encode("latin-1"), b"9" * 5000 + b":x:1", b"garbage"):
        headers = {**auth("acme-app"), "Last-Event-ID": junk}
        with client.stream("GET", "/v1/events", params=params, headers=headers) as stream:
            again = read_events(stream, lambda events: len(artifacts(events)) == 2)
        assert artifacts(again) == artifacts(live)[:2]


def test_a_flock_of_types_only_serves_its_api(tmp_path: Path) -> None:
    """A recipe without agents: an API-only service (agents may run in other processes)."""
    from flock_cli import Flock
    from flock_cli.recipe.compiler import register_types

    recipe = tmp_path / "types.yaml"
    recipe.write_text("name: types\ntypes:\n  Note: {fields: {text: str}}\n")
    flock = Flock(store=SQLiteBlackboardStore(tmp_path / "b.db"), role="publisher", traces=False)
    register_types(flock, load_recipe(recipe))
    served = flock.serve(port=0, tokens=token_file(tmp_path, {"w": ("tok-w", {"publish": "*"})}))
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        sent = client.post(
            "/v1/types/Note/artifacts",
            json={"payload": {"text": "hi"}},
            headers={"Authorization": "Bearer tok-w"},
        )
        assert sent.status_code == 201, sent.text


def test_runs_are_read_from_the_trace_store(tmp_path: Path) -> None:
    import time

    flock = load_recipe(RECIPE).build(
        store=SQLiteBlackboardStore(tmp_path / "board.db"),
        engine_override="test",
        traces=tmp_path / "traces.duckdb",
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path))
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert publish(client, "acme-app").status_code == 201
        wait_for(client, "acme-app", {"type": "Case"}, 1)
        assert client.get("/v1/runs", headers=auth("acme-app")).status_code == 403  # operators only
        runs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:  # the trace store is written in the background
            answer = client.get("/v1/runs", headers=auth("ops"))
            runs = answer.json() if answer.status_code == 200 else []
            time.sleep(0.2)
        assert runs, "no run reached the trace store"
        tree = client.get(f"/v1/runs/{runs[0]['run_id']}", headers=auth("ops"))
        assert tree.status_code == 200 and {"run", "tree", "outside", "in_progress"} <= set(tree.json())
        assert client.get("/v1/runs/nope", headers=auth("ops")).status_code == 404
