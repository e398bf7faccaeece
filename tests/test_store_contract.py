"""The store contract, run against every store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from flock_cli import AgentIdentity, Artifact, only_for
from flock_cli.store import (
    UNRESTRICTED,
    ArtifactQuery,
    BatchEntry,
    BlackboardStore,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    GateEntry,
    InMemoryBlackboardStore,
    RoutingTx,
    RunRecord,
    StaleLeaseError,
)
from flock_cli.store.sqlite import SQLiteBlackboardStore
from tests.models import Task

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlackboardStore]:
    """Each store of the contract: in memory, a SQLite file, a PostgreSQL database of the tests'
    own throwaway server (skipped with the reason when the server binaries are missing)."""
    made: BlackboardStore
    if request.param == "memory":
        made = InMemoryBlackboardStore()
    elif request.param == "sqlite":
        made = SQLiteBlackboardStore(tmp_path / "board.db")
    else:
        from flock_cli.store.postgres import PostgresBlackboardStore

        made = PostgresBlackboardStore(request.getfixturevalue("postgres_url"))
    yield made
    await made.close()


def art(n: int, *, type_: str = "Task", minutes: int = 0, **extra: object) -> Artifact:
    return Artifact(
        type=type_, payload={"n": n, "label": ""}, created_at=T0 + timedelta(minutes=minutes), **extra
    )  # type: ignore[arg-type]


def delivery(agent: str = "a", *ids: object) -> Delivery:
    return Delivery(id=uuid4(), agent=agent, artifact_ids=tuple(ids), created_at=T0)  # type: ignore[arg-type]


async def test_append_and_read_back(store: BlackboardStore) -> None:
    a, b = art(1), art(2, minutes=1)
    await store.append([a, b])
    assert await store.get(a.id) == a
    assert [x.id for x in await store.get_many([b.id, a.id])] == [b.id, a.id]
    assert await store.get(uuid4()) is None
    assert await store.get_by_type(Task) == [Task(n=1), Task(n=2)]


async def test_append_is_all_or_nothing(store: BlackboardStore) -> None:
    a = art(1)
    await store.append([a])
    with pytest.raises(ValueError):
        await store.append([art(2), a])
    assert len(await store.list()) == 1


async def test_query_filters_and_pagination(store: BlackboardStore) -> None:
    corr = uuid4()
    items = [
        art(0, minutes=0, produced_by="x", tags=frozenset({"red", "big"})),
        art(1, minutes=1, produced_by="y", correlation_id=corr),
        art(2, minutes=2, type_="Other", produced_by="x", tags=frozenset({"red"})),
        art(3, minutes=3, produced_by="x", correlation_id=corr),
    ]
    await store.append(items)

    async def ns(**kw: object) -> list[int]:
        return [a.payload["n"] for a in (await store.query(ArtifactQuery(**kw))).items]  # type: ignore[arg-type]

    assert await ns(types=frozenset({"Task"})) == [0, 1, 3]
    assert await ns(types=frozenset({"Task", "Other"})) == [0, 1, 2, 3]
    assert await ns(produced_by=frozenset({"x"})) == [0, 2, 3]
    assert await ns(correlation_id=corr) == [1, 3]
    assert await ns(tags=frozenset({"red"})) == [0, 2]
    assert await ns(tags=frozenset({"red", "big"})) == [0]
    assert await ns(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [1, 2]
    page = await store.query(ArtifactQuery(limit=2, offset=1, newest_first=True))
    assert [a.payload["n"] for a in page.items] == [2, 1] and page.total == 4


async def test_reads_filter_by_viewer_and_record_denials(store: BlackboardStore) -> None:
    secret = art(1, visibility=only_for("alice"))
    await store.append([secret, art(2)])
    alice, bob = AgentIdentity(name="alice"), AgentIdentity(name="bob")
    assert (await store.query(viewer=alice)).total == 2
    assert (await store.query(viewer=bob)).total == 1
    assert await store.get(secret.id, viewer=bob) is None
    assert (await store.query(viewer=UNRESTRICTED)).total == 2
    denied = await store.denials()
    assert {(d.viewer, d.artifact_id, d.where) for d in denied} == {("bob", secret.id, "read")}


async def test_consumptions_are_claimed_once(store: BlackboardStore) -> None:
    a = art(1)
    await store.append([a])
    assert await store.claim_consumption(a.id, "agent") is True
    assert await store.claim_consumption(a.id, "agent") is False
    assert await store.claim_consumption(a.id, "other") is True
    assert await store.consumers_of(a.id) == {"agent", "other"}


async def test_lease_complete_and_fencing(store: BlackboardStore) -> None:
    a = art(1)
    await store.append([a])
    d = delivery("agent", a.id)
    await store.add_delivery(d)
    first = await store.lease(d.id, "p1", now=T0, ttl=10)
    assert first is not None and first.attempts == 1 and first.status == DeliveryStatus.LEASED
    assert await store.lease(d.id, "p2", now=T0 + timedelta(seconds=5), ttl=10) is None  # lease alive
    second = await store.lease(d.id, "p2", now=T0 + timedelta(seconds=11), ttl=10)  # expired: reclaimed
    assert second is not None and second.attempts == 2 and second.lease_owner == "p2"
    late_output = art(99)
    with pytest.raises(StaleLeaseError):
        await store.complete(d.id, 1, [late_output])  # the dead holder's late completion
    assert await store.get(late_output.id, viewer=UNRESTRICTED) is None
    output = art(2)
    await store.complete(d.id, 2, [output])
    done = await store.get_delivery(d.id)
    assert done is not None and done.status == DeliveryStatus.DONE
    assert await store.get(output.id) == output
    assert await store.lease(d.id, "p3", now=T0 + timedelta(days=1), ttl=10) is None
    with pytest.raises(StaleLeaseError):
        await store.complete(d.id, 2, [])


async def test_outputs_named_routed_are_stored_routed_and_the_rest_wait_for_routing(
    store: BlackboardStore,
) -> None:
    d = delivery("agent")
    await store.add_delivery(d)
    leased = await store.lease(d.id, "p", now=T0, ttl=10)
    assert leased is not None
    terminal, onward = art(1), art(2)
    await store.complete(d.id, leased.attempts, [terminal, onward], routed={terminal.id})
    assert [x.id for x in await store.unrouted()] == [onward.id]
    assert await store.get(terminal.id) == terminal  # stored all the same


async def test_release_for_retry_and_dead(store: BlackboardStore) -> None:
    d = delivery("agent")
    await store.add_delivery(d)
    leased = await store.lease(d.id, "p", now=T0, ttl=10)
    assert leased is not None
    await store.release(d.id, leased.attempts)
    assert [x.id for x in await store.deliveries(status=DeliveryStatus.PENDING)] == [d.id]
    again = await store.lease(d.id, "p", now=T0, ttl=10)
    assert again is not None and again.attempts == 2
    await store.release(d.id, 2, dead=True)
    assert [x.id for x in await store.deliveries(status=DeliveryStatus.DEAD)] == [d.id]
    with pytest.raises(StaleLeaseError):
        await store.release(d.id, 2)


async def test_dead_letters(store: BlackboardStore) -> None:
    letter = DeadLetter(
        id=uuid4(),
        agent="a",
        artifact_ids=(uuid4(),),
        reason="failed",
        error="boom",
        created_at=T0,
        attempts=3,
    )
    await store.add_dead_letter(letter)
    assert await store.dead_letters() == [letter]
    assert await store.take_dead_letter(letter.id) == letter
    assert await store.take_dead_letter(letter.id) is None
    assert await store.dead_letters() == []


async def test_commit_routing_is_atomic(store: BlackboardStore) -> None:
    a, b = art(1), art(2)
    await store.append([a, b])
    assert [x.id for x in await store.unrouted()] == [a.id, b.id]
    d = delivery("agent", a.id)
    tx = RoutingTx(
        routed=[a.id],
        claims=[(a.id, "agent")],
        deliveries=[d],
        gate_adds=[GateEntry(sub_key="g#0", artifact_id=b.id, arrived_at=T0)],
        batch_adds=[BatchEntry(sub_key="b#0", artifact_ids=(a.id,), arrived_at=T0)],
    )
    await store.commit_routing(tx)
    await store.sync()
    assert [x.id for x in await store.unrouted()] == [b.id]
    assert await store.consumers_of(a.id) == {"agent"}
    assert (await store.get_delivery(d.id)) is not None
    assert [e.artifact_id for e in await store.gate_entries()] == [b.id]
    assert [e.artifact_ids for e in await store.batch_entries()] == [(a.id,)]
    clash = RoutingTx(
        routed=[b.id],
        claims=[(a.id, "agent")],
        deliveries=[delivery("agent", b.id)],
        gate_removes=[("g#0", b.id)],
        batch_clears=["b#0"],
    )
    with pytest.raises(ValueError, match="already claimed"):
        await store.commit_routing(clash)
        await store.sync()
    assert [x.id for x in await store.unrouted()] == [b.id]  # nothing of the failed step applied
    assert [e.artifact_id for e in await store.gate_entries()] == [b.id]
    assert len(await store.batch_entries()) == 1
    await store.commit_routing(RoutingTx(routed=[b.id], gate_removes=[("g#0", b.id)], batch_clears=["b#0"]))
    await store.sync()
    assert (
        await store.unrouted() == []
        and await store.gate_entries() == []
        and await store.batch_entries() == []
    )


async def test_release_leases_of_a_dead_owner_keeps_fencing(store: BlackboardStore) -> None:
    d = delivery("agent")
    await store.add_delivery(d)
    leased = await store.lease(d.id, "dead", now=T0, ttl=300)
    assert leased is not None
    assert await store.release_leases("dead") == 1
    again = await store.lease(d.id, "alive", now=T0, ttl=300)
    assert again is not None and again.attempts == 2
    with pytest.raises(StaleLeaseError):
        await store.complete(d.id, 1, [])


async def test_lineage_and_summaries(store: BlackboardStore) -> None:
    seed = art(0, produced_by="external")
    await store.append([seed])
    first = delivery("a", seed.id)
    await store.add_delivery(first)
    await store.lease(first.id, "p", now=T0, ttl=10)
    middle = art(1, produced_by="a")
    await store.complete(first.id, 1, [middle])
    second = delivery("b", middle.id)
    await store.add_delivery(second)
    await store.lease(second.id, "p", now=T0, ttl=10)
    leaves = [art(2, produced_by="b", type_="Other"), art(3, produced_by="b", type_="Other")]
    await store.complete(second.id, 1, leaves)
    lineage = await store.lineage(middle.id)
    assert lineage.parents == [seed.id]
    assert lineage.children == [leaves[0].id, leaves[1].id]
    assert (await store.lineage(seed.id)).children == [middle.id, leaves[0].id, leaves[1].id]
    assert (await store.lineage(leaves[1].id)).parents == [middle.id, seed.id]
    summary = await store.summarize()
    assert summary.total == 4
    assert summary.by_type == {"Task": 2, "Other": 2}
    assert summary.by_producer == {"external": 1, "a": 1, "b": 2}


async def test_lineage_hides_what_the_viewer_may_not_see(store: BlackboardStore) -> None:
    # seed (public) -> secret (only alice) -> leaf (public): a chain through a hidden artifact.
    seed = art(0, produced_by="external")
    await store.append([seed])
    first = delivery("a", seed.id)
    await store.add_delivery(first)
    await store.lease(first.id, "p", now=T0, ttl=10)
    secret = art(1, produced_by="a", visibility=only_for("alice"))
    await store.complete(first.id, 1, [secret])
    second = delivery("b", secret.id)
    await store.add_delivery(second)
    await store.lease(second.id, "p", now=T0, ttl=10)
    leaf = art(2, produced_by="b")
    await store.complete(second.id, 1, [leaf])
    alice, bob = AgentIdentity(name="alice"), AgentIdentity(name="bob")

    assert (await store.lineage(seed.id, viewer=alice)).children == [secret.id, leaf.id]
    assert (await store.lineage(seed.id, viewer=UNRESTRICTED)).children == [secret.id, leaf.id]
    # bob sees the leaf (public) but not the secret it came through; the default viewer neither.
    assert (await store.lineage(seed.id, viewer=bob)).children == [leaf.id]
    assert (await store.lineage(leaf.id, viewer=bob)).parents == [seed.id]
    assert (await store.lineage(leaf.id)).parents == [seed.id]
    # The lineage of an artifact the viewer may not see tells nothing about it.
    hidden = await store.lineage(secret.id, viewer=bob)
    assert hidden.parents == [] and hidden.children == []
    assert (await store.lineage(secret.id, viewer=alice)).parents == [seed.id]
    refused = {(d.viewer, d.artifact_id, d.where) for d in await store.denials()}
    assert refused == {("bob", secret.id, "read"), ("external", secret.id, "read")}


async def test_run_records(store: BlackboardStore) -> None:
    run = RunRecord(id=uuid4(), fingerprint="abc", owner="o", pid=1, host="h", started_at=T0, heartbeat_at=T0)
    await store.save_run(run)
    finished = run.model_copy(update={"status": "finished", "ended_at": T0 + timedelta(seconds=5)})
    await store.save_run(finished)
    assert await store.runs() == [finished]


async def test_bury_marks_dead_and_keeps_the_letter_together(store: BlackboardStore) -> None:
    pending, leased = delivery("a"), delivery("a")
    await store.add_delivery(pending)
    await store.add_delivery(leased)
    held = await store.lease(leased.id, "p", now=T0, ttl=10)
    assert held is not None

    def letter(d: Delivery) -> DeadLetter:
        return DeadLetter(
            id=uuid4(), agent="a", artifact_ids=(), reason="failed", created_at=T0, delivery_id=d.id
        )

    with pytest.raises(StaleLeaseError):
        await store.bury(leased.id, None, letter(leased))  # leased, not pending
    with pytest.raises(StaleLeaseError):
        await store.bury(leased.id, held.attempts + 1, letter(leased))  # wrong fence
    assert await store.dead_letters() == []
    await store.bury(pending.id, None, letter(pending))
    await store.bury(leased.id, held.attempts, letter(leased))
    assert {d.id for d in await store.deliveries(status=DeliveryStatus.DEAD)} == {pending.id, leased.id}
    assert len(await store.dead_letters()) == 2


async def test_queries_over_several_types_keep_insertion_order(store: BlackboardStore) -> None:
    late, early = art(1, type_="A", minutes=5), art(2, type_="B", minutes=1)
    await store.append([late])
    await store.append([early])  # appended second, although created earlier
    page = await store.query(ArtifactQuery(types=frozenset({"A", "B"})))
    assert [a.payload["n"] for a in page.items] == [1, 2]
