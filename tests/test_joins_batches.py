from __future__ import annotations

from flock_cli import BatchSpec, Flock, FunctionEngine, JoinSpec, ManualClock
from tests.models import BugReport, SecurityReport, Task


def recording(runs: list) -> FunctionEngine:
    def fn(inputs, ctx):
        runs.append(
            {
                "n": sorted(a.payload.get("n", -1) for a in inputs.artifacts),
                "batch": ctx.is_batch,
                "trigger": ctx.batch_trigger,
                "groups": len(inputs.groups),
                "types": sorted(a.type for a in inputs.artifacts),
            }
        )

    return FunctionEngine(fn)


async def test_join_correlates_by_correlation_id(flock: Flock) -> None:
    runs: list = []
    flock.agent("r").consumes(
        BugReport, SecurityReport, join={"kind": "all_of", "window": 30.0}
    ).with_engines(recording(runs))
    a, b = flock._new_id(), flock._new_id()
    await flock.publish(BugReport(bugs=[], severity="Low"), correlation_id=a)
    await flock.publish(SecurityReport(vulnerabilities=[], risk="Low"), correlation_id=b)
    assert (await flock.run_until_idle()).agent_runs == 0
    await flock.publish(SecurityReport(vulnerabilities=[], risk="High"), correlation_id=a)
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1
    assert [p.key for p in summary.pending_groups] == [str(b)]


async def test_join_window_expiry_is_reported(flock: Flock, clock: ManualClock) -> None:
    runs: list = []
    flock.agent("r").consumes(BugReport, SecurityReport, join=JoinSpec(window=30.0)).with_engines(
        recording(runs)
    )
    bug = await flock.publish(BugReport(bugs=[], severity="Low"))
    await flock.run_until_idle()
    await clock.advance(29)
    assert (await flock.run_until_idle()).expired_groups == []
    await clock.advance(2)
    summary = await flock.run_until_idle()
    assert len(summary.expired_groups) == 1
    expired = summary.expired_groups[0]
    assert expired.agent == "r" and expired.reason == "window"
    assert expired.artifact_ids == [bug.id] and expired.missing == ["SecurityReport"]
    # the partner arriving late starts a new group instead of completing the expired one
    await flock.publish(SecurityReport(vulnerabilities=[], risk="Low"), correlation_id=bug.correlation_id)
    assert (await flock.run_until_idle()).agent_runs == 0


async def test_join_count_window(flock: Flock) -> None:
    flock.agent("r").consumes(BugReport, SecurityReport, join={"count_window": 3}).with_engines(recording([]))
    first = await flock.publish(BugReport(bugs=[], severity="Low"))
    for _ in range(2):
        await flock.publish(BugReport(bugs=[], severity="Low"))
    assert (await flock.run_until_idle()).expired_groups == []  # two later arrivals: still open
    await flock.publish(BugReport(bugs=[], severity="Low"))
    summary = await flock.run_until_idle()
    assert [g.artifact_ids for g in summary.expired_groups] == [[first.id]]
    assert summary.expired_groups[0].reason == "count_window"


async def test_join_by_key_function(flock: Flock) -> None:
    runs: list = []
    flock.agent("pairs").consumes(Task, Task, join=JoinSpec(by=lambda t: t.label)).with_engines(
        recording(runs)
    )
    for n, label in [(1, "x"), (2, "y"), (3, "x"), (4, "y")]:
        await flock.publish(Task(n=n, label=label))
    await flock.run_until_idle()
    assert sorted(r["n"] for r in runs) == [[1, 3], [2, 4]]


async def test_batch_flushes_on_size(flock: Flock) -> None:
    runs: list = []
    flock.agent("b").consumes(Task, batch={"size": 3}).with_engines(recording(runs))
    await flock.publish_many([Task(n=i) for i in range(7)])
    summary = await flock.run_until_idle()
    assert [r["n"] for r in runs] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [r["trigger"] for r in runs] == ["size", "size", "idle"]
    assert all(r["batch"] for r in runs)
    assert summary.agent_runs == 3


async def test_batch_flushes_on_time(flock: Flock, clock: ManualClock) -> None:
    runs: list = []
    flock.agent("b").consumes(Task, batch=BatchSpec(size=10, within=5.0)).with_engines(recording(runs))
    await flock.publish_many([Task(n=1), Task(n=2)])
    await clock.advance(5)
    await flock.run_until_idle()
    assert runs == [
        {"n": [1, 2], "batch": True, "trigger": "timeout", "groups": 0, "types": ["Task", "Task"]}
    ]


async def test_partial_batch_flushed_at_shutdown(flock: Flock) -> None:
    runs: list = []
    flock.agent("b").consumes(Task, batch={"size": 10, "within": 60}).with_engines(recording(runs))
    await flock.publish_many([Task(n=1), Task(n=2)])
    summary = await flock.shutdown()
    assert runs[0]["trigger"] == "shutdown" and runs[0]["n"] == [1, 2]
    assert summary.agent_runs == 1


async def test_batches_of_completed_join_groups(flock: Flock) -> None:
    runs: list = []
    flock.agent("jb").consumes(
        BugReport, SecurityReport, join={"window": 60}, batch={"size": 2}
    ).with_engines(recording(runs))
    for _ in range(2):
        c = flock._new_id()
        await flock.publish(BugReport(bugs=[], severity="Low"), correlation_id=c)
        await flock.publish(SecurityReport(vulnerabilities=[], risk="Low"), correlation_id=c)
    await flock.run_until_idle()
    assert len(runs) == 1
    assert runs[0]["groups"] == 2 and len(runs[0]["types"]) == 4 and runs[0]["trigger"] == "size"
