"""flock top: the dashboard, driven headless with Textual's Pilot and compared with snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from flock_cli.dashboard.app import ArtifactScreen, FlockTop
from flock_cli.tracing.reader import TraceReader
from tests.trace_seed import NOW, aid, seed

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen are local: pin the zone so snapshots match on every machine."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield seed(tmp_path_factory.mktemp("top") / "traces.duckdb")


def _app(store: Path, run: str | None = None) -> FlockTop:
    return FlockTop(TraceReader(store), run, poll_interval=None, now_ns=lambda: NOW)


def _cells(app: FlockTop, table: str) -> list[list[str]]:
    widget = app.query_one(table, DataTable)
    return [[str(cell) for cell in widget.get_row_at(i)] for i in range(widget.row_count)]


async def test_agents_panel_shows_state_counts_and_concurrency(store: Path) -> None:
    app = _app(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        summary = str(app.query_one("#summary", Static).render())
        assert summary.startswith("live-demo 7e570000 running  6.5s  art 5  runs 4  fail 2  live 1/4")
        rows = {row[0]: row for row in _cells(app, "#agents-table")}
        assert rows["researcher"][:7] == ["researcher", "running", "1/2", "0", "2", "0", "1"]
        assert rows["critic"][:6] == ["critic", "idle", "0", "0", "0", "1"]
        assert rows["editor"][1] == "idle"


async def test_keys_switch_panels_and_the_board_filters_by_type(store: Path) -> None:
    app = _app(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        assert app.query_one(TabbedContent).active == "board"
        board = _cells(app, "#board-table")
        assert [row[1] for row in board] == ["Notes", "Notes", "Topic", "Topic", "Topic"]  # newest first
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"notes", "enter")
        assert [row[1] for row in _cells(app, "#board-table")] == ["Notes", "Notes"]
        await pilot.press("escape")
        assert len(_cells(app, "#board-table")) == 5
        await pilot.press("3")
        assert _cells(app, "#gathering-table") == [["batch", "editor", "2 item(s)", "4 for a full batch"]]
        await pilot.press("5")
        kinds = [row[1] for row in _cells(app, "#events-table")]
        assert kinds == ["dead_letter", "run.retry", "visibility.denied"]
        await pilot.press("4")
        stream = str(app.query_one("#stream", Static).render())
        assert "researcher: Tides rise twice a day;" in stream


async def test_enter_opens_an_artifact_with_payload_and_lineage(store: Path) -> None:
    app = _app(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2", "enter")  # the newest artifact: the second Notes
        assert isinstance(app.screen, ArtifactScreen)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert '"title": "soil"' in text
        assert f"made by researcher from Topic {aid(2)[:8]}" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, ArtifactScreen)


async def test_a_missing_store_waits_and_an_unknown_run_says_so(tmp_path: Path, store: Path) -> None:
    app = _app(tmp_path / "nothing.duckdb")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "waiting for a run in" in str(app.query_one("#summary", Static).render())
    app = _app(store, run="ffff")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "no run with id 'ffff'" in str(app.query_one("#summary", Static).render())


async def test_a_finished_run_can_be_browsed(store: Path) -> None:
    app = _app(store, run="01d0")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert str(app.query_one("#summary", Static).render()).startswith("code-review 01d00000 ok  1.0s")
        assert _cells(app, "#agents-table")[0][:5] == ["bug_detector", "idle", "0", "0", "1"]


def test_snapshot_agents(snap_compare, store: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(store), terminal_size=SIZE)


def test_snapshot_board(snap_compare, store: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(store), terminal_size=SIZE, press=["2"])


def test_snapshot_artifact(snap_compare, store: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(store), terminal_size=SIZE, press=["2", "down", "down", "enter"])


async def test_without_a_run_id_it_follows_the_run_still_going(tmp_path: Path) -> None:
    """A `--watch` server is still going when a `flock publish` finishes after it: the dashboard
    follows the server (the newest run is the publish), and the newest run once nothing goes on."""
    from flock_cli import Flock
    from tests.models import Idea

    path = tmp_path / "traces.duckdb"
    server, publisher = Flock(traces=path), Flock(traces=path)
    async with server.traced_run("server"):
        await server.publish(Idea(topic="first"))
        server.tracer.flush()
        async with publisher.traced_run("publish Idea"):
            await publisher.publish(Idea(topic="second"))
        await publisher.shutdown()
        server.tracer.flush()
        reader = TraceReader(path)
        assert reader.runs(limit=1)[0].name == "publish Idea"
        followed = reader.followed()
        assert followed is not None and (followed.name, followed.status) == ("server", "running")
    await server.shutdown()
    finished = TraceReader(path).followed()
    assert finished is not None and finished.name == "publish Idea"  # nothing goes on: the newest


async def test_an_idle_flock_reads_idle_and_a_busy_one_with_an_old_status_is_flagged(
    tmp_path: Path, store: Path
) -> None:
    """A flock stops writing its status once quiet: that is "idle", not a warning. A status that
    stopped while runs were going is (the seeded run has one in flight)."""
    import asyncio
    import time

    from flock_cli import Flock, FunctionEngine
    from tests.models import Idea, Tagline

    path = tmp_path / "traces.duckdb"
    server = Flock(traces=path)
    server.agent("w").consumes(Idea).publishes(Tagline).with_engines(
        FunctionEngine(lambda i: Tagline(line="x"))
    )
    async with server.traced_run("server"):
        await server.publish(Idea(topic="abc"))
        await server.run_until_idle()
        await asyncio.sleep(1.2)  # a status snapshot after the run ended
        server.tracer.flush()
        later = time.time_ns() + 30_000_000_000
        app = FlockTop(TraceReader(path), None, poll_interval=None, now_ns=lambda: later)
        async with app.run_test():
            await app.workers.wait_for_complete()
            await asyncio.sleep(0.1)
            summary = str(app.query_one("#summary", Static).render())
    await server.shutdown()
    assert "live 0" in summary and "(idle 3" in summary and "status" not in summary
    busy = FlockTop(TraceReader(store), None, poll_interval=None, now_ns=lambda: NOW + 60_000_000_000)
    async with busy.run_test():
        await busy.workers.wait_for_complete()
        await asyncio.sleep(0.1)
        assert "(status 60s old)" in str(busy.query_one("#summary", Static).render())
