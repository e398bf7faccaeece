"""Visibility over HTTP: tokens of two tenants, a `compliance` label and an operator read every
artifact of a busy board by every route (list, get, lineage, events); nothing leaks, nothing
visible is withheld, and every refused read is recorded for `flock trace audit`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flock_cli.core.visibility import AgentIdentity
from flock_cli.recipe.loader import load_recipe
from flock_cli.store.contract import UNRESTRICTED, visible
from flock_cli.store.sqlite import SQLiteBlackboardStore
from tests.serve_helpers import ROOT, TOKENS, auth, in_thread, read_events, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

READERS = ("acme-app", "globex-app", "auditor", "ops")


def identity(name: str) -> AgentIdentity:
    fields = TOKENS[name][1]
    return AgentIdentity(
        name=name, tenant_id=fields.get("tenant"), labels=frozenset(fields.get("labels", ()))
    )


def board(path: Path) -> list[Any]:
    async def read() -> list[Any]:
        store = SQLiteBlackboardStore(path)
        try:
            return await store.list(viewer=UNRESTRICTED)
        finally:
            await store.close()

    return asyncio.run(read())


def denials(path: Path) -> list[Any]:
    async def read() -> list[Any]:
        store = SQLiteBlackboardStore(path)
        try:
            return await store.denials()
        finally:
            await store.close()

    return asyncio.run(read())


def test_no_token_reads_what_it_may_not_see(tmp_path: Path) -> None:
    path = tmp_path / "board.db"
    flock = load_recipe(ROOT / "recipes" / "multi_tenant.yaml").build(
        store=SQLiteBlackboardStore(path), engine_override="test", traces=False
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path))
    with in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        for n in range(3):
            for who, customer in (("acme-app", "acme"), ("globex-app", "globex")):
                body = {"payload": {"customer": customer, "subject": f"subject {n}", "body": "b"}}
                assert (
                    client.post(
                        "/v1/types/SupportRequest/artifacts", json=body, headers=auth(who)
                    ).status_code
                    == 201
                )
        extra = [
            ("ops", "labelled:compliance", "acme"),  # acme_support lacks the label: nobody runs on it
            ("ops", "private:compliance_officer", "nobody"),
            ("ops", "public", "nobody"),
            ("ops", "after:1h", "nobody"),  # embargoed for everyone, its publisher too
        ]
        for who, rule, customer in extra:
            body = {"payload": {"customer": customer, "subject": "xyz", "body": "y"}, "visibility": rule}
            answer = client.post("/v1/types/SupportRequest/artifacts", json=body, headers=auth(who))
            assert answer.status_code == 201, answer.text
        expected = 6 * 4 + len(extra)  # each request: a Case, an Escalation and a Resolution
        deadline = time.monotonic() + 30
        while len(everything := board(path)) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(everything) == expected
        attempts = leaks = withheld = 0
        for name in READERS:
            who, headers = identity(name), auth(name)
            now = served.state.store.clock.now()
            allowed = {a.id for a in everything if visible(a, who, now)}
            listed = client.get("/v1/artifacts", params={"limit": 1000}, headers=headers).json()
            attempts += len(everything)
            shown = {item["id"] for item in listed["items"]}
            leaks += len({i for i in shown} - {str(a) for a in allowed})
            withheld += len({str(a) for a in allowed} - shown)
            assert listed["total"] == len(allowed)
            for artifact in everything:
                attempts += 2
                one = client.get(f"/v1/artifacts/{artifact.id}", headers=headers)
                lineage = client.get(f"/v1/artifacts/{artifact.id}/lineage", headers=headers)
                if artifact.id in allowed:
                    withheld += one.status_code != 200
                    related = {*lineage.json()["parents"], *lineage.json()["children"]}
                    leaks += len(related - {str(a) for a in allowed})
                else:
                    leaks += one.status_code != 404
                    leaks += lineage.status_code != 404
            with client.stream("GET", "/v1/events", params={"after": 0}, headers=headers) as stream:
                wanted = len(allowed)
                events = read_events(stream, lambda e, n=wanted: len(e) >= n, limit=20) if allowed else []
            streamed = {e["data"]["artifact"]["id"] for e in events if e["event"] == "artifact.published"}
            attempts += len(everything)
            leaks += len(streamed - {str(a) for a in allowed})
            withheld += len({str(a) for a in allowed} - streamed)
        print(f"visibility over HTTP: {attempts} read attempts, {leaks} leaks, {withheld} withheld")
        assert (leaks, withheld) == (0, 0)
    refused = {d.viewer for d in denials(path)}
    assert {"acme-app", "globex-app", "auditor", "ops"} <= refused
