"""Text from agents, models and HTTP clients cannot drive the terminal that shows it: ESC, DEL and
C1 characters in a payload or an error are printed as their escapes (``\\x1b``) by every command
that shows them as text, and ``--json`` keeps the value as stored. Real `flock` processes, a real
SQLite board and DuckDB trace store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from flock_cli.dashboard.app import ArtifactScreen, FlockTop
from flock_cli.tracing.reader import TraceReader
from tests.test_cli import cli, write

RECIPE = """
    name: echo
    types:
      Note:
        fields: {text: str}
      Echo:
        fields: {text: str}
    agents:
      echo:
        consumes: Note
        publishes: Echo
        engine: {kind: function, function: "echo_lib:echo"}
      refuse:
        consumes: Echo
        engine: {kind: function, function: "echo_lib:refuse"}
"""
LIB = """
    def echo(inputs):
        return [{"text": a.payload["text"] + "!"} for a in inputs.artifacts]

    def refuse(inputs):
        raise ValueError("cannot take " + inputs.artifacts[0].payload["text"])
"""
HOSTILE = "a\x1b]0;owned\x07b\x1b[2Jc\x9b31md\x7fe [/] [bold]"  # and Rich markup
RAW = ("\x1b", "\x9b", "\x7f", "\x07")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("terminal")
    write(cwd / "echo_lib.py", LIB)
    write(cwd / "echo.yaml", RECIPE)
    (cwd / "note.json").write_text(json.dumps({"text": HOSTILE}))
    done = cli("run", "echo.yaml", "-i", "Note=note.json", "--board", "b.db", "--traces", "t.duckdb", cwd=cwd)
    assert done.returncode == 1, done.stdout + done.stderr  # refuse failed: a dead letter
    return cwd, done.stdout + done.stderr


def _shown_safely(out: str) -> None:
    assert not [c for c in RAW if c in out], repr(out)
    # an escape Python's way, or JSON's (a payload shown as JSON escapes C0 itself)
    assert "\\x1b[2J" in out or "\\u001b[2J" in out, out
    assert "\\x9b31" in out, out


def test_flock_run_prints_payloads_and_errors_with_escapes(ran: tuple[Path, str]) -> None:
    _, out = ran
    _shown_safely(out)
    assert "ValueError: cannot take a\\x1b]0;owned\\x07b" in out


@pytest.mark.parametrize(
    "command",
    [
        ["board", "list", "--board", "b.db"],
        ["board", "dead", "--board", "b.db"],
        ["trace", "show", "--traces", "t.duckdb"],
        ["trace", "sql", "SELECT payload->>'$.text' AS text FROM artifacts", "--traces", "t.duckdb"],
    ],
)
def test_commands_that_show_stored_text_print_escapes(ran: tuple[Path, str], command: list[str]) -> None:
    cwd, _ = ran
    done = cli(*command, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    _shown_safely(done.stdout)


def test_json_output_keeps_the_value_as_stored(ran: tuple[Path, str]) -> None:
    cwd, _ = ran
    query = "SELECT payload->>'$.text' AS text FROM artifacts ORDER BY created_ns"
    done = cli("trace", "sql", query, "--traces", "t.duckdb", "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert [row["text"] for row in json.loads(done.stdout)] == [HOSTILE, HOSTILE + "!"]


async def test_flock_top_shows_stored_text_with_escapes_and_never_as_markup(ran: tuple[Path, str]) -> None:
    cwd, _ = ran
    app = FlockTop(TraceReader(cwd / "t.duckdb"), None, poll_interval=None)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        board = app.query_one("#board-table", DataTable)
        payloads = [str(board.get_row_at(i)[-1]) for i in range(board.row_count)]
        assert len(payloads) == 2 and all("\\x9b31md\\x7fe [/]" in p for p in payloads), payloads
        await pilot.press("enter")
        assert isinstance(app.screen, ArtifactScreen)
        shown = str(app.screen.query_one("#payload", Static).render())
        assert "\\x9b31md\\x7fe [/] [bold]" in shown
        await pilot.press("escape", "5")
        events = app.query_one("#events-table", DataTable)
        details = [str(events.get_row_at(i)[-1]) for i in range(events.row_count)]
        assert any("cannot take a\\x1b]0;owned\\x07b" in d for d in details), details
        screen = app.export_screenshot()
    assert not [c for c in RAW if c in screen]
