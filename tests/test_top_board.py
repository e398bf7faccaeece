"""flock top on a shared board: the Processes panel lists the orchestrator processes of a real
PostgreSQL board (host, pid, leases, heartbeat age, the routing leader) and its open work."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from textual.widgets import DataTable, Static, TabbedContent
from typer.testing import CliRunner

from flock_cli import Flock
from flock_cli.cli.app import app as cli_app
from flock_cli.cli.top_cmd import dashboard
from flock_cli.dashboard.app import FlockTop
from flock_cli.dashboard.board import BoardReader
from flock_cli.store.contract import DeliveryStatus
from flock_cli.store.postgres import PostgresBlackboardStore
from flock_cli.store.postgres_shared import ROUTING_LOCK, routing_lock_name, this_host
from flock_cli.store.sqlite import SQLiteBlackboardStore
from flock_cli.tracing.reader import TraceReader
from tests import board_worker
from tests.board_worker import Seed, build

if TYPE_CHECKING:
    import psycopg

SIZE = (100, 24)
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def _app(traces: Path, board: BoardReader | None, now_ns: Callable[[], int] | None = None) -> FlockTop:
    if now_ns is None:
        return FlockTop(TraceReader(traces), poll_interval=None, board=board)
    return FlockTop(TraceReader(traces), poll_interval=None, board=board, now_ns=now_ns)


def _cells(app: FlockTop, table: str) -> list[list[str]]:
    widget = app.query_one(table, DataTable)
    return [[str(cell) for cell in widget.get_row_at(i)] for i in range(widget.row_count)]


def _work(app: FlockTop) -> str:
    return str(app.query_one("#work", Static).render())


async def _read(app: FlockTop) -> None:
    """Let the board's worker finish and its result reach the panel."""
    await app.workers.wait_for_complete()
    await asyncio.sleep(0)
    await app.workers.wait_for_complete()


def _owner(flock: Flock) -> str:
    return flock._runtime.owner


@pytest.fixture
async def two_processes(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Flock]]:
    """Two orchestrators registered on one board, holding three leases between them: their runs
    wait (an engine call of ~10 minutes) so the leases stay held while the dashboard reads. Their
    lease TTL is an hour, so no heartbeat rewrites a heartbeat a test set."""
    monkeypatch.setattr(board_worker, "DELAY", 600.0)
    monkeypatch.setenv("BOARD_WORKER_LEASE_TTL", "3600")
    flocks = [build(postgres_url), build(postgres_url)]
    publisher = build(postgres_url, role="publisher")
    try:
        for flock in flocks:
            await flock.attach()
        await publisher.publish_many([Seed(n=n) for n in range(3)])
        store = flocks[0].store
        for _ in range(600):  # until the leader routed the seeds and the members leased them
            if len(await store.deliveries(status=DeliveryStatus.LEASED)) == 3:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the seeds were not leased: {await store.deliveries()}")
        yield flocks
    finally:
        for flock in flocks:
            await flock.shutdown(timeout=0.5, drain=False, release_interrupted=True)
            await flock.store.close()
        await publisher.store.close()


async def test_the_panel_lists_every_process_with_its_leases_and_the_leader(
    two_processes: list[Flock], postgres_url: str, tmp_path: Path
) -> None:
    first, second = two_processes
    leases = Counter(d.lease_owner for d in await first.store.deliveries(status=DeliveryStatus.LEASED))
    assert [first.store.leading, second.store.leading].count(True) == 1
    board = BoardReader(PostgresBlackboardStore(postgres_url), stale_after=30)
    app = _app(tmp_path / "no-traces.duckdb", board)
    async with app.run_test(size=SIZE) as pilot:
        await _read(app)
        await pilot.press("6")
        assert app.query_one(TabbedContent).active == "processes"
        rows = {row[2]: row for row in _cells(app, "#processes-table")}
        assert set(rows) == {_owner(first), _owner(second)}
        for flock in (first, second):
            host, pid, _, role, held, beat, state = rows[_owner(flock)]
            assert (host, pid) == (this_host(), str(os.getpid()))
            assert role == ("leader" if flock.store.leading else "member")
            assert held == str(leases[_owner(flock)])
            assert state == "live" and beat.endswith("s")
        assert _work(app) == "open work 0 pending  3 leased  0 unrouted"
    assert board.read() is None  # the app closed the board when it exited


async def test_a_heartbeat_older_than_the_lease_ttl_shows_as_stale(
    two_processes: list[Flock], postgres_url: str, tmp_path: Path
) -> None:
    import psycopg

    first, second = two_processes
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE flock.processes SET heartbeat_at = now() - interval '45 seconds' WHERE owner = %s",
            (_owner(second),),
        )
    app = _app(
        tmp_path / "no-traces.duckdb", BoardReader(PostgresBlackboardStore(postgres_url), stale_after=30)
    )
    async with app.run_test(size=SIZE):
        await _read(app)
        rows = {row[2]: row for row in _cells(app, "#processes-table")}
        assert rows[_owner(first)][-1] == "live"
        beat, state = rows[_owner(second)][-2:]
        assert state == "stale"
        assert 45 <= int(beat.removesuffix("s")) < 60
    app = _app(
        tmp_path / "no-traces.duckdb", BoardReader(PostgresBlackboardStore(postgres_url), stale_after=60)
    )
    async with app.run_test(size=SIZE):
        await _read(app)
        assert {row[2]: row[-1] for row in _cells(app, "#processes-table")}[_owner(second)] == "live"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_board_is_one_readable_line_in_the_panel(tmp_path: Path) -> None:
    url = f"postgresql://flock:s3cret@127.0.0.1:{_free_port()}/nowhere"
    app = _app(tmp_path / "no-traces.duckdb", BoardReader(PostgresBlackboardStore(url), stale_after=30))
    async with app.run_test(size=SIZE) as pilot:
        await _read(app)
        await pilot.press("6")
        line = _work(app)
        assert line.startswith("cannot reach the board postgresql://flock:***@127.0.0.1:")
        assert "\n" not in line and "s3cret" not in line and "Traceback" not in line
        assert _cells(app, "#processes-table") == []
        await pilot.press("r")  # the next refresh tries again, and says so again
        await _read(app)
        assert _work(app).startswith("cannot reach the board")
        assert app.is_running


async def test_without_a_board_there_is_no_processes_panel(tmp_path: Path) -> None:
    app = _app(tmp_path / "no-traces.duckdb", None)
    async with app.run_test(size=SIZE) as pilot:
        assert not app.query("#processes")
        await pilot.press("6")  # no such panel: the key does nothing
        assert app.query_one(TabbedContent).active == "agents"


def _seed_board(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Three processes as a board lists them, on fixed hosts, pids and times: the first leads
    (its routing connection is returned), the second drains, the third stopped beating."""
    import psycopg

    leader = psycopg.connect(url, autocommit=True, application_name=routing_lock_name(4101, "flock-aaaa0001"))
    with psycopg.connect(url, autocommit=True) as conn:
        for owner, host, pid, age, draining in (
            ("flock-aaaa0001", "alpha", 4101, 2, False),
            ("flock-bbbb0002", "beta", 977, 12, True),
            ("flock-cccc0003", "gamma", 1, 95, False),
        ):
            conn.execute(
                "INSERT INTO flock.processes(owner, host, pid, fingerprint, started_at, heartbeat_at,"
                " draining) VALUES (%s, %s, %s, 'f', %s, %s, %s)",
                (
                    owner,
                    host,
                    pid,
                    NOW - timedelta(hours=1, seconds=-pid),
                    NOW - timedelta(seconds=age),
                    draining,
                ),
            )
    assert leader.execute("SELECT pg_try_advisory_lock(%s)", (ROUTING_LOCK,)).fetchone() == (True,)
    return leader


@pytest.fixture
def seeded_board(postgres_url: str) -> Iterator[str]:
    asyncio.run(_work_on(postgres_url))
    leader = _seed_board(postgres_url)
    yield postgres_url
    leader.close()


async def _work_on(url: str) -> None:
    """Four seeds on the board, not routed: three deliveries leased (two by the first process,
    one by the second) and one pending."""
    from uuid import uuid4

    from flock_cli.store.contract import Delivery

    publisher = build(url, role="publisher")
    seeds = [await publisher.publish(Seed(n=n)) for n in range(4)]
    store = publisher.store
    for seed, owner in zip(seeds, ("flock-aaaa0001", "flock-aaaa0001", "flock-bbbb0002", None), strict=True):
        delivery = Delivery(id=uuid4(), agent="drafter", artifact_ids=(seed.id,), created_at=NOW)
        await store.add_delivery(delivery)
        if owner is not None:
            assert await store.lease(delivery.id, owner, now=NOW, ttl=3600) is not None
    await store.close()


def test_snapshot_processes(
    snap_compare, seeded_board: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # the summary names the trace store: the same path on every machine
    app = _app(
        Path("no-traces.duckdb"),
        BoardReader(PostgresBlackboardStore(seeded_board), stale_after=30),
        now_ns=lambda: int(NOW.timestamp() * 1e9),
    )

    async def read(pilot) -> None:  # type: ignore[no-untyped-def]
        await _read(pilot.app)
        await pilot.press("6")

    assert snap_compare(app, terminal_size=SIZE, run_before=read)


RECIPE = """
name: watched
types:
  Job:
    fields: {n: int}
agents:
  worker:
    consumes: Job
    publishes: Job
    engine: test
settings:
  board: "URL"
  lease_ttl: 10s
"""


async def _states(app: FlockTop) -> dict[str, str]:
    async with app.run_test(size=SIZE):
        await _read(app)
        return {row[2]: row[-1] for row in _cells(app, "#processes-table")}


def test_the_board_and_its_lease_ttl_are_chosen_like_other_commands(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--board, else $FLOCK_BOARD, else the recipe's settings.board; the recipe's lease_ttl says
    when a heartbeat is stale (else 30 s, a shared board's default). Synchronous, as the command
    builds its dashboard: no event loop is running yet."""
    import json

    import psycopg

    asyncio.run(_migrate_with(postgres_url))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO flock.processes(owner, host, pid, fingerprint, started_at, heartbeat_at)"
            " VALUES ('flock-20s', 'h', 1, 'f', now(), now() - interval '20 seconds')"
        )
    recipe = tmp_path / "watched.yaml"
    recipe.write_text(RECIPE.replace('"URL"', json.dumps(postgres_url)))
    sqlite = tmp_path / "board.db"
    asyncio.run(SQLiteBlackboardStore(sqlite).close())
    traces = tmp_path / "traces.duckdb"
    monkeypatch.delenv("FLOCK_BOARD", raising=False)

    def states(board: str | None = None, recipe: Path | None = None) -> dict[str, str] | None:
        app = dashboard(None, traces=traces, board=board, recipe=recipe, interval=3600)
        return None if app.board is None else asyncio.run(_states(app))

    assert states() is None  # no board named: no panel (.flock/ is not searched)
    assert states(recipe=recipe) == {"flock-20s": "stale"}  # settings.board, lease_ttl: 10s
    assert states(board=str(sqlite), recipe=recipe) is None  # --board first: SQLite, no panel
    monkeypatch.setenv("FLOCK_BOARD", postgres_url)
    assert states() == {"flock-20s": "live"}  # stale after 30 s
    assert states(recipe=recipe) == {"flock-20s": "stale"}  # the recipe's lease_ttl still counts
    monkeypatch.setenv("FLOCK_BOARD", str(sqlite))
    assert states(recipe=recipe) is None  # $FLOCK_BOARD before settings.board


async def _migrate_with(url: str) -> None:
    store = PostgresBlackboardStore(url)
    await store.open_work()
    await store.close()


def test_top_help_documents_the_board() -> None:
    result = CliRunner().invoke(cli_app, ["top", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--board" in text and "PATH|URL" in text
    assert "Processes panel lists every orchestrator process" in text
    assert "$FLOCK_BOARD" in text and "--recipe" in text


def _top(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """``flock top ARGS`` as a real process on Textual's headless driver: it saves a screenshot
    once ready and exits (TEXTUAL_SCREENSHOT); returns the process and the screenshot's text."""
    env = {
        **os.environ,
        "TEXTUAL_DRIVER": "textual.drivers.headless_driver:HeadlessDriver",
        "TEXTUAL_SCREENSHOT": "1",  # seconds (0 divides by zero in Textual 8)
        "TEXTUAL_SCREENSHOT_LOCATION": str(tmp_path),
        "TEXTUAL_SCREENSHOT_FILENAME": "top.svg",
    }
    env.pop("FLOCK_BOARD", None)
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "top", "--traces", str(tmp_path / "traces.duckdb"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    shot = tmp_path / "top.svg"
    return done, shot.read_text().replace("&#160;", " ") if shot.exists() else ""


def test_flock_top_on_a_sqlite_board_runs_without_a_processes_panel(tmp_path: Path) -> None:
    asyncio.run(SQLiteBlackboardStore(tmp_path / "board.db").close())
    done, shot = _top(["--board", str(tmp_path / "board.db")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "1 Agents" in shot and "5 Events" in shot
    assert "Processes" not in shot


def test_flock_top_on_a_postgresql_board_has_the_panel(postgres_url: str, tmp_path: Path) -> None:
    done, shot = _top(["--board", postgres_url], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "6 Processes" in shot


def test_flock_top_refuses_a_missing_sqlite_board(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    result = CliRunner().invoke(cli_app, ["top", "--traces", str(tmp_path / "t.duckdb"), "--board", missing])
    assert result.exit_code == 2
    assert "no board at" in result.output


def test_flock_top_refuses_a_board_it_cannot_reach(tmp_path: Path) -> None:
    """A wrong URL is one line and exit 2 before the screen is taken over, as in every command."""
    import socket as sockets

    with sockets.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://flock:secret@127.0.0.1:{port}/flock"
    result = CliRunner().invoke(cli_app, ["top", "--traces", str(tmp_path / "t.duckdb"), "--board", url])
    assert result.exit_code == 2, result.output
    assert "cannot reach the board postgresql://flock:***@127.0.0.1" in result.output
    assert "secret" not in result.output and "Traceback" not in result.output
