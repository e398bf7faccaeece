"""The ``flock top`` application: panels over a run in the trace store and, on a shared board,
its orchestrator processes; refreshed live."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from flock_cli.dashboard.board import BoardReader, BoardSnapshot, process_rows, work_line
from flock_cli.dashboard.data import WAITING, Snapshot, load_snapshot
from flock_cli.errors import FlockError, printable
from flock_cli.tracing.reader import ArtifactRow, TraceReader

__all__ = ["ArtifactScreen", "FlockTop"]

_TABS = ("agents", "board", "gathering", "stream", "events")
_STATE_STYLE = {
    "running": "bold green",
    WAITING: "bold magenta",
    "queued": "yellow",
    "idle": "dim",
    "tripped": "bold red",
}
_RUN_STYLE = {
    "running": "bold yellow",
    "ok": "bold green",
    "failed": "bold red",
    "interrupted": "bold magenta",
}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def _elapsed(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _key_at(table: DataTable[Any], row: int) -> str | None:
    """The key of the table's row ``row``; None when there is no such row."""
    if not 0 <= row < table.row_count:
        return None
    return table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value


class ArtifactScreen(ModalScreen[None]):
    """One artifact: its metadata, payload and lineage. Escape closes it."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,q,enter", "dismiss", "Close")
    ]
    DEFAULT_CSS = """
    ArtifactScreen { align: center middle; }
    ArtifactScreen > VerticalScroll { width: 90%; height: 90%; border: round $accent; background: $surface; }
    """

    def __init__(self, artifact: ArtifactRow, lineage: list[str]) -> None:
        super().__init__()
        self.artifact = artifact
        self.lineage = lineage

    def compose(self) -> ComposeResult:
        a = self.artifact
        head = Text.assemble((a.type, "bold"), f"  {a.artifact_id}\n", ("from ", "dim"), a.produced_by)
        head.append(f"   visibility {a.visibility}", style="dim")
        if a.correlation_id:
            head.append(f"\ncorrelation {a.correlation_id}", style="dim")
        if a.tags:
            head.append(f"\ntags {', '.join(a.tags)}", style="dim")
        with VerticalScroll():
            yield Static(head)
            payload = json.dumps(a.payload, indent=2, ensure_ascii=False, default=str)
            yield Static(Text(printable(payload)), id="payload")
            yield Static(Text("\n".join(self.lineage) or "no lineage recorded", style="cyan"), id="lineage")


class FlockTop(App[None]):
    """Live view of a run: agents, the blackboard, gathering, streamed output and events; with a
    shared board, its orchestrator processes and open work too.

    Args:
        reader: the trace store.
        run: a run id (prefix) to show; None follows the newest run still going, else the newest.
        poll_interval: seconds between reads of the stores (None: read once, for tests).
        now_ns: the clock (tests pin it so elapsed times are stable).
        board: the shared board whose processes the Processes panel lists (None: no panel). The
            app closes it when it exits.
    """

    TITLE = "flock top"
    CSS = """
    #summary { height: 1; padding: 0 1; background: $boost; }
    TabbedContent { height: 1fr; }
    TabPane { height: 1fr; padding: 0; }
    #filter { display: none; height: 3; }
    #filter.shown { display: block; }
    DataTable { height: 1fr; }
    #stream { padding: 0 1; }
    #work { height: 1; padding: 0 1; }
    """
    # The panel keys are in the tab titles ("1 Agents"): the footer repeating them pushed q Quit
    # past the right edge of an 80-column terminal.
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("1", "tab('agents')", "Agents", show=False),
        Binding("2", "tab('board')", "Board", show=False),
        Binding("3", "tab('gathering')", "Gather", show=False),
        Binding("4", "tab('stream')", "Stream", show=False),
        Binding("5", "tab('events')", "Events", show=False),
        Binding("6", "tab('processes')", "Procs", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("escape", "clear_filter", "Clear", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        reader: TraceReader,
        run: str | None = None,
        *,
        poll_interval: float | None = 0.25,
        now_ns: Callable[[], int] = time.time_ns,
        board: BoardReader | None = None,
    ) -> None:
        super().__init__()
        self.reader = reader
        self.board = board
        self.board_snapshot: BoardSnapshot | None = None
        self.run_ref = run
        self.poll_interval = poll_interval
        self.now_ns = now_ns
        self.snapshot = Snapshot(run=None)
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Static("reading traces…", id="summary")
        with TabbedContent(initial="agents"):
            with TabPane("1 Agents", id="agents"):
                yield DataTable(id="agents-table", cursor_type="row", zebra_stripes=True)
            with TabPane("2 Board", id="board"):
                yield Input(placeholder="type or correlation id (Enter to apply, Esc to clear)", id="filter")
                yield DataTable(id="board-table", cursor_type="row", zebra_stripes=True)
            with TabPane("3 Gathering", id="gathering"):
                yield DataTable(id="gathering-table", cursor_type="row")
            with TabPane("4 Stream", id="stream-pane"), VerticalScroll():
                yield Static("", id="stream")
            with TabPane("5 Events", id="events"):
                yield DataTable(id="events-table", cursor_type="row", zebra_stripes=True)
            if self.board is not None:
                with TabPane("6 Processes", id="processes"):
                    yield Static(work_line(None, self.board.where), id="work")
                    yield DataTable(id="processes-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#agents-table", DataTable).add_columns(
            "agent", "state", "run", "queue", "ok", "fail", "retry", "mean", "tokens", "cost"
        )
        self.query_one("#board-table", DataTable).add_columns("time", "type", "id", "from", "payload")
        self.query_one("#gathering-table", DataTable).add_columns("kind", "agent", "have", "waiting for")
        self.query_one("#events-table", DataTable).add_columns("time", "event", "agent", "artifact", "detail")
        if self.board is not None:
            self.query_one("#processes-table", DataTable).add_columns(
                "host", "pid", "owner", "role", "leases", "heartbeat", "state"
            )
            self.poll_board()  # a board across the network is never waited for on this thread
        self.apply(self._read())  # the first view without waiting for a poll
        self.set_interval(0.25, self._tick)  # elapsed time and staleness: 4 refreshes a second
        if self.poll_interval is not None:
            self.set_interval(self.poll_interval, self.action_refresh_now)

    def on_unmount(self) -> None:
        if self.board is not None:
            self.board.close()  # before the loop ends: it waits for the worker threads

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No Processes key without a shared board."""
        return not (action == "tab" and parameters == ("processes",) and self.board is None)

    # -- reading ---------------------------------------------------------------------------------

    def _read(self) -> Snapshot:
        if not self.reader.path.exists():
            return Snapshot(run=None)  # the summary says it waits for the first run
        try:
            return load_snapshot(self.reader, self.run_ref, self.now_ns)
        except FlockError as exc:
            return Snapshot(run=None, error=str(exc))

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        """Read the store off the UI thread, then show what was read."""
        snapshot = self._read()
        self.call_from_thread(self.apply, snapshot)

    @work(thread=True, exclusive=True, group="board")
    def poll_board(self) -> None:
        """Read the shared board off the UI thread (apart from the trace store: a slow network
        does not hold the other panels back), then show what was read."""
        assert self.board is not None
        snapshot = self.board.read()
        if snapshot is not None:  # None: a read was still under way, or the app is closing
            self.call_from_thread(self.apply_board, snapshot)

    def action_refresh_now(self) -> None:
        self.poll()
        if self.board is not None:
            self.poll_board()

    # -- showing ---------------------------------------------------------------------------------

    def apply(self, snapshot: Snapshot) -> None:
        """Show a snapshot in every panel (keeping each table's cursor)."""
        self.snapshot = snapshot
        if not self._showing():
            return
        self._tick()
        self._fill("#agents-table", self._agent_rows())
        self._fill("#board-table", self._board_rows())
        self._fill("#gathering-table", self._gathering_rows())
        self._fill("#events-table", self._event_rows())
        stream = Text()
        for event in snapshot.stream[-60:]:
            stream.append(f"{event.agent or '?'}: ", style="bold cyan")
            stream.append(printable(str(event.attributes.get("text", "")), keep="\n\t") + "\n")
        self.query_one("#stream", Static).update(
            stream if snapshot.stream else Text("no streamed output", style="dim")
        )

    def apply_board(self, snapshot: BoardSnapshot) -> None:
        """Show a read of the shared board in the Processes panel."""
        self.board_snapshot = snapshot
        if self.board is None or not self._showing():
            return
        self.query_one("#work", Static).update(work_line(snapshot, self.board.where))
        self._fill("#processes-table", process_rows(snapshot, self.now_ns() / 1e9, self.board.stale_after))

    def _showing(self) -> bool:
        """False once the app is closing: a timer or a poll finishing then finds no panels."""
        return bool(self.query("#summary"))

    def _tick(self) -> None:
        if not self._showing():
            return
        snap, summary = self.snapshot, self.query_one("#summary", Static)
        if snap.run is None:
            summary.update(
                Text(printable(snap.error or f"waiting for a run in {self.reader.path}…"), style="yellow")
            )
            return
        run = snap.run
        end = run.ended_ns if run.ended_ns is not None else self.now_ns()
        text = Text.assemble(
            (run.name, "bold"), f" {run.run_id[:8]} ", (run.status, _RUN_STYLE.get(run.status, ""))
        )
        text.append(f"  {_elapsed((end - run.started_ns) / 1e9)}  art {run.artifacts}  runs {run.agent_runs}")
        text.append(f"  fail {run.failed_attempts}", style="red" if run.failed_attempts else "")
        if run.status == "running":
            limit = snap.max_concurrency
            text.append(f"  live {snap.running_total}{'/' + str(limit) if limit else ''}")
            if snap.status_age_s is not None and snap.status_age_s > 3:
                if snap.running_total:  # runs were going: a status this old may mean a stuck flock
                    text.append(f"  (status {snap.status_age_s:.0f}s old)", style="yellow")
                else:  # an idle flock stops writing its status after a quiet spell (the writer)
                    text.append(f"  (idle {snap.status_age_s:.0f}s)", style="dim")
        if run.tokens:
            text.append(f"  tok {run.tokens}")
        summary.update(text)

    def _fill(self, selector: str, rows: list[tuple[str, list[Any]]]) -> None:
        """Replace a table's rows, the cursor staying on the row it was on (by key): new artifacts
        come in on top, and Enter must open the one chosen, not the one that slid under the cursor.
        A row that is gone leaves the cursor where it was."""
        table = self.query_one(selector, DataTable)
        row = table.cursor_row
        chosen = _key_at(table, row)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if not rows:
            return
        keys = [key for key, _ in rows]
        table.move_cursor(row=keys.index(chosen) if chosen in keys else min(row, len(rows) - 1))

    def _agent_rows(self) -> list[tuple[str, list[Any]]]:
        rows = []
        for a in self.snapshot.agents:
            running = f"{a.running}/{a.limit}" if a.limit else str(a.running)
            state = Text(a.state, style=_STATE_STYLE.get(a.state, ""))
            rows.append((a.name, [
                _cell(a.name), state, running, str(a.queued), str(a.ok),
                Text(str(a.failed), style="red" if a.failed else ""), str(a.retried), _ms(a.mean_ms),
                str(a.tokens) if a.tokens else "-", f"{a.cost:.4f}" if a.cost else "-",
            ]))  # fmt: skip
        return rows

    def _board_rows(self) -> list[tuple[str, list[Any]]]:
        wanted = self.filter_text.lower()
        rows = []
        for a in reversed(self.snapshot.artifacts):  # newest first
            if wanted and wanted not in a.type.lower() and not (a.correlation_id or "").startswith(wanted):
                continue
            clock = time.strftime("%H:%M:%S", time.localtime(a.created_ns / 1e9))
            payload = json.dumps(a.payload, ensure_ascii=False, default=str)
            cells = [clock, _cell(a.type), a.artifact_id[:8], _cell(a.produced_by), _cell(payload, 60)]
            rows.append((a.artifact_id, cells))
        return rows

    def _gathering_rows(self) -> list[tuple[str, list[Any]]]:
        rows = []
        for i, g in enumerate(self.snapshot.gathering):
            if g["kind"] == "join":
                have, waiting = (
                    f"{len(g.get('artifact_ids', []))} artifact(s)",
                    ", ".join(g.get("missing", [])),
                )
            else:
                size = g.get("size")
                have, waiting = (
                    f"{g.get('items', 0)} item(s)",
                    f"{size} for a full batch" if size else "a flush",
                )
            rows.append((str(i), [g["kind"], _cell(str(g.get("agent", "?"))), have, _cell(waiting or "-")]))
        return rows

    def _event_rows(self) -> list[tuple[str, list[Any]]]:
        rows = []
        for i, e in enumerate(reversed(self.snapshot.events)):
            clock = time.strftime("%H:%M:%S", time.localtime(e.ts_ns / 1e9))
            detail = (
                e.attributes.get("error")
                or e.attributes.get("reason")
                or e.attributes.get("visibility")
                or ""
            )
            style = "red" if e.kind in ("dead_letter", "breaker.trip") else "yellow"
            rows.append(
                (
                    str(i),
                    [
                        clock,
                        Text(e.kind, style=style),
                        _cell(e.agent or "-"),
                        (e.artifact_id or "-")[:8],
                        _cell(str(detail), 60),
                    ],
                )
            )
        return rows

    # -- actions ---------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = "stream-pane" if tab == "stream" else tab
        if tab != "stream":  # keys go to the panel shown: arrows move, Enter opens
            self.query_one(f"#{tab}-table", DataTable).focus()

    def action_filter(self) -> None:
        self.action_tab("board")
        field = self.query_one("#filter", Input)
        field.add_class("shown")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.remove_class("shown")
        self.filter_text = ""
        self._fill("#board-table", self._board_rows())
        self.query_one("#board-table", DataTable).focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self._fill("#board-table", self._board_rows())
        self.query_one("#board-table", DataTable).focus()

    @on(DataTable.RowSelected, "#board-table")
    def _open_artifact(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        artifact = next((a for a in self.snapshot.artifacts if a.artifact_id == key), None)
        if artifact is not None:
            self.push_screen(ArtifactScreen(artifact, self._lineage(artifact)))

    def _lineage(self, artifact: ArtifactRow) -> list[str]:
        run = self.snapshot.run
        if run is None:
            return []
        try:
            spans = self.reader.spans(run.run_id)
        except FlockError as exc:
            return [f"lineage unavailable: {exc}"]
        types = {a.artifact_id: a.type for a in self.snapshot.artifacts}
        lines = []
        for span in spans:
            if span.name != "agent.run":
                continue
            if artifact.artifact_id in span.outputs:
                inputs = ", ".join(f"{types.get(i, '?')} {i[:8]}" for i in span.inputs)
                lines.append(f"made by {span.agent} from {inputs}")
            if artifact.artifact_id in span.inputs:
                outcome = span.attributes.get("flock.outcome", span.status)
                lines.append(f"consumed by {span.agent} ({outcome}, {_ms(span.duration_ms)})")
        return lines


def _cell(value: str, width: int | None = None) -> Text:
    """A table cell of stored text: a DataTable reads a plain string as Rich markup (a payload
    holding ``[/]`` raised MarkupError and ended ``flock top``), and control characters would reach
    the terminal (an ESC in a payload), so it is Text, its control characters escaped."""
    shown = printable(value)
    return Text(shown if width is None else shown[:width])
