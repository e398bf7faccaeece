"""How ``flock trace`` shows runs: tables, the causal tree and the timeline, as Rich renderables
(plain text when the output is not a terminal)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from flock_cli.errors import printable
from flock_cli.tracing.analysis import (
    ArtifactNode,
    RunNode,
    concurrency,
    critical_path,
    peak_concurrency,
    runs_of,
)
from flock_cli.tracing.run_metrics import metrics_of

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from flock_cli.tracing.reader import RunRow, SpanRow

__all__ = ["WholeWhenPiped", "duration", "preview", "run_ref", "run_table", "run_tree", "timeline", "when"]

_UNBOUNDED = 100_000
"""Columns a piped table may take: more than any row needs."""

_STATUS_STYLE = {
    "ok": "green",
    "failed": "red",
    "running": "yellow",
    "interrupted": "magenta",
    "error": "red",
}


def when(ns: int) -> str:
    """A local timestamp to the second."""
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def run_ref(run: RunRow) -> str:
    """How a run is named in headers: its id's first 12 characters; a workflow's whole id."""
    return run.run_id if run.workflow else run.run_id[:12]


def preview(payload: Any, width: int = 50) -> str:
    """A one-line payload preview."""
    import json

    text = printable(json.dumps(payload, ensure_ascii=False, default=str))  # JSON leaves C1 and DEL
    return text if len(text) <= width else text[: width - 1] + "…"


class WholeWhenPiped:
    """A table a terminal gets fitted to its width and anything else (a pipe, a file) gets whole:
    a program reading ``flock trace list`` needs ``running``, not ``runni…``, and a long name in
    full. Its columns' ``max_width`` caps only the terminal's layout."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield self.table
            return
        table = copy.copy(self.table)  # a shallow copy: the caller's table keeps its caps
        table.columns = [dataclasses.replace(column, max_width=None) for column in table.columns]
        # as wide as the content: a table that does not expand takes no more than it needs
        yield from console.render(table, options.update_width(_UNBOUNDED))


def run_table(runs: list[RunRow]) -> WholeWhenPiped:
    """``flock trace list``: fits 80 columns in a terminal (tokens and cost appear when some run
    has them); whole values elsewhere."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    tokens = any(run.tokens for run in runs)
    cost = any(run.cost for run in runs)
    table.add_column("run", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("status", no_wrap=True)
    for column in ("arts", "runs", "dead"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    if tokens:
        table.add_column("tokens", justify="right", no_wrap=True)
    if cost:
        table.add_column("cost", justify="right", no_wrap=True)
    for run in runs:
        table.add_row(*_run_cells(run, escape(run.name), tokens, cost))
        for i, process in enumerate(run.processes):  # a run several processes worked: each one's part
            branch = "└" if i == len(run.processes) - 1 else "├"
            table.add_row(*_run_cells(process, f" {branch} {escape(process.process)}", tokens, cost))
    return WholeWhenPiped(table)


def _run_cells(run: RunRow, name: str, tokens: bool, cost: bool) -> list[str]:
    style = _STATUS_STYLE.get(run.status, "")
    row = [
        run.run_id[:8],
        when(run.started_ns)[5:],
        name,
        f"[{style}]{run.status}[/]" if style else run.status,
        str(run.artifacts),
        str(run.agent_runs),
        str(run.dead_letters),
        duration(run.duration_s),
    ]
    if tokens:
        row.append(str(run.tokens) if run.tokens else "-")
    if cost:
        row.append(f"{run.cost:.4f}" if run.cost else "-")
    return row


def _run_label(run: RunNode, critical: set[int]) -> Text:
    final = run.final
    outcome = str(final.attributes.get("flock.outcome", final.status))
    style = "red" if final.status == "error" else "green"
    label = Text.assemble(("⚙ ", "cyan"), (final.agent or "?", "bold"), "  ", (outcome, style))
    label.append(f"  {duration(final.duration_ms / 1000)}")
    if len(run.attempts) > 1:
        label.append(f"  ({len(run.attempts)} attempts)", style="yellow")
    if id(run) in critical:
        label.append("  ◆ critical path", style="magenta")
    if run.also_consumed:
        label.append(f"  + {len(run.also_consumed)} more input(s)", style="dim")
    if run.process:
        label.append(f"  @ {run.process}", style="dim")
    if final.message:
        label.append(f"\n  {printable(final.message)}", style="red")
    metrics = metrics_of(final.attributes)
    if metrics:
        label.append(_metric_lines(metrics), style="cyan")
    for event in run.events:
        if event.kind in ("dead_letter", "run.retry", "breaker.trip"):
            detail = event.attributes.get("reason") or event.attributes.get("error") or ""
            label.append(f"\n  ↳ {event.kind} {printable(str(detail))}", style="yellow")
    return label


def _artifact_label(node: ArtifactNode) -> Text:
    a = node.artifact
    label = Text.assemble(
        ("▣ ", "blue"), (a.type, "bold"), f" {a.artifact_id[:8]}", (f"  {a.produced_by}", "dim")
    )
    label.append(f"  {preview(a.payload)}", style="dim")
    if node.process:
        label.append(f"  @ {node.process}", style="dim")
    for note in node.notes:
        reason = note.attributes.get("reason") or note.attributes.get("visibility") or ""
        verb = {"visibility.denied": "denied to", "subscription.filtered": "filtered for"}.get(
            note.kind, f"{note.kind} for"
        )
        label.append(f"\n  ✗ {verb} {note.agent} ({printable(str(reason))})", style="yellow")
    return label


def run_tree(
    run: RunRow,
    roots: list[ArtifactNode],
    orphans: list[RunNode],
    all_runs: list[RunNode],
    in_progress: dict[str, int] | None = None,
) -> Tree:
    """``flock trace show``: artifact -> agent run -> artifacts; for a running run, also what is
    in progress (runs appear in the tree when they end)."""
    critical = {id(r) for r in critical_path(all_runs)}
    style = _STATUS_STYLE.get(run.status, "")
    counts = f"{_count(run.artifacts, 'artifact')}, {_count(run.agent_runs, 'agent run')}"
    summary = f"  {duration(run.duration_s)}  {counts}"
    header = Text.assemble((run.name, "bold"), f"  {run_ref(run)}  ", (run.status, style), summary)
    if run.processes:
        parts = ", ".join(f"{p.process} (run {p.run_id[:8]})" for p in run.processes)
        header.append(f"\n{len(run.processes)} processes: {parts}", style="dim")
    tree = Tree(header)
    seen: set[int] = set()

    def add_artifact(parent: Tree, node: ArtifactNode) -> None:
        branch = parent.add(_artifact_label(node))
        for child in node.runs:
            if id(child) in seen:
                continue
            seen.add(id(child))
            run_branch = branch.add(_run_label(child, critical))
            for output in child.outputs:
                add_artifact(run_branch, output)

    for root in roots:
        add_artifact(tree, root)
    if in_progress:
        going = ", ".join(f"{agent} x{n}" for agent, n in sorted(in_progress.items()))
        tree.add(Text(f"in progress now: {going}", style="yellow"))
    if orphans:
        outside = tree.add(Text("runs on artifacts from outside this run", style="dim"))
        for orphan in orphans:
            branch = outside.add(_run_label(orphan, critical))
            for output in orphan.outputs:
                add_artifact(branch, output)
    return tree


def timeline(spans: list[SpanRow], width: int, processes: dict[str, str] | None = None) -> Text:
    """``flock trace timeline``: a bar per agent run on a shared time axis, the critical path in
    solid blocks, and a row counting the runs in progress at each moment. With ``processes``
    (trace id -> ``host:pid``, a run of several processes) each bar starts with its process, ``[n]``."""
    runs = runs_of(spans)
    attempts = sorted((a for r in runs for a in r.attempts), key=lambda s: (s.start_ns, s.span_id))
    if not attempts:
        return Text("no agent runs in this run")
    critical = {a.span_id for r in critical_path(runs) for a in r.attempts}
    start = min(a.start_ns for a in attempts)
    end = max(a.end_ns for a in attempts)
    number = {trace_id: i for i, trace_id in enumerate(processes or {}, 1)}
    labels = [_attempt_label(a, number.get(a.trace_id)) for a in attempts]
    label_width = min(28, max(len(label) for label in [*labels, "in progress"]))
    columns = max(10, width - label_width - 12)
    span = max(1, end - start)
    out = Text()
    for attempt, label in zip(attempts, labels, strict=True):
        first = int((attempt.start_ns - start) * columns / span)
        last = max(first, int((attempt.end_ns - start) * columns / span) - 1)
        last = min(last, columns - 1)
        char, style = ("█", "magenta") if attempt.span_id in critical else ("▒", "cyan")
        if attempt.status == "error":
            char, style = "x", "red"
        out.append(
            f"{label[:label_width]:<{label_width}} │", style="bold" if attempt.span_id in critical else ""
        )
        out.append(" " * first)
        out.append(char * (last - first + 1), style=style)
        out.append(" " * (columns - last - 1))
        out.append(f"│ {duration(attempt.duration_ms / 1000)}\n")
    counts = concurrency(spans, start, end, columns)
    out.append(f"{'in progress':<{label_width}} │", style="dim")
    out.append("".join(str(c) if c < 10 else "+" for c in counts), style="dim")
    out.append(f"│ max {peak_concurrency(spans)}\n", style="dim")
    axis_end = duration((end - start) / 1e9)
    out.append(f"{'':<{label_width}} └0{'─' * max(0, columns - len(axis_end) - 1)}{axis_end}┘\n", style="dim")
    out.append(f"{'':<{label_width}}  █ critical path  ▒ other runs  x failed attempt", style="dim")
    for trace_id, n in number.items():
        out.append(f"\n{'':<{label_width}}  [{n}] {(processes or {})[trace_id]}", style="dim")
    return out


def _attempt_label(span: SpanRow, process: int | None = None) -> str:
    attempt = span.attributes.get("flock.attempt", 1)
    where = "" if process is None else f"[{process}] "  # first: a long agent name is cut, not this
    return f"{where}{span.agent or '?'}{'' if attempt == 1 else f' #{attempt}'}"


def _metric_lines(metrics: dict[str, Any], width: int = 60) -> str:
    """``metrics: a=1, b=2`` under a run, on more lines when long (the tree crops long lines)."""
    lines: list[str] = []
    line = ""
    for name, value in metrics.items():
        item = f"{name}={_metric(value)}"
        if line and len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    lines.append(line)
    return "\n  metrics: " + "\n           ".join(lines)


def _metric(value: Any) -> str:
    """A metric as JSON writes it, floats to 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return str(value)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
