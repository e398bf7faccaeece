"""What ``flock run`` prints at the end: the artifacts that came out, and the summary."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from flock_cli.cli.common import console, emit_json, err_console
from flock_cli.errors import printable

if TYPE_CHECKING:
    from flock_cli.cli.run_session import Outcome
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.summary import RunSummary
    from flock_cli.recipe.loader import Recipe

__all__ = ["plural", "report"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def report(outcome: Outcome, recipe: Recipe, as_json: bool, traces_option: Path | None = None) -> None:
    """Print the outcome as text, or as one JSON object with ``--json``. ``traces_option`` is the
    ``--traces`` path, repeated in the hint so that the command it prints works as is."""
    summary = outcome.summary
    final_types = {t for t in recipe.graph.types if not recipe.graph.consumers(t)}
    produced = [a for a in outcome.artifacts if a.produced_by != "external"]
    final = [a for a in produced if a.type in final_types]
    if as_json:
        emit_json(
            {
                "ok": outcome.ok,
                "interrupted": outcome.interrupted > 0,
                "aborted": outcome.interrupted > 1,
                "unpublished_inputs": outcome.unpublished,
                "summary": summary.model_dump(mode="json"),
                "final_artifacts": [a.model_dump(mode="json") for a in final or produced],
                "artifacts": [a.model_dump(mode="json") for a in outcome.artifacts],
                "trace_run": outcome.trace_run,
                "trace_problems": outcome.trace_problems,
            }
        )
        _print_trace_problems(outcome)
        return
    if final:
        _print_artifacts("final artifacts", final)
    elif produced:  # every type is consumed again (a loop): show what the run made
        _print_artifacts("artifacts produced", produced)
    else:
        console().print("no artifacts were produced")
    _print_summary(outcome)
    if outcome.trace_run:
        store = f" --traces {shlex.quote(str(traces_option))}" if traces_option is not None else ""
        console().print(f"[dim]trace: flock trace show {outcome.trace_run[:12]}{escape(store)}[/]")
    _print_trace_problems(outcome)


def _print_trace_problems(outcome: Outcome) -> None:
    from rich.markup import escape

    for problem in outcome.trace_problems:  # the run itself is unaffected: say so, not fail
        err_console().print(f"[yellow]warning:[/] traces: {escape(problem)}")


def _print_artifacts(title: str, artifacts: list[Artifact]) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{title} ({len(artifacts)})[/]")
    for a in artifacts:
        payload = printable(json.dumps(dict(a.payload), default=str, ensure_ascii=False))
        out.print(
            f"  [cyan]{escape(a.type)}[/] {str(a.id)[:8]} from {escape(a.produced_by)}: {escape(payload)}"
        )


def _print_summary(outcome: Outcome) -> None:
    from rich.markup import escape

    summary: RunSummary = outcome.summary
    out = console()
    runs = ", ".join(f"{agent} {n}" for agent, n in sorted(summary.runs_by_agent.items())) or "none"
    out.print(
        f"[bold]summary[/]: {plural(summary.agent_runs, 'run')} ({runs});"
        f" {plural(summary.artifacts_published, 'artifact')} published"
    )
    if outcome.unpublished:
        out.print(
            f"  [yellow]{plural(outcome.unpublished, 'input')} not published[/] (stopped before their turn)"
        )
    where = "left on the board" if outcome.durable else "lost with this in-memory board"
    details = [
        (summary.retries, "retry", "retries"),
        (summary.visibility_denials, "visibility denial", None),
        (
            sum(summary.filtered.values()),
            "artifact filtered out by where/from/channels",
            "artifacts filtered out by where/from/channels",
        ),
        (summary.released, "interrupted run returned to the board", "interrupted runs returned to the board"),
        (
            summary.leases_lost,
            "run lost its lease to another process",
            "runs lost their lease to another process",
        ),
        (summary.not_started, f"queued run not started ({where})", f"queued runs not started ({where})"),
    ]
    extra = "; ".join(plural(n, word, many) for n, word, many in details if n)
    if extra:
        out.print(f"  {extra}")
    for predicate in summary.predicate_errors:
        out.print(f"  [yellow]where failed[/] for {escape(predicate.agent)}: {escape(predicate.error)}")
    for group in summary.expired_groups:
        out.print(
            f"  [yellow]join expired[/] for {escape(group.agent)}: missing {escape(', '.join(group.missing))}"
        )
    _print_waiting(outcome)
    for failure in summary.failures:
        tries = f", after {failure.attempts} attempts" if failure.attempts > 1 else ""
        error = failure.error.splitlines()[0] if failure.error else ""
        out.print(
            f"  [red]failed[/] {escape(failure.agent)} in {escape(failure.stage)}{tries}:"
            f" {escape(failure.error_type)}: {escape(printable(error))}"
        )
    for trip in summary.breaker_trips:
        out.print(
            f"  [red]circuit breaker[/] tripped for {escape(trip.agent)} after {plural(trip.limit, 'run')}"
        )
    for hold in summary.budget_holds:
        out.print(
            f"  [red]{escape(hold.reason)}[/]: {plural(hold.held, 'run')} of {escape(hold.agent)} held as"
            " dead letters (retry them with a larger budget)"
        )
    if summary.dead_letters:
        kept = "kept on the board (flock board dead)" if outcome.durable else "(in memory: lost at exit)"
        out.print(f"  [red]{plural(len(summary.dead_letters), 'dead letter')}[/] {kept}")
    if outcome.interrupted > 1:
        out.print("[bold red]aborted[/]")
    elif outcome.interrupted:
        out.print("[yellow]stopped[/]" + (" [green]ok[/]" if outcome.ok else " [bold red]failed[/]"))
    else:
        out.print("[green]ok[/]" if outcome.ok else "[bold red]failed[/]")


def _print_waiting(outcome: Outcome) -> None:
    """Gates still open and deliveries held by embargoes: what is waiting, and for what."""
    from rich.markup import escape

    summary, out = outcome.summary, console()
    kept = " (kept on the board)" if outcome.durable else ""
    for pending in summary.pending_groups:
        if pending.status == "waiting" or (outcome.watch and pending.status == "stuck"):
            label = "[yellow]waiting[/]"
        else:
            label = "[red]deadlock[/]" if pending.status == "deadlock" else "[red]stuck[/]"
        key = f" (key {escape(pending.key[:36])})" if pending.key else ""
        out.print(
            f"  {label} {escape(pending.agent)}'s gate{key} needs {escape(', '.join(pending.missing))}:"
            f" {escape(pending.reason)}{kept}"
        )
    if summary.pending_embargoes:
        last = max(e.lifts_at for e in summary.pending_embargoes)
        where = (
            "the next flock run on this board delivers them"
            if outcome.durable
            else "lost with this in-memory board"
        )
        out.print(
            f"  [yellow]{plural(len(summary.pending_embargoes), 'delivery', 'deliveries')} waiting for an"
            f" embargo[/] (the last lifts {last.isoformat(timespec='seconds')}; {where})"
        )
