"""One run, several processes: grouping the runs that processes working one board wrote.

Each process (``flock run``, ``Flock.traced_run``) records a run of its own: its own trace, in its
own store or a shared one. When several processes work one board (many ``flock run --watch`` on a
PostgreSQL board, or one process taking up the work another left on a board file), ``flock trace``
shows their runs as one, a *board run*. Two process runs belong to the same board run when

* they name the same board (``flock.board`` in the run's start record: a PostgreSQL URL, or a
  board file's path on the same host) and their times overlap, or
* an agent run of one consumed an artifact the other published (the artifact ids spans record),
  whatever board they name;

and the relation is followed through (A overlaps B, B fed C: one run of three). Runs of a single
process are never merged with each other: a board run always spans two or more processes, so the
runs one process writes read exactly as before. Its figures add up its processes' figures; its id
is its oldest process run's id, and any of its processes' run ids names it too.

A run's time is its start to its end. A run without an end is still going while its process
lives (then it reaches to now and on). When its process is gone (killed: ``interrupted``), it
reaches to the last moment it is known to have been alive: the latest of its last span's end,
its last event and its last status snapshot, or, later still, the last heartbeat the board had of
its process when another member of a shared board found it dead and reaped it (``board.reaped``,
recorded in the reaper's run; matched by host and pid to the newest run that process started on
that board before the heartbeat). An idle ``--watch`` process records nothing for hours, so its
own records alone would end its run long before it was killed; its heartbeats went on until then.
Until some member reaps it (within the board's ``lease_ttl`` and a heartbeat of the kill) only
its own records are known, and a run that started after the last of those is not yet joined.

A run that **failed without recording any work** (no agent run, no artifact, no dead letter: all
that ``flock trace list`` counts is zero) never worked the board and stands alone, whatever it
overlaps: a ``flock run`` the board refused (another recipe on a shared board), one that could not
reach the board, one that found nothing to run. Only ``failed`` is taken as that sign: a member
that ran nothing yet is idle, not void, and stays in the board run while ``running``, once stopped
(``ok``) and once killed (``interrupted``), the ``--watch`` orchestrator waiting for work being the
common case. Duration tells the two apart less well: a board that cannot be reached may take a
connection timeout to fail, and an idle member may be stopped a second after it started. A member
that failed later, after an idle spell and without ever running anything, stands alone too: its
failure says nothing about the board run's work.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flock_cli.errors import TraceStoreError

if TYPE_CHECKING:
    from flock_cli.tracing.reader import RunRow, TraceReader

__all__ = [
    "ProcessRun",
    "agents_now",
    "board_run",
    "board_runs",
    "group_runs",
    "merge_runs",
    "process_labels",
]

# Each run with what grouping needs of its records: for a run without an end (its process still
# works, or was killed), the last time it recorded anything (span, event, status snapshot); for a
# failed run, whether it recorded any work. Only those runs' rows are read: on a store of 1,000,000
# spans, 100,000 events and 20,000 snapshots from ten processes (two runs open, one failed), 15 ms
# against 6 ms when it read the open runs' spans alone (and 107 ms for _LINKS below).
_PROCESS_RUNS = """
WITH open AS (SELECT trace_id FROM runs WHERE ended_ns IS NULL),
failed AS (SELECT trace_id FROM runs WHERE status = 'failed'),
s AS (SELECT trace_id, max(end_ns) AS last_ns, count(*) FILTER (WHERE name = 'agent.run') AS agent_runs
      FROM spans WHERE trace_id IN (SELECT trace_id FROM open UNION ALL SELECT trace_id FROM failed)
      GROUP BY trace_id),
e AS (SELECT trace_id, max(ts_ns) AS last_ns, count(*) FILTER (WHERE kind = 'dead_letter') AS dead
      FROM events WHERE trace_id IN (SELECT trace_id FROM open UNION ALL SELECT trace_id FROM failed)
      GROUP BY trace_id),
st AS (SELECT trace_id, max(ts_ns) AS last_ns FROM status WHERE trace_id IN (SELECT trace_id FROM open)
       GROUP BY trace_id),
a AS (SELECT DISTINCT trace_id FROM artifacts WHERE trace_id IN (SELECT trace_id FROM failed))
SELECT r.trace_id, r.started_ns, r.ended_ns, greatest(s.last_ns, e.last_ns, st.last_ns, r.started_ns),
       r.pid, r.host, r.attributes->>'$."flock.board"',
       r.status = 'failed' AND coalesce(s.agent_runs, 0) = 0 AND coalesce(e.dead, 0) = 0
           AND a.trace_id IS NULL
FROM runs r LEFT JOIN s ON s.trace_id = r.trace_id LEFT JOIN e ON e.trace_id = r.trace_id
LEFT JOIN st ON st.trace_id = r.trace_id LEFT JOIN a ON a.trace_id = r.trace_id
"""

# The processes other members of a shared board found dead and reaped (core/membership.py), with
# the last heartbeat the board had of each: read only when some run's process is gone unfinished.
_REAPED = """
SELECT trace_id, attributes->>'$.host', CAST(attributes->>'$.pid' AS BIGINT),
       CAST(attributes->>'$.heartbeat_ns' AS BIGINT)
FROM events WHERE kind = 'board.reaped' AND attributes->>'$.heartbeat_ns' IS NOT NULL
"""

# Which trace consumed an artifact another trace published (grouping keeps the pairs of runs with
# a start record: a publish outside any run has no process to tell apart). Filtering to those in
# SQL made it 2.3x slower: 250 against 110 ms on a store of 1,000,000 spans and ten processes.
_LINKS = """
SELECT DISTINCT c.trace_id, a.trace_id
FROM (SELECT trace_id, unnest(inputs) AS artifact_id FROM spans WHERE name = 'agent.run') c
JOIN artifacts a ON a.artifact_id = c.artifact_id AND a.trace_id <> c.trace_id
"""


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """What grouping needs of one process's run: when, which process, which board."""

    trace_id: str
    started_ns: int
    ended_ns: float  # math.inf while its process still works on it
    pid: int | None
    host: str | None
    board: str | None
    void: bool = False
    """It failed without recording any work: it never worked the board (it stands alone)."""

    @property
    def process(self) -> tuple[str | None, int | None]:
        """The process that wrote the run."""
        return (self.host, self.pid)

    @property
    def board_key(self) -> tuple[str, ...] | None:
        """Runs with equal keys worked one board: a URL names it everywhere, a path on one host."""
        if self.board is None:
            return None
        return (self.board,) if "://" in self.board else (self.host or "", self.board)


def group_runs(runs: Sequence[ProcessRun], links: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The board runs among ``runs``: lists of two or more trace ids, oldest first, that more than
    one process wrote. ``links`` pairs a consuming run's trace id with a producing one's."""
    parent = {run.trace_id: run.trace_id for run in runs}

    def root(trace_id: str) -> str:
        while parent[trace_id] != trace_id:
            parent[trace_id] = parent[parent[trace_id]]
            trace_id = parent[trace_id]
        return trace_id

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    by_board: dict[tuple[str, ...], list[ProcessRun]] = defaultdict(list)
    for run in runs:
        if run.board_key is not None and not run.void:
            by_board[run.board_key].append(run)
    for same_board in by_board.values():
        same_board.sort(key=lambda r: r.started_ns)
        reach, last = -math.inf, ""
        for run in same_board:  # a sweep: each run joins the runs still going when it started
            if run.started_ns <= reach:
                join(run.trace_id, last)
            if run.ended_ns > reach:
                reach, last = run.ended_ns, run.trace_id
    for consumer, producer in links:
        if consumer in parent and producer in parent:
            join(consumer, producer)
    members: dict[str, list[ProcessRun]] = defaultdict(list)
    for run in runs:
        members[root(run.trace_id)].append(run)
    groups = []
    for group in members.values():
        if len({run.process for run in group}) > 1:
            groups.append([run.trace_id for run in sorted(group, key=lambda r: (r.started_ns, r.trace_id))])
    return sorted(groups, key=lambda g: g[0])


def merge_runs(members: Sequence[RunRow]) -> RunRow:
    """The board run of ``members`` (process runs): their figures added up, the oldest one's id."""
    from flock_cli.tracing.run_summary import RunRow

    ordered = sorted(members, key=lambda r: (r.started_ns, r.run_id))
    first = ordered[0]
    names = list(dict.fromkeys(r.name for r in ordered))
    statuses = {r.status for r in ordered}
    status = next((s for s in ("running", "failed", "interrupted") if s in statuses), "ok")
    ends = [r.ended_ns for r in ordered]
    costs = [r.cost for r in ordered if r.cost is not None]
    boards = list(dict.fromkeys(r.board for r in ordered if r.board))
    return RunRow(
        first.run_id, " + ".join(names), first.started_ns,
        None if status == "running" or None in ends else max(e for e in ends if e is not None), status,
        sum(r.artifacts for r in ordered), sum(r.agent_runs for r in ordered),
        sum(r.failed_attempts for r in ordered), sum(r.dead_letters for r in ordered),
        sum(r.tokens for r in ordered), sum(costs) if costs else None, recipe=first.recipe,
        board=boards[0] if len(boards) == 1 else None, processes=ordered,
    )  # fmt: skip


def agents_now(reader: TraceReader, run: RunRow) -> dict[str, dict[str, float]]:
    """Agent -> runs ``running`` and ``queued`` now, from the latest status snapshot of each of the
    run's processes still working on it (added up); none for a workflow (its processes' figures
    are not its own)."""
    agents: dict[str, dict[str, float]] = {}
    if run.workflow:
        return agents
    for process in run.processes or [run]:
        status = reader.status(process.run_id) if process.status == "running" else None
        for agent, figures in (status or {}).get("agents", {}).items():
            mine = agents.setdefault(agent, {"running": 0.0, "queued": 0.0})
            for key in mine:
                mine[key] += float(figures.get(key, 0))
    return agents


def process_labels(run: RunRow) -> dict[str, str]:
    """Trace id -> ``host:pid`` of each process of a board run (empty for a one-process run)."""
    return {p.run_id: p.process for p in run.processes}


def _groups(reader: TraceReader) -> list[list[str]]:
    from flock_cli.tracing.run_summary import alive

    runs: list[ProcessRun] = []
    gone: list[ProcessRun] = []  # runs without an end whose process is gone (killed)
    for trace_id, started, ended, last, pid, host, board, void in reader.sql_rows(_PROCESS_RUNS):
        if ended is not None:
            end = float(ended)
        elif alive(pid, host):
            end = math.inf
        else:
            end = float(last)  # the last sign of life it recorded; a reaper may know a later one
        runs.append(ProcessRun(trace_id, int(started), end, pid, host, board, bool(void)))
        if ended is None and end != math.inf:
            gone.append(runs[-1])
    if len({run.process for run in runs}) < 2:
        return []  # one process: nothing to group (and no need to read the spans for links)
    if gone:
        runs = _lived_until_reaped(runs, gone, reader.sql_rows(_REAPED))
    links = [(str(a), str(b)) for a, b in reader.sql_rows(_LINKS)]
    return group_runs(runs, links)


def _lived_until_reaped(
    runs: list[ProcessRun], gone: list[ProcessRun], reaped: Iterable[tuple[Any, ...]]
) -> list[ProcessRun]:
    """``runs``, the end of each killed one (in ``gone``) moved to the last heartbeat the board had
    of its process when a member working the same board reaped it (``board.reaped``), if later.

    An idle process records nothing, so its own last record may come long before it was killed;
    its heartbeats went on until then. The heartbeat is matched to the newest run the process
    (host and pid) started before it on that board: a pid used again later is another process."""
    by_id = {run.trace_id: run for run in runs}
    ends: dict[str, float] = {}
    for reaper_id, host, pid, heartbeat_ns in reaped:
        reaper = by_id.get(str(reaper_id))
        if reaper is None or reaper.board_key is None:
            continue
        lived = [
            run for run in gone
            if run.process == (host, pid) and run.board_key == reaper.board_key
            and run.started_ns <= heartbeat_ns
        ]  # fmt: skip
        if lived:
            run = max(lived, key=lambda r: r.started_ns)
            ends[run.trace_id] = max(ends.get(run.trace_id, run.ended_ns), float(heartbeat_ns))
    return [replace(run, ended_ns=ends[run.trace_id]) if run.trace_id in ends else run for run in runs]


def board_runs(reader: TraceReader, limit: int | None = 20) -> list[RunRow]:
    """Runs newest first, the runs of several processes on one board as one (``processes`` holds
    each process's run)."""
    with reader.session():
        groups = _groups(reader)
        if not groups:
            return reader.runs(limit)
        rows = {row.run_id: row for row in reader.runs(limit=None)}
        entries: list[RunRow] = []
        for group in groups:
            members = [rows.pop(trace_id) for trace_id in group if trace_id in rows]
            entries += [merge_runs(members)] if len(members) > 1 else members
        entries += rows.values()
    entries.sort(key=lambda r: (r.started_ns, r.run_id), reverse=True)
    return entries if limit is None else entries[: max(0, int(limit))]


def board_run(reader: TraceReader, ref: str | None) -> RunRow:
    """The run ``ref`` names (any of its processes' run ids, or a unique prefix), or the newest:
    with every process that worked it when there were several. A workflow (correlation) id
    names that workflow alone (``workflow.py``)."""
    from flock_cli.tracing.workflow import is_workflow_id, workflow_run

    if ref is not None and is_workflow_id(ref):
        return workflow_run(reader, ref)
    with reader.session():
        if ref is None:
            newest = board_runs(reader, limit=1)
            if not newest:
                raise TraceStoreError(f"the trace store {reader.where} holds no runs yet")
            return newest[0]
        row = reader.run(ref)
        group = next((g for g in _groups(reader) if row.run_id in g), None)
        if group is None:
            return row
        return merge_runs(reader.runs_by_id(group))
