from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest

from flock_cli import Flock, FunctionEngine, InvalidDeclarationError, TestEngine
from tests.helpers import Echo
from tests.models import BugReport, Idea, Movie, Result, SecurityReport, Tagline, Task


def collecting(store: list) -> FunctionEngine:
    return FunctionEngine(lambda inputs: store.append([(a.type, a.payload) for a in inputs.artifacts]))


async def test_and_gate_waits_for_all_types_in_any_order(flock: Flock) -> None:
    runs: list = []
    flock.agent("reviewer").consumes(BugReport, SecurityReport).with_engines(collecting(runs))
    one = uuid4()  # one submission's reports
    await flock.publish(SecurityReport(vulnerabilities=["x"], risk="Low"), correlation_id=one)
    summary = await flock.run_until_idle()
    assert runs == [] and summary.agent_runs == 0
    assert summary.pending_groups[0].missing == ["BugReport"]
    await flock.publish(BugReport(bugs=["b"], severity="High"), correlation_id=one)
    await flock.run_until_idle()
    assert [sorted(t for t, _ in run) for run in runs] == [["BugReport", "SecurityReport"]]


async def test_and_gate_does_not_reuse_artifacts_across_completions(flock: Flock) -> None:
    runs: list = []
    flock.agent("reviewer").consumes(BugReport, SecurityReport).with_engines(collecting(runs))
    one = uuid4()
    await flock.publish(BugReport(bugs=["1"], severity="High"), correlation_id=one)
    await flock.publish(BugReport(bugs=["2"], severity="High"), correlation_id=one)
    await flock.publish(SecurityReport(vulnerabilities=[], risk="Low"), correlation_id=one)
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert runs[0][0] == ("BugReport", {"bugs": ["1"], "severity": "High"})
    assert summary.pending_groups[0].missing == ["SecurityReport"]


async def test_and_gate_never_pairs_artifacts_of_different_workflows(flock: Flock) -> None:
    """The design's headline gate, three submissions at once: each review gets its own
    submission's two reports, whatever order the reports arrive in."""
    runs: list = []
    flock.agent("reviewer").consumes(BugReport, SecurityReport).with_engines(collecting(runs))
    a, b, c = uuid4(), uuid4(), uuid4()
    await flock.publish(BugReport(bugs=["a"], severity="Low"), correlation_id=a)
    await flock.publish(BugReport(bugs=["b"], severity="Low"), correlation_id=b)
    await flock.publish(SecurityReport(vulnerabilities=["c"], risk="Low"), correlation_id=c)
    await flock.publish(SecurityReport(vulnerabilities=["b"], risk="Low"), correlation_id=b)
    await flock.publish(BugReport(bugs=["c"], severity="Low"), correlation_id=c)
    summary = await flock.run_until_idle()
    pairs = [{p.get("bugs", p.get("vulnerabilities"))[0] for _, p in run} for run in runs]
    assert pairs == [{"b"}, {"c"}]
    assert [g.missing for g in summary.pending_groups] == [["SecurityReport"]]


async def test_join_by_arrival_pairs_across_workflows_first_in_first_out(flock: Flock) -> None:
    runs: list = []
    flock.agent("reviewer").consumes(BugReport, SecurityReport, join={"by": "arrival"}).with_engines(
        collecting(runs)
    )
    await flock.publish(BugReport(bugs=["1"], severity="High"))
    await flock.publish(BugReport(bugs=["2"], severity="High"))
    await flock.publish(SecurityReport(vulnerabilities=["x"], risk="Low"))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert runs[0][0] == ("BugReport", {"bugs": ["1"], "severity": "High"})


async def test_count_gate_needs_the_repeated_count(flock: Flock) -> None:
    runs: list = []
    flock.agent("pair").consumes(Task, Task).with_engines(collecting(runs))
    one = uuid4()
    await flock.publish(Task(n=1), correlation_id=one)
    assert (await flock.run_until_idle()).agent_runs == 0
    await flock.publish(Task(n=9))  # another workflow: never counted with the others
    await flock.publish(Task(n=2), correlation_id=one)
    await flock.publish(Task(n=3), correlation_id=one)
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert [p["n"] for _, p in runs[0]] == [1, 2]


async def test_chained_consumes_is_or_and_each_artifact_runs_once_per_agent(flock: Flock) -> None:
    runs: list = []
    (
        flock.agent("either")
        .consumes(Idea)
        .consumes(Task)
        .consumes(Task, where=lambda t: t.n > 0)
        .with_engines(collecting(runs))
    )
    await flock.publish(Idea(topic="a"))
    await flock.publish(Task(n=5))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 2
    assert sorted(run[0][0] for run in runs) == ["Idea", "Task"]


async def test_where_predicates_all_must_pass_and_raising_ones_are_recorded(flock: Flock) -> None:
    runs: list = []

    def boom(t: Task) -> bool:
        raise ZeroDivisionError("bad predicate")

    flock.agent("big").consumes(Task, where=[lambda t: t.n > 1, lambda t: t.n < 10]).with_engines(
        collecting(runs)
    )
    flock.agent("broken").consumes(Task, where=boom).with_engines(collecting(runs))
    for n in (0, 5, 20):
        await flock.publish(Task(n=n))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert runs == [[("Task", {"n": 5, "label": ""})]]
    assert summary.filtered["where"] == 2
    assert len(summary.predicate_errors) == 3
    assert summary.predicate_errors[0].agent == "broken"
    assert "ZeroDivisionError: bad predicate" in summary.predicate_errors[0].error


async def test_from_agents_and_channels(flock: Flock) -> None:
    runs: list = []
    flock.agent("producer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    flock.agent("only_from_producer").consumes(Movie, from_agents="producer").with_engines(collecting(runs))
    flock.agent("scifi").consumes(Task, channels=["sci-fi", "space"]).with_engines(collecting(runs))
    await flock.publish(Movie(title="Direct", runtime=100))  # external: filtered
    await flock.publish(Idea(topic="x"))  # producer makes a Movie: accepted
    await flock.publish(Task(n=1), tags={"drama"})
    await flock.publish(Task(n=2), tags={"space", "drama"})
    summary = await flock.run_until_idle()
    types = sorted((run[0][0], run[0][1].get("n")) for run in runs)
    assert types == [("Movie", None), ("Task", 2)]
    assert summary.filtered == {"from_agents": 1, "channels": 1}


async def test_mode_events_and_direct(flock: Flock) -> None:
    runs: list = []
    flock.agent("direct_only").consumes(Task, mode="direct").publishes(Result).with_engines(Echo())
    flock.agent("events_only").consumes(Idea, mode="events").with_engines(collecting(runs))
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 0
    outputs = await flock.arun("direct_only", Task(n=2))
    assert [o.payload["n"] for o in outputs] == [2]
    with pytest.raises(InvalidDeclarationError, match="mode 'direct' or 'both'"):
        await flock.arun("events_only", Idea(topic="x"))


async def test_priority_orders_runs_when_slots_are_scarce() -> None:
    flock = Flock(max_concurrency=1)
    order: list[str] = []

    def note(name: str) -> FunctionEngine:
        async def fn(inputs):
            order.append(name)
            await asyncio.sleep(0)

        return FunctionEngine(fn)

    flock.agent("blocker").consumes(Idea).with_engines(note("blocker"))
    flock.agent("low").consumes(Task, priority=1).with_engines(note("low"))
    flock.agent("high").consumes(Task, priority=10).with_engines(note("high"))
    flock.agent("mid").consumes(Task, priority=5).with_engines(note("mid"))
    await flock.publish(Idea(topic="hold the only slot"))
    await flock.publish(Task(n=1))
    await flock.run_until_idle()
    assert order == ["blocker", "high", "mid", "low"]


async def test_different_agents_all_run_with_default_delivery(flock: Flock) -> None:
    for name in ("a", "b", "c"):
        flock.agent(name).consumes(Task).publishes(Result).with_engines(Echo())
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"a": 1, "b": 1, "c": 1}


async def test_exclusive_group_processes_each_artifact_once(flock: Flock) -> None:
    for name in ("w1", "w2", "w3"):
        (
            flock.agent(name)
            .consumes(Task, delivery="exclusive", group="workers")
            .publishes(Result)
            .with_engines(Echo())
            .max_concurrency(2)
        )
    flock.agent("auditor").consumes(Task).publishes(Result).with_engines(Echo())
    await flock.publish_many([Task(n=i) for i in range(30)])
    summary = await flock.run_until_idle()
    results = await flock.store.get_by_type(Result)
    by_workers = sorted(r.n for r in results if r.by != "auditor")
    assert by_workers == list(range(30))  # each task exactly once across the group
    assert summary.runs_by_agent["auditor"] == 30
    assert sum(summary.runs_by_agent[w] for w in ("w1", "w2", "w3")) == 30
    assert all(summary.runs_by_agent[w] > 0 for w in ("w1", "w2", "w3"))  # work was spread


async def test_exclusive_group_highest_priority_claims_first(flock: Flock) -> None:
    flock.agent("cheap").consumes(Task, group="g", priority=1).publishes(Result).with_engines(Echo())
    flock.agent("best").consumes(Task, group="g", priority=9).publishes(Result).with_engines(Echo())
    await flock.publish(Task(n=1))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"best": 1}


async def test_shared_delivery_and_invalid_options() -> None:
    flock = Flock()
    flock.agent("s").consumes(Task, delivery="shared").publishes(Result).with_engines(Echo())
    with pytest.raises(InvalidDeclarationError, match="group= only applies"):
        flock.agent("x").consumes(Task, delivery="shared", group="g")
    with pytest.raises(InvalidDeclarationError, match="delivery must be"):
        flock.agent("y").consumes(Task, delivery="broadcast")
    with pytest.raises(InvalidDeclarationError, match="mode must be"):
        flock.agent("z").consumes(Task, mode="streaming")
    with pytest.raises(InvalidDeclarationError, match="semantic text filters"):
        flock.agent("t").consumes(Task, text="about cats", min_p=0.5)
    with pytest.raises(InvalidDeclarationError, match="batch"):
        flock.agent("b").consumes(Task, batch={"size": 3, "whithin": 1})
    flock.agent("g1").consumes(Task, group="pool")
    with pytest.raises(InvalidDeclarationError, match="shared groups take single-type"):
        flock.agent("g2").consumes(Task, group="pool", batch={"size": 2})


async def test_prevent_self_trigger_default_and_opt_out(flock: Flock) -> None:
    async def bump(inputs):
        t = inputs.first_as(Task)
        return Task(n=t.n + 1) if t.n < 3 else None

    flock.agent("self_loop").consumes(Task).publishes(Task).with_engines(FunctionEngine(bump))
    await flock.publish(Task(n=0))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1 and summary.filtered == {"self": 1}

    other = Flock()
    other.agent("self_loop").consumes(Task).publishes(Task).with_engines(
        FunctionEngine(bump)
    ).prevent_self_trigger(False)
    await other.publish(Task(n=0))
    assert (await other.run_until_idle()).agent_runs == 4


async def test_idempotency_each_pair_runs_once_even_when_routed_twice(flock: Flock) -> None:
    flock.agent("a").consumes(Task).publishes(Result).with_engines(Echo())
    artifact = await flock.publish(Task(n=1))
    await flock._scheduler.route([artifact])  # a second delivery attempt of the same artifact
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert await flock.store.consumers_of(artifact.id) == {"a"}


async def test_tagline_cascade_through_string_type_names(flock: Flock) -> None:
    flock.register_type(Movie)
    flock.register_type(Tagline)
    flock.agent("t").consumes("Movie").publishes("Tagline").with_engines(TestEngine())
    await flock.publish_external("Movie", {"title": "Alien", "runtime": 117})
    summary = await flock.run_until_idle()
    assert summary.artifacts_published == 2
    assert len(await flock.store.get_by_type(Tagline)) == 1
