"""A trace store with fixed ids and times, for dashboard and CLI tests that compare output.

It is written through the ingest path (the same rows a flock's ingest process writes), from
records laid out by hand: a running ``live-demo`` run with finished, failed and retried agent
runs, a pending batch, streamed engine output and a status snapshot, plus an older finished run.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flock_cli.tracing.ingest import Ingest

T0 = 1_795_000_000_000_000_000  # 2026-11-18 (ns); every time below is T0 + offset
NOW = T0 + 6_500_000_000  # the clock the dashboard tests pin: 6.5 s into the live run
RUN = "7e57" + "0" * 27 + "1"
OLD_RUN = "01d0" + "0" * 27 + "2"
PID = 4242


def _uuid(n: int) -> uuid.UUID:
    return uuid.UUID(f"{0xA0000000 + n:08x}-0000-4000-8000-{n:012x}")


def _id(n: int) -> int:
    return _uuid(n).int


def aid(n: int) -> str:
    """The artifact id string of artifact ``n`` (its first 8 characters: ``a00000nn``)."""
    return str(_uuid(n))


def _span(
    span_id: str,
    parent: str | None,
    name: str,
    agent: str | None,
    start_ms: int,
    end_ms: int,
    status: str = "ok",
    message: str | None = None,
    attributes: dict | None = None,
    inputs: list[int] = (),
    outputs: list[int] = (),
    published: list[tuple] = (),
    children: list[tuple] = (),
    trace: str = RUN,
) -> tuple:
    return (
        "S",
        trace,
        span_id,
        parent,
        name,
        "consumer" if name == "agent.run" else "internal",
        agent,
        T0 + start_ms * 1_000_000,
        T0 + end_ms * 1_000_000,
        status,
        message,
        attributes or {},
        [_id(i) for i in inputs],
        [_id(o) for o in outputs],
        list(children),
        list(published),
    )


def _artifact(n: int, type_name: str, by: str, at_ms: int, payload: dict) -> tuple:
    return (_id(n), type_name, by, _id(9000), (T0 + at_ms * 1_000_000) / 1e9, "Public", [], payload)


def seed(path: Path) -> Path:
    """Write the store; returns ``path``."""
    topics = [
        _artifact(i, "Topic", "external", 0, {"title": title})
        for i, title in enumerate(["Tidal energy", "Soil carbon", "Heat pumps"], start=1)
    ]
    items: list[tuple] = [
        (
            "R",
            RUN,
            "a000000000000001",
            "live-demo",
            T0,
            PID,
            "seed-host",
            {"recipe": "recipes/live_demo.yaml"},
        ),
        _span(
            "b000000000000001",
            "a000000000000001",
            "flock.publish",
            None,
            0,
            2,
            attributes={"flock.artifacts": 3},
            outputs=[1, 2, 3],
            published=topics,
            children=[("b00000000000" + "0000", "store.append", T0, T0 + 1_000_000, "ok", None, None)],
        ),
        _span(
            "c000000000000001",
            "b000000000000001",
            "agent.run",
            "researcher",
            5,
            1005,
            attributes={"flock.attempt": 1, "flock.delivery": "d1", "flock.outcome": "ok"},
            inputs=[1],
            outputs=[11],
            published=[
                _artifact(11, "Notes", "researcher", 1004, {"title": "tides", "points": ["moon", "flow"]})
            ],
            children=[
                (
                    "c00000000000" + "0000",
                    "engine.call",
                    T0 + 6_000_000,
                    T0 + 1_003_000_000,
                    "ok",
                    None,
                    {"flock.engine": "TestEngine"},
                )
            ],
        ),
        _span(
            "c000000000000002",
            "b000000000000001",
            "agent.run",
            "researcher",
            5,
            1400,
            "error",
            "TimeoutError: model slow",
            attributes={"flock.attempt": 1, "flock.delivery": "d2", "flock.outcome": "retry"},
            inputs=[2],
        ),
        _span(
            "c000000000000003",
            "b000000000000001",
            "agent.run",
            "researcher",
            2400,
            3400,
            attributes={"flock.attempt": 2, "flock.delivery": "d2", "flock.outcome": "ok"},
            inputs=[2],
            outputs=[12],
            published=[_artifact(12, "Notes", "researcher", 3399, {"title": "soil", "points": ["cover"]})],
        ),
        _span(
            "c000000000000004",
            "c000000000000001",
            "agent.run",
            "critic",
            1010,
            1410,
            "error",
            "ValueError: score out of range",
            attributes={"flock.attempt": 1, "flock.delivery": "d3", "flock.outcome": "failed"},
            inputs=[11],
        ),
        (
            "E",
            RUN,
            "c000000000000002",
            T0 + 1_400_000_000,
            "run.retry",
            "researcher",
            None,
            {"attempt": 1, "delay_s": 1.0, "error": "TimeoutError: model slow"},
        ),
        (
            "E",
            RUN,
            "c000000000000004",
            T0 + 1_411_000_000,
            "dead_letter",
            "critic",
            aid(11),
            {"reason": "failed", "error": "score out of range", "stage": "evaluate"},
        ),
        (
            "E",
            RUN,
            "b000000000000001",
            T0 + 1_000_000,
            "visibility.denied",
            "auditor",
            aid(3),
            {"visibility": "Private(to=editor)", "embargoed_until": None},
        ),
        (
            "E",
            RUN,
            "c000000000000001",
            T0 + 500_000_000,
            "engine.stream",
            "researcher",
            None,
            {"text": "Tides rise twice a day;"},
        ),
        (
            "E",
            RUN,
            "c000000000000001",
            T0 + 900_000_000,
            "engine.stream",
            "researcher",
            None,
            {"text": " the moon pulls the sea."},
        ),
        (
            "T",
            RUN,
            NOW - 400_000_000,
            PID,
            {
                "agents": {
                    "researcher": {"running": 1, "queued": 0, "limit": 2, "iterations": 3},
                    "critic": {"running": 0, "queued": 0, "limit": None, "iterations": 1},
                    "editor": {"running": 0, "queued": 0, "limit": None, "iterations": 0},
                },
                "running": 1,
                "max_concurrency": 4,
                "max_agent_iterations": 1000,
                "pending_groups": [],
                "batches": [{"agent": "editor", "subscription": 0, "items": 2, "size": 4}],
            },
        ),
        ("R", OLD_RUN, "a000000000000002", "code-review", T0 - 3_600_000_000_000, 77, "seed-host", {}),
        _span(
            "e000000000000001",
            "a000000000000002",
            "agent.run",
            "bug_detector",
            -3_600_000,
            -3_599_000,
            attributes={"flock.attempt": 1, "flock.delivery": "d9", "flock.outcome": "ok"},
            trace=OLD_RUN,
        ),
        ("X", OLD_RUN, T0 - 3_599_000_000_000, "ok"),
    ]
    ingest = Ingest(path)
    ingest.add(items)
    problem = ingest.write(wait=10)
    ingest.close()
    assert problem is None, problem
    return path
