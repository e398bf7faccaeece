"""Issue 17, "Metrics and `flock top` details": the metrics endpoint outlives the run until a
scrape read its final values, binds the address it is given and keeps its gauges at 0; the
`flock top` board keeps its cursor on the artifact chosen and shows q Quit at 80 columns; a piped
`flock trace list` prints whole values. Each is checked the way a user meets it: real `flock`
processes and HTTP scrapes, the dashboard driven headless with Textual's Pilot."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable
from textual.widgets._footer import FooterKey
from typer.testing import CliRunner

from flock_cli import Flock
from flock_cli.cli.app import app as cli_app
from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.dashboard.app import ArtifactScreen, FlockTop
from flock_cli.dashboard.board import BoardReader
from flock_cli.tracing.metrics import Metrics
from flock_cli.tracing.reader import TraceReader
from tests.models import Idea, Tagline
from tests.trace_seed import NOW, seed

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
LIVE_DEMO_RUNS, LIVE_DEMO_ARTIFACTS = 18, 26  # what recipes/live_demo.yaml makes of topics.json
FINAL_LINE = "metrics: serving the final values"

# -- the metrics endpoint -----------------------------------------------------------------------


def _port() -> int:
    """A free port in the range these tests may serve on."""
    for port in range(18700, 18800):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 18700-18799")


def _flock_run(port: int, *extra: str) -> subprocess.Popen[str]:
    """``flock run`` of the live demo serving metrics on ``port``, as a real process."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "flock_cli", "run", str(RECIPES / "live_demo.yaml"), "-q",
            "--no-traces", "--board", ":memory:", "--metrics-port", str(port), *extra,
            "-i", f"Topic={RECIPES / 'inputs' / 'topics.json'}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _until_over(run: subprocess.Popen[str]) -> list[str]:
    """Read the run's stderr until it says the run is over and the final values are served."""
    assert run.stderr is not None
    lines: list[str] = []
    for line in run.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith(FINAL_LINE):
            return lines
    run.wait(60)
    pytest.fail(f"the run ended without serving its final metrics (exit {run.returncode}): {lines}")


def _scrape(url: str) -> dict[str, float]:
    """One Prometheus scrape: every sample by its name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _total(samples: dict[str, float], family: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(family + "{"))


def test_the_final_counts_stay_served_until_a_scrape_reads_them() -> None:
    """The run is over long before the 10-minute linger: only the scrape of its final values
    lets the process go. A request for another path is not that scrape."""
    port = _port()
    run = _flock_run(port, "--metrics-linger", "600")
    try:
        _until_over(run)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert run.poll() is None  # still serving: nothing has read the final values yet
        final = _scrape(f"http://127.0.0.1:{port}/metrics")
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert _total(final, "flock_agent_runs_total") == LIVE_DEMO_RUNS
    assert _total(final, "flock_artifacts_published_total") == LIVE_DEMO_ARTIFACTS
    # the gauges fell to 0 for every agent (the researcher's queue was 6 deep): none vanished
    for gauge in ("flock_agent_runs_in_progress", "flock_deliveries_pending"):
        for agent in ("researcher", "critic", "editor"):
            assert final[f'{gauge}{{agent="{agent}"}}'] == 0, (gauge, agent)


def test_metrics_host_is_the_address_served() -> None:
    port = _port()
    run = _flock_run(port, "--metrics-host", "localhost", "--metrics-linger", "600")
    try:
        lines = _until_over(run)
        final = _scrape(f"http://localhost:{port}/metrics")
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert f"metrics: http://localhost:{port}/metrics" in lines
    assert not any(line.startswith("note: anyone who can reach") for line in lines)  # loopback
    assert _total(final, "flock_agent_runs_total") == LIVE_DEMO_RUNS


def test_metrics_options_that_cannot_work_exit_2() -> None:
    runner = CliRunner()
    base = ["run", str(RECIPES / "live_demo.yaml"), "-q", "--no-traces", "--board", ":memory:"]
    topics = ["-i", f"Topic={RECIPES / 'inputs' / 'topics.json'}"]
    alone = runner.invoke(cli_app, [*base, "--metrics-host", "127.0.0.1", *topics])
    assert alone.exit_code == 2 and "go with --metrics-port" in alone.output
    # 192.0.2.1 is a documentation address: no machine has it, so binding it fails at once
    port = _port()
    elsewhere = runner.invoke(
        cli_app, [*base, "--metrics-port", str(port), "--metrics-host", "192.0.2.1", *topics]
    )
    assert elsewhere.exit_code == 2, elsewhere.output
    assert f"cannot serve metrics on 192.0.2.1:{port}" in elsewhere.output


def test_a_gauge_keeps_an_agent_it_listed_and_reads_0_once_the_run_is_over() -> None:
    metrics = Metrics()
    queues = {"writer": 3}
    metrics.pending = lambda: dict(queues)
    metrics.track(["reader"])
    metrics.run_started("writer")
    assert 'flock_deliveries_pending{agent="writer"} 3' in metrics.render()
    assert 'flock_deliveries_pending{agent="reader"} 0' in metrics.render()
    queues.clear()  # the scheduler lists only non-empty queues
    assert 'flock_deliveries_pending{agent="writer"} 0' in metrics.render()
    assert 'flock_agent_runs_in_progress{agent="writer"} 1' in metrics.render()
    queues["writer"] = 2  # a timeout left deliveries queued: nothing will run them now
    metrics.end()
    text = metrics.render()
    assert 'flock_agent_runs_in_progress{agent="writer"} 0' in text
    assert 'flock_deliveries_pending{agent="writer"} 0' in text


# -- flock top -----------------------------------------------------------------------------------


async def test_the_board_cursor_stays_on_its_artifact_as_new_ones_arrive(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    flock = Flock(traces=path)
    async with flock.traced_run("server"):
        for topic in ("first", "second"):
            await flock.publish(Idea(topic=topic))
        flock.tracer.flush()
        app = FlockTop(TraceReader(path), None, poll_interval=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2", "down")  # newest first: the cursor on "first"
            board = app.query_one("#board-table", DataTable)
            assert _payload_at_cursor(board) == '{"topic": "first"}'
            for topic in ("third", "fourth"):
                await flock.publish(Idea(topic=topic))
            flock.tracer.flush()
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert board.row_count == 4  # the new rows came in above
            assert _payload_at_cursor(board) == '{"topic": "first"}'
            await pilot.press("enter")
            assert isinstance(app.screen, ArtifactScreen)
            assert app.screen.artifact.payload == {"topic": "first"}
    await flock.shutdown()


def _payload_at_cursor(table: DataTable[Any]) -> str:
    return str(table.get_row_at(table.cursor_row)[-1])


@pytest.mark.parametrize("with_board", [False, True], ids=["no-board", "shared-board"])
async def test_q_quit_is_in_the_footer_at_80_columns(tmp_path: Path, with_board: bool) -> None:
    board = None
    if with_board:  # the Processes panel is there whether or not its board answers
        from flock_cli.store.postgres import PostgresBlackboardStore

        url = f"postgresql://flock@127.0.0.1:{_port()}/nowhere"
        board = BoardReader(PostgresBlackboardStore(url), stale_after=30)
    store = seed(tmp_path / "traces.duckdb")
    app = FlockTop(TraceReader(store), None, poll_interval=None, now_ns=lambda: NOW, board=board)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert bool(app.query("#processes")) is with_board
        (quit_key,) = [key for key in app.query(FooterKey) if key.key == "q"]
        region = quit_key.region
        assert region.width and region.right <= 80
        # what the user sees in those cells is the key, not something drawn over it
        assert all(
            app.screen.get_widget_at(x, region.y)[0] is quit_key for x in range(region.x, region.right)
        )
        assert re.search(r"q\s+Quit", str(quit_key.render()))
        assert "Quit" in app.export_screenshot()
        await pilot.press("q")
    assert app.return_code == 0


# -- flock trace list ----------------------------------------------------------------------------

LONG_NAME = "quarterly-supplier-risk-review-2026"


class _Priced(EngineComponent):
    """An engine that reports model usage: the table then has tokens and cost columns too."""

    async def evaluate(self, agent: Any, ctx: Context, inputs: EvalInputs) -> EvalResult:
        ctx.trace.usage(model="local/tiny", input_tokens=123_456, output_tokens=7_890, cost=0.1234)
        return EvalResult(artifacts=[Tagline(line="priced")])


@pytest.fixture
def wide_store(tmp_path: Path) -> Path:
    """A store whose list is wider than 80 columns: a running run, and a run with a long name,
    tokens and cost."""
    path = seed(tmp_path / "traces.duckdb")

    async def write() -> None:
        flock = Flock(traces=path)
        flock.agent("pricer").consumes(Idea).publishes(Tagline).with_engines(_Priced())
        async with flock.traced_run(LONG_NAME):
            await flock.publish(Idea(topic="suppliers"))
            await flock.run_until_idle()
        await flock.shutdown()

    asyncio.run(write())
    return path


def _list_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    return {**env, "TERM": "xterm", "NO_COLOR": "1"}


def test_trace_list_piped_prints_whole_values(wide_store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "trace", "list", "--traces", str(wide_store)],
        env=_list_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["7e570000"][4] == "running"
    (mine,) = [row for row in rows.values() if row[3] == LONG_NAME]
    assert mine[4:8] == ["ok", "2", "1", "0"] and mine[-2:] == ["131346", "0.1234"]  # status, counts


def test_trace_list_in_a_terminal_still_fits_80_columns(wide_store: Path) -> None:
    import fcntl
    import termios

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with subprocess.Popen(
        [sys.executable, "-m", "flock_cli", "trace", "list", "--traces", str(wide_store)],
        env=_list_env(), stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE,
    ) as run:  # fmt: skip
        os.close(terminal)
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(main)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.decode()).replace("\r", "")
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 4 and max(len(line) for line in lines) <= 80, lines  # a header, 3 runs
    assert "…" in text  # the terminal's layout: cut to fit, as before
