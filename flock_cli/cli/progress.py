"""The live progress panel of ``flock run``: agents running and queued, artifacts, failures.

Shown on stderr, refreshed four times a second, only when stderr is a terminal (in a pipe or a
CI log it would be noise; the summary is printed either way).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flock_cli.cli.common import err_console

if TYPE_CHECKING:
    from flock_cli.cli.stream_view import StreamView
    from flock_cli.core.orchestrator import Flock

__all__ = ["LiveProgress"]


class LiveProgress:
    """Context manager showing ``flock.status()`` while a run goes on."""

    def __init__(self, flock: Flock, *, enabled: bool, title: str) -> None:
        self._flock = flock
        self._title = title
        self._started = time.monotonic()
        self._live: Any = None
        self.enabled = enabled and err_console().is_terminal
        self.note = ""
        self.streams: StreamView | None = None
        if self.enabled:
            from flock_cli.cli.stream_view import StreamView

            self.streams = StreamView(err_console())
            flock.on_stream(self.streams.on_chunk)

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.live import Live

            self._live = Live(
                get_renderable=self._render, console=err_console(), refresh_per_second=4, transient=True
            )
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
        if self.streams is not None:
            self.streams.finish()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        status = self._flock.status()
        elapsed = time.monotonic() - self._started
        header = Text.assemble(
            (self._title, "bold"),
            f"  {elapsed:5.1f}s  artifacts {status.artifacts_published}  ",
            (f"failures {status.failures}", "red" if status.failures else ""),
            f"  retries {status.retries}  dead letters {status.dead_letters}",
        )
        table = Table(expand=False)
        table.add_column("agent")
        table.add_column("running", justify="right")
        table.add_column("queued", justify="right")
        table.add_column("runs", justify="right")
        for agent in self._flock.agents:
            name = agent.name
            running = status.running_by_agent.get(name, 0)
            table.add_row(
                f"[bold green]{name}[/]" if running else name,
                str(running),
                str(status.queued_by_agent.get(name, 0)),
                str(status.runs_by_agent.get(name, 0)),
            )
        parts: list[Any] = [header, table]
        for name, count in status.queued_by_agent.items():
            if name.startswith("group "):  # waiting for whichever member of the group is free
                table.add_row(f"[dim]{name}[/]", "", str(count), "")
        if self.streams is not None and (live := self.streams.renderable()) is not None:
            parts.append(live)
        if self.note:
            parts.append(Text(self.note, style="yellow"))
        return Group(*parts)
