"""``flock top ARGS`` as the README's Deploy section runs it, on Textual's headless driver: the
arguments are parsed by the real command, the Processes panel (key 6) is opened, and its rows are
printed once at least ``FLOCK_TOP_ROWS`` orchestrators are listed (used by test_readme_deploy)."""

from __future__ import annotations

import asyncio
import os
import sys

import typer
from textual.widgets import DataTable

from flock_cli.cli.app import app as cli_app
from flock_cli.cli.top_cmd import dashboard
from flock_cli.dashboard.app import FlockTop


def main(args: list[str]) -> int:
    group = typer.main.get_command(cli_app)  # a group of Typer's own click
    params = group.commands["top"].make_context("top", args).params  # type: ignore[attr-defined]
    app = dashboard(params.pop("run"), **params)  # as the command does, before any event loop
    try:
        return asyncio.run(show_processes(app))
    finally:
        if app.board is not None:
            app.board.close()


async def show_processes(app: FlockTop) -> int:
    wanted = int(os.environ.get("FLOCK_TOP_ROWS", "1"))
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("6")
        table = app.query_one("#processes-table", DataTable)
        for _ in range(300):
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            if table.row_count >= wanted:
                break
        for i in range(table.row_count):
            print("process:", " | ".join(str(cell) for cell in table.get_row_at(i)))
    return 0 if table.row_count >= wanted else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
