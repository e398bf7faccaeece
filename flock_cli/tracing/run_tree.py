"""One run read as a causal tree, as ``flock trace show`` draws it and ``--json`` (or the HTTP
service's ``GET /v1/runs/{run}``) gives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flock_cli.tracing.reader import SpanRow, TraceReader
    from flock_cli.tracing.run_summary import RunRow

__all__ = ["RunTree", "read_run_tree"]


@dataclass
class RunTree:
    """A run's row, its tree (and what hangs outside it), its spans, and agents still running."""

    row: RunRow
    roots: list[Any]
    orphans: list[Any]
    spans: list[SpanRow]
    in_progress: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The document of ``flock trace show --json``."""
        return {
            "run": self.row.to_json(),
            "tree": [r.to_json() for r in self.roots],
            "outside": [o.to_json() for o in self.orphans],
            "in_progress": self.in_progress,
        }


def read_run_tree(reader: TraceReader, ref: str | None) -> RunTree:
    """The run ``ref`` (an id or unique prefix; the newest when None), several processes' parts
    as one tree, each agent run marked with its process."""
    from flock_cli.tracing.analysis import build_tree
    from flock_cli.tracing.board_runs import agents_now, board_run, process_labels

    with reader.session():
        row = board_run(reader, ref)
        ids = row.scope
        spans = reader.spans(ids)
        roots, orphans = build_tree(reader.artifacts(ids), spans, reader.events(ids), process_labels(row))
        in_progress = {a: int(v["running"]) for a, v in agents_now(reader, row).items() if v["running"]}
    return RunTree(row, roots, orphans, spans, in_progress)
