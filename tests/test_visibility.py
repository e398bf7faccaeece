from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flock_cli import (
    AfterVisibility,
    AgentIdentity,
    Flock,
    FunctionEngine,
    LabelledVisibility,
    ManualClock,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    TestEngine,
    only_for,
)
from flock_cli.errors import UsageError
from flock_cli.store import UNRESTRICTED
from tests.models import Idea, Movie, Task

NOW = datetime(2025, 1, 1, tzinfo=UTC)
alice = AgentIdentity(name="alice", labels=frozenset({"clearance:secret"}), tenant_id="acme")
bob = AgentIdentity(name="bob", tenant_id="globex")


def test_the_five_kinds() -> None:
    assert PublicVisibility().allows(bob, now=NOW)
    assert only_for("alice").allows(alice, now=NOW) and not only_for("alice").allows(bob, now=NOW)
    secret = LabelledVisibility(required_labels=frozenset({"clearance:secret"}))
    assert secret.allows(alice, now=NOW) and not secret.allows(bob, now=NOW)
    acme = TenantVisibility(tenant_id="acme")
    assert acme.allows(alice, now=NOW) and not acme.allows(bob, now=NOW)
    embargo = AfterVisibility(ttl=timedelta(hours=24), then=only_for("bob")).bind(NOW)
    assert not embargo.allows(bob, now=NOW + timedelta(hours=23))
    assert embargo.allows(bob, now=NOW + timedelta(hours=24))
    assert not embargo.allows(alice, now=NOW + timedelta(hours=25))


async def test_scheduling_respects_visibility_and_records_denials(flock: Flock) -> None:
    seen: list[str] = []
    for name, labels, tenant in [
        ("public_agent", (), None),
        ("secret_agent", ("clearance:secret",), None),
        ("acme_agent", (), "acme"),
    ]:
        b = flock.agent(name).consumes(Task).with_engines(FunctionEngine(lambda i, c: seen.append(c.agent)))
        if labels:
            b.labels(*labels)
        if tenant:
            b.tenant(tenant)
    await flock.publish(
        Task(n=1), visibility=LabelledVisibility(required_labels=frozenset({"clearance:secret"}))
    )
    await flock.publish(Task(n=2), visibility=TenantVisibility(tenant_id="acme"))
    await flock.publish(Task(n=3), visibility=only_for("public_agent"))
    summary = await flock.run_until_idle()
    assert sorted(seen) == ["acme_agent", "public_agent", "secret_agent"]
    assert summary.visibility_denials == 6
    denials = await flock.store.denials()
    assert {(d.viewer, d.where) for d in denials if d.visibility.startswith("Tenant")} == {
        ("public_agent", "schedule"),
        ("secret_agent", "schedule"),
    }


async def test_labels_and_tenant_changed_between_runs_take_effect(flock: Flock) -> None:
    seen: list[tuple[str, str | None]] = []
    builder = (
        flock.agent("clerk")
        .consumes(Task)
        .with_engines(
            FunctionEngine(lambda i, c: seen.append((c.identity.tenant_id, i.artifacts[0].payload["n"])))
        )
    )
    secret = LabelledVisibility(required_labels=frozenset({"clearance:secret"}))
    await flock.publish(Task(n=1), visibility=secret)
    await flock.run_until_idle()
    assert seen == []  # no clearance yet
    builder.labels("clearance:secret")
    await flock.publish(Task(n=2), visibility=secret)
    await flock.publish(Task(n=3), visibility=TenantVisibility(tenant_id="acme"))
    await flock.run_until_idle()
    assert seen == [(None, 2)]
    builder.tenant("acme")
    await flock.publish(Task(n=4), visibility=TenantVisibility(tenant_id="acme"))
    await flock.run_until_idle()
    assert seen == [(None, 2), ("acme", 4)]


async def test_publishes_only_for_makes_outputs_private(flock: Flock) -> None:
    got: list[str] = []
    flock.agent("writer").consumes(Idea).publishes(Movie).only_for("reader").with_engines(TestEngine())
    flock.agent("reader").consumes(Movie).with_engines(FunctionEngine(lambda i, c: got.append(c.agent)))
    flock.agent("snoop").consumes(Movie).with_engines(FunctionEngine(lambda i, c: got.append(c.agent)))
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    assert got == ["reader"]
    movie = (await flock.store.list(viewer=UNRESTRICTED))[-1]
    assert movie.visibility == PrivateVisibility(agents=frozenset({"reader"}))


async def test_every_read_path_filters(flock: Flock) -> None:
    secret = await flock.publish(Task(n=1), visibility=only_for("alice"))
    public = await flock.publish(Task(n=2))
    store = flock.store
    assert [a.id for a in await store.list()] == [public.id]  # default viewer: external
    assert [a.id for a in await store.list(viewer=alice)] == [secret.id, public.id]
    assert await store.get(secret.id, viewer=bob) is None
    assert await store.get_by_type(Task, viewer=bob) == [Task(n=2)]
    assert (await store.query(viewer=bob)).total == 1
    assert (await store.query(viewer=UNRESTRICTED)).total == 2
    reads = [d for d in await store.denials() if d.where == "read"]
    assert {d.viewer for d in reads} == {"external", "bob"}


async def test_ctx_board_only_shows_what_the_agent_may_see(flock: Flock) -> None:
    views: dict[str, int] = {}

    async def look(inputs, ctx):
        views[ctx.agent] = len(await ctx.board.list())

    await flock.publish(Idea(topic="private"), visibility=only_for("insider"))
    flock.agent("insider").consumes(Task).with_engines(FunctionEngine(look))
    flock.agent("outsider").consumes(Task).with_engines(FunctionEngine(look))
    await flock.publish(Task(n=1))
    await flock.run_until_idle()
    assert views == {"insider": 2, "outsider": 1}


async def test_embargoed_artifact_is_delivered_when_the_embargo_lifts(
    flock: Flock, clock: ManualClock
) -> None:
    got: list[int] = []
    flock.agent("a").consumes(Task).with_engines(FunctionEngine(lambda i: got.append(i.first_as(Task).n)))
    flock.agent("never").consumes(Task).with_engines(FunctionEngine(lambda i: got.append(-1)))
    vis = AfterVisibility(ttl=timedelta(hours=1), then=only_for("a"))
    await flock.publish(Task(n=7), visibility=vis)
    summary = await flock.run_until_idle()
    assert got == [] and summary.embargoed == 1 and summary.visibility_denials == 1  # `never`'s
    assert [e.agent for e in summary.pending_embargoes] == ["a"]
    await clock.advance(3600)
    await flock.run_until_idle()
    assert got == [7]


async def test_a_run_whose_agent_may_no_longer_see_its_input_is_refused_and_kept(flock: Flock) -> None:
    """The last line of defence: whatever handed a delivery over, an agent that may not see its
    input never runs on it; the delivery is kept as a ``denied`` dead letter."""
    import asyncio

    gate = asyncio.Event()
    seen: list[int] = []

    async def handle(inputs, ctx):
        seen.append(inputs.first_as(Task).n)
        await gate.wait()

    desk = flock.agent("desk").tenant("acme").max_concurrency(1).consumes(Task)
    desk.with_engines(FunctionEngine(handle))
    await flock.publish(Task(n=1), visibility=TenantVisibility(tenant_id="acme"))
    await flock.publish(Task(n=2), visibility=TenantVisibility(tenant_id="acme"))  # queued behind n=1
    await asyncio.sleep(0)
    desk.tenant("globex")  # the agent changes tenant while its second run waits for a slot
    gate.set()
    summary = await flock.run_until_idle()
    assert seen == [1]
    assert [letter.reason for letter in summary.dead_letters] == ["denied"]
    assert "'desk' may not see" in (summary.dead_letters[0].error or "")
    assert not summary.ok
    with pytest.raises(UsageError, match="may see its artifacts"):
        await flock.retry_dead_letter(summary.dead_letters[0].id)  # still refused, and kept
    assert [letter.id for letter in await flock.dead_letters()] == [summary.dead_letters[0].id]
