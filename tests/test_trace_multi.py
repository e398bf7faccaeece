"""One run, several processes (issue 15): each process writes a trace store of its own, and
`flock trace` reads them as one, showing the run the processes worked together as one run.

The scenario is real: two `flock run` processes on one board file, each tracing into a folder
(so each writes `<host>-<pid>.duckdb` there). The first runs `writer` on two stories (two
workflows), whose Drafts are embargoed for a second; the second, started after the embargo, runs
`reader` on those Drafts. The commands then read both stores: a folder, `--traces` given twice,
or a glob.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli import Flock, TestEngine
from flock_cli.cli.app import app
from flock_cli.store import SQLiteBlackboardStore
from flock_cli.tracing.reader import TraceReader
from flock_cli.tracing.writer import _QUIET_SECONDS
from tests.models import Idea, Movie
from tests.test_cli import cli, spawn, wait_for, write

runner = CliRunner()

RECIPE = """
    name: two-stage
    types:
      Story: {fields: {n: int}}
      Draft: {fields: {n: int}}
      Read: {fields: {n: int}}
    agents:
      writer:
        consumes: Story
        publishes: {type: Draft, visibility: {kind: after, ttl: 1s}}
        engine: test
      reader: {consumes: Draft, publishes: Read, engine: test}
"""


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


class Stages:
    """The two processes' stores: ``first`` ran writer, ``second`` ran reader."""

    def __init__(self, folder: Path, first: Path, second: Path, pids: tuple[int, int]) -> None:
        self.folder, self.first, self.second, self.pids = folder, first, second, pids
        host = socket.gethostname()
        self.labels = (f"{host}:{pids[0]}", f"{host}:{pids[1]}")

    def run_ids(self) -> tuple[str, str]:
        return TraceReader(self.first).run(None).run_id, TraceReader(self.second).run(None).run_id


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Stages:
    cwd = tmp_path_factory.mktemp("two-stage")
    recipe = write(cwd / "two_stage.yaml", RECIPE)
    write(cwd / "story.json", '[{"n": 1}, {"n": 2}]')
    (cwd / "traces").mkdir()
    first = cli("run", recipe, "--board", "board.db", "--traces", "traces", "-i", "Story=story.json", cwd=cwd)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "flock trace show" in first.stdout and "--traces traces" in first.stdout
    (store_a,) = sorted((cwd / "traces").glob("*.duckdb"))
    time.sleep(1.2)  # the Draft's embargo lifts
    second = cli("run", recipe, "--board", "board.db", "--traces", "traces", cwd=cwd)
    assert second.returncode == 0, second.stdout + second.stderr
    (store_b,) = [p for p in (cwd / "traces").glob("*.duckdb") if p != store_a]
    pids = (TraceReader(store_a).run(None).pid, TraceReader(store_b).run(None).pid)
    assert None not in pids and pids[0] != pids[1]
    return Stages(cwd / "traces", store_a, store_b, (int(pids[0] or 0), int(pids[1] or 0)))


def test_each_process_writes_a_store_of_its_own_in_a_traces_folder(stages: Stages) -> None:
    host = socket.gethostname()
    assert stages.first.name == f"{host}-{stages.pids[0]}.duckdb"
    assert stages.second.name == f"{host}-{stages.pids[1]}.duckdb"
    a, b = TraceReader(stages.first).run(None), TraceReader(stages.second).run(None)
    assert (a.agent_runs, b.agent_runs) == (2, 2)
    board = str((stages.folder.parent / "board.db").resolve())
    assert a.board == b.board == board  # the run start records name the board


def test_list_shows_one_run_with_both_processes(stages: Stages) -> None:
    first_id, second_id = stages.run_ids()
    for traces in (
        ["--traces", stages.folder],
        ["--traces", stages.first, "--traces", stages.second],
        ["--traces", f"{stages.folder}/*.duckdb"],
    ):
        data = json.loads(flock("trace", "list", *traces, "--json").output)
        assert len(data) == 1, traces
        (run,) = data
        assert run["run_id"] == first_id and run["name"] == "two-stage"
        assert (run["artifacts"], run["agent_runs"], run["status"]) == (6, 4, "ok")
        assert [(p["run_id"], p["pid"]) for p in run["processes"]] == [
            (first_id, stages.pids[0]),
            (second_id, stages.pids[1]),
        ]
    result = flock("trace", "list", "--traces", stages.folder)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 4 and lines[1].split()[0] == first_id[:8]
    assert lines[2].split()[0] == first_id[:8] and f"├ {stages.labels[0]}" in lines[2]
    assert lines[3].split()[0] == second_id[:8] and f"└ {stages.labels[1]}" in lines[3]
    assert max(len(line) for line in lines) <= 80


def test_show_draws_one_causal_tree_across_both_stores(stages: Stages) -> None:
    first_id, second_id = stages.run_ids()
    both = ["--traces", stages.first, "--traces", stages.second]
    for ref in (first_id[:8], second_id[:8]):  # either process's run id names the whole run
        result = flock("trace", "show", ref, *both)
        assert result.exit_code == 0, result.output
        out = result.output
        assert f"2 processes: {stages.labels[0]} (run {first_id[:8]}), {stages.labels[1]}" in out
        # Story -> writer (first process) -> Draft -> reader (second process) -> Read: one tree
        assert out.index("Story") < out.index("writer") < out.index("Draft") < out.index("reader")
        assert out.index("reader") < out.index("Read ")
        writer_line = next(line for line in out.splitlines() if "writer" in line and "⚙" in line)
        reader_line = next(line for line in out.splitlines() if "reader" in line and "⚙" in line)
        assert writer_line.endswith(f"@ {stages.labels[0]}")
        assert reader_line.endswith(f"@ {stages.labels[1]}")
        assert "runs on artifacts from outside this run" not in out
    tree = json.loads(flock("trace", "show", second_id, *both, "--json").output)
    story = tree["tree"][0]
    (writer,) = story["runs"]
    (draft,) = writer["outputs"]
    (reader,) = draft["runs"]
    assert (story["type"], writer["agent"], draft["type"], reader["agent"]) == (
        "Story",
        "writer",
        "Draft",
        "reader",
    )
    assert (writer["process"], reader["process"]) == stages.labels
    assert reader["outputs"][0]["type"] == "Read" and tree["outside"] == []


def test_one_store_alone_reads_as_before(stages: Stages) -> None:
    """The second process's store by itself: its run is its own, the reader's input from outside."""
    _, second_id = stages.run_ids()
    listed = json.loads(flock("trace", "list", "--traces", stages.second, "--json").output)
    assert [r["run_id"] for r in listed] == [second_id] and "processes" not in listed[0]
    out = flock("trace", "show", "--traces", stages.second).output
    assert "runs on artifacts from outside this run" in out and "@" not in out and "processes" not in out


def test_timeline_and_audit_cover_both_processes(stages: Stages) -> None:
    result = flock("trace", "timeline", "--traces", stages.folder, "--width", "80")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    bars = [line for line in lines if "│" in line and not line.startswith("in progress")]
    assert [line.split()[:2] for line in bars] == [["[1]", "writer"]] * 2 + [["[2]", "reader"]] * 2
    assert any(line.strip() == f"[1] {stages.labels[0]}" for line in lines)
    assert any(line.strip() == f"[2] {stages.labels[1]}" for line in lines)
    data = json.loads(flock("trace", "audit", "--traces", stages.folder, "--json").output)
    first, second = stages.labels
    assert [(e["type"], e["agent"], e["outcome"], e["process"]) for e in data] == [
        ("Story", "writer", "consumed", first),
        ("Story", "writer", "consumed", first),
        ("Draft", "reader", "consumed", second),
        ("Draft", "reader", "embargoed", first),  # held back while the first process ran
        ("Draft", "reader", "consumed", second),
        ("Draft", "reader", "embargoed", first),
    ]
    table = flock("trace", "audit", "--traces", stages.folder).output
    assert table.splitlines()[0].split()[-1] == "process"


def test_sql_sees_the_rows_of_every_store_within_its_limits(stages: Stages) -> None:
    query = "SELECT store, agent FROM spans WHERE name = 'agent.run' ORDER BY start_ns"
    rows = json.loads(flock("trace", "sql", query, "--traces", stages.folder, "--json").output)
    assert [(Path(r["store"]).name, r["agent"]) for r in rows] == [(stages.first.name, "writer")] * 2 + [
        (stages.second.name, "reader")
    ] * 2
    count = json.loads(
        flock("trace", "sql", "SELECT count(*) AS n FROM runs", "--traces", stages.folder, "--json").output
    )
    assert count == [{"n": 2}]  # one run record per process
    for statement in ("DELETE FROM spans", "ATTACH 'other.db'", "SELECT * FROM read_csv('/etc/hostname')"):
        refused = flock("trace", "sql", statement, "--traces", stages.folder)
        assert refused.exit_code == 2, statement
        assert refused.output.startswith("error: query failed:") and "Traceback" not in refused.output
    limited = flock("trace", "sql", "SELECT * FROM spans", "--traces", stages.folder, "--max-rows", "1")
    assert limited.exit_code == 2 and "more than 1 rows (--max-rows)" in limited.output


def test_a_missing_or_unreadable_store_in_the_set_exits_2_with_one_line(
    stages: Stages, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    cases = [
        (["--traces", stages.first, "--traces", tmp_path / "gone.duckdb"], "no trace store at"),
        (["--traces", stages.first, "--traces", tmp_path / "notes.txt"], "is not a DuckDB trace store"),
        (["--traces", tmp_path / "empty"], "no trace store at"),
        (["--traces", f"{tmp_path}/*.duckdb"], "no trace store matches"),
    ]
    for args, message in cases:
        for command in (["list"], ["show"], ["timeline"], ["audit"], ["sql", "SELECT 1"]):
            result = flock("trace", *command, *args)
            assert result.exit_code == 2, (command, args, result.output)
            assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


def test_export_and_metrics_take_every_process_of_the_run(stages: Stages, tmp_path: Path) -> None:
    first_id, second_id = stages.run_ids()
    lines = flock("trace", "export", first_id[:8], "--traces", stages.folder).output.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["run_id"] for r in records if r["record"] == "run"] == [first_id, second_id]
    metrics = flock("trace", "metrics", second_id[:8], "--traces", stages.folder).output
    assert 'flock_agent_runs_total{agent="writer",status="ok"} 2' in metrics
    assert 'flock_agent_runs_total{agent="reader",status="ok"} 2' in metrics
    copy = tmp_path / "copy"
    shutil.copytree(stages.folder, copy)
    pruned = json.loads(flock("trace", "prune", "--older-than", "0s", "--traces", copy, "--json").output)
    assert pruned["deleted"]["runs"] == 2 and pruned["deleted"]["spans"] > 0
    assert all(TraceReader(p).runs() == [] for p in copy.glob("*.duckdb"))


def test_a_workflow_id_shows_that_workflow_alone_across_both_processes(stages: Stages) -> None:
    query = "SELECT correlation_id, min(created_ns) AS t FROM artifacts GROUP BY 1 ORDER BY t"
    rows = json.loads(flock("trace", "sql", query, "--traces", stages.folder, "--json").output)
    _, second = (r["correlation_id"] for r in rows)  # each story is a workflow of its own
    tree = json.loads(flock("trace", "show", second, "--traces", stages.folder, "--json").output)
    assert tree["run"]["workflow"] == second and tree["run"]["name"] == "workflow"
    assert (tree["run"]["artifacts"], tree["run"]["agent_runs"]) == (3, 2)
    (story,) = tree["tree"]
    (writer,) = story["runs"]
    (draft,) = writer["outputs"]
    (reader,) = draft["runs"]
    assert (writer["process"], reader["process"]) == stages.labels and tree["outside"] == []
    query = "SELECT artifact_id, correlation_id FROM artifacts WHERE type = 'Story'"
    stories = json.loads(flock("trace", "sql", query, "--traces", stages.folder, "--json").output)
    assert story["artifact_id"] == next(r["artifact_id"] for r in stories if r["correlation_id"] == second)
    audit = json.loads(flock("trace", "audit", second, "--traces", stages.folder, "--json").output)
    assert [(e["type"], e["outcome"]) for e in audit] == [
        ("Story", "consumed"),
        ("Draft", "consumed"),
        ("Draft", "embargoed"),
    ]
    bars = flock("trace", "timeline", second, "--traces", stages.folder, "--width", "80").output
    assert bars.startswith(f"workflow  {second}  ok")
    text = flock("trace", "show", second, "--traces", stages.folder).output
    assert text.startswith(f"workflow  {second}  ok") and "2 processes:" in text
    assert bars.count("writer") == 1 and bars.count("reader") == 1
    missing = flock("trace", "show", "00000000-0000-4000-8000-000000000000", "--traces", stages.folder)
    assert missing.exit_code == 2 and "no workflow 00000000-0000-4000-8000-000000000000" in missing.output
    refused = flock("trace", "export", second, "--traces", stages.folder)
    assert refused.exit_code == 2 and "export takes a run id, not a workflow id" in refused.output


async def test_a_flock_given_a_folder_writes_its_own_store_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for named in (str(tmp_path / "new") + "/", tmp_path):  # a path ending with / is made a folder
        flock_ = Flock(store=SQLiteBlackboardStore(tmp_path / "board.db"), traces=named)
        flock_.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
        async with flock_.traced_run("folder"):
            await flock_.publish(Idea(topic="a"))
            await flock_.run_until_idle()
        await flock_.shutdown()
        (store,) = Path(named).glob("*.duckdb")
        assert store.name == f"{socket.gethostname()}-{__import__('os').getpid()}.duckdb"
        run = TraceReader(Path(named)).run(None)  # a reader takes the folder too
        assert (run.name, run.agent_runs, run.board) == ("folder", 1, str((tmp_path / "board.db").resolve()))
        store.unlink()
    monkeypatch.setenv("FLOCK_TRACES", str(tmp_path / "env"))  # FLOCK_TRACES may name a folder too
    (tmp_path / "env").mkdir()
    flock_ = Flock()
    flock_.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    async with flock_.traced_run("env"):
        await flock_.publish(Idea(topic="b"))
        await flock_.run_until_idle()
    await flock_.shutdown()
    listed = json.loads(flock("trace", "list", "--json").output)  # read from $FLOCK_TRACES, the folder
    assert [(r["name"], r["agent_runs"]) for r in listed] == [("env", 1)] and "board" not in listed[0]


def test_runs_of_processes_on_one_board_group_when_they_overlap_or_share_artifacts() -> None:
    from flock_cli.tracing.board_runs import ProcessRun, group_runs

    def _run(
        trace_id: str, start: float, end: float, pid: int, board: str | None, host: str = "h"
    ) -> ProcessRun:
        return ProcessRun(trace_id, int(start), end, pid, host, board)

    url = "postgresql://flock:***@db:5432/flock"
    runs = [
        _run("a", 0, 10, 1, url),
        _run("b", 5, math.inf, 2, url, host="other"),  # still going, on another host: same URL
        _run("c", 20, 30, 3, url),  # overlaps b, which is still going
        _run("d", 0, 10, 4, "/boards/x.db"),
        _run("e", 5, 8, 5, "/boards/x.db", host="elsewhere"),  # the same path on another host
        _run("f", 100, 110, 6, None),
        _run("g", 200, 210, 7, None),  # no board; consumed what f published
        _run("h", 0, 10, 8, "/boards/y.db"),
        _run("i", 5, 15, 8, "/boards/y.db"),  # overlaps h, but the same process: not merged
        _run("j", 300, 310, 9, "/boards/z.db"),
        _run("k", 311, 320, 10, "/boards/z.db"),  # the same board, after j: not merged
        ProcessRun("l", 6, 7, 11, "h", url, void=True),  # failed having done nothing: alone
        ProcessRun("m", 400, 500, 12, "h", "/boards/v.db", void=True),
        _run("n", 450, 460, 13, "/boards/v.db"),  # overlaps only a void run: alone too
    ]
    assert group_runs(runs, [("g", "f"), ("zz", "f")]) == [["a", "b", "c"], ["f", "g"]]


def test_a_killed_run_lives_until_the_last_heartbeat_its_reaper_saw() -> None:
    from flock_cli.tracing.board_runs import ProcessRun, _lived_until_reaped, group_runs

    url, other = "postgresql://flock@db:5432/flock", "postgresql://flock@db:5432/other"
    killed = ProcessRun("a", 0, 5, 1, "h", url)  # last record at 5, killed later
    old = ProcessRun("o", -100, -90, 1, "h", url)  # the same pid, long ago: another process
    reaper = ProcessRun("b", 10, math.inf, 2, "h", url)
    elsewhere = ProcessRun("c", 10, math.inf, 3, "h", other)
    runs = [old, killed, reaper, elsewhere]
    assert group_runs(runs, []) == []  # by its own records it ended before b started
    for reaped, grouped in (
        ([("b", "h", 1, 12)], [["a", "b"]]),  # its heartbeat at 12: alive when b started
        ([("b", "h", 1, 8)], []),  # its last heartbeat before b started: never beside b
        ([("c", "h", 1, 12)], []),  # reaped on another board: another process with that pid
        ([("b", "other-host", 1, 12)], []),
    ):
        lived = _lived_until_reaped(runs, [old, killed], reaped)
        assert group_runs(lived, []) == grouped, reaped
        assert next(r for r in lived if r.trace_id == "o").ended_ns == -90  # the newest run takes it


# -- processes on one PostgreSQL board: who belongs to the board run ------------------------------------

LIVE_DEMO = """
    name: live-demo
    settings: {lease_ttl: 1s}
    types:
      Job: {fields: {n: int}}
      Done: {fields: {n: int}}
    agents:
      worker: {consumes: Job, publishes: Done, engine: test}
"""

CODE_REVIEW = """
    name: code-review
    types:
      Change: {fields: {n: int}}
      Review: {fields: {n: int}}
    agents:
      reviewer: {consumes: Change, publishes: Review, engine: test}
"""


class Board:
    """`flock run` processes on one PostgreSQL board, each tracing into its own store in ``traces``."""

    def __init__(self, cwd: Path, url: str) -> None:
        self.cwd, self.url, self.traces = cwd, url, cwd / "traces"
        self.traces.mkdir()
        self.env = {"FLOCK_TRACES": str(self.traces)}
        self.live = write(cwd / "live_demo.yaml", LIVE_DEMO)
        self.processes: list[subprocess.Popen[str]] = []

    def watch(self) -> subprocess.Popen[str]:
        process = spawn("run", self.live, "--board", self.url, "--watch", cwd=self.cwd, env=self.env)
        self.processes.append(process)
        return process

    def run(self, recipe: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flock_cli", "run", str(recipe), "--board", self.url, *args],
            cwd=self.cwd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def store(self, process: subprocess.Popen[str]) -> Path:
        return self.traces / f"{socket.gethostname()}-{process.pid}.duckdb"

    def events(self, process: subprocess.Popen[str], kind: str) -> int:
        if not self.store(process).exists():
            return 0
        rows = TraceReader(self.store(process)).sql_rows("SELECT count(*) FROM events WHERE kind = ?", [kind])
        return int(rows[0][0]) if rows else 0

    def run_id(self, process: subprocess.Popen[str]) -> str:
        return TraceReader(self.store(process)).run(None).run_id

    def listed(self) -> list[dict[str, Any]]:
        result = flock("trace", "list", "--traces", self.traces, "--json")
        assert result.exit_code == 0, result.output
        data: list[dict[str, Any]] = json.loads(result.output)
        return data

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


@pytest.fixture
def board(tmp_path: Path, postgres_url: str) -> Iterator[Board]:
    shared = Board(tmp_path, postgres_url)
    try:
        yield shared
    finally:
        shared.close()


def test_a_run_refused_by_the_board_stands_alone_and_an_idle_member_belongs(board: Board) -> None:
    """A `flock run` of another recipe is refused at once (failed, nothing recorded): it never worked
    the board, so it is a run of its own; a `--watch` member that ran nothing yet is one of the board
    run, running and once stopped."""
    first = board.watch()
    wait_for(lambda: board.events(first, "board.leading") == 1)  # it joined the board and leads
    other = write(board.cwd / "code_review.yaml", CODE_REVIEW)
    write(board.cwd / "change.json", '[{"n": 1}]')
    refused = board.run(other, "-i", "Change=change.json")
    assert refused.returncode == 2 and "different definition" in refused.stderr, refused.stderr
    (refused_store,) = [p for p in board.traces.glob("*.duckdb") if p != board.store(first)]
    refused_run = TraceReader(refused_store).run(None)
    assert (refused_run.status, refused_run.agent_runs, refused_run.artifacts) == ("failed", 0, 0)
    idle = board.watch()
    wait_for(lambda: board.store(idle).exists() and TraceReader(board.store(idle)).runs() != [])
    ids = (board.run_id(first), board.run_id(idle))
    for status, idle_status in (("running", "running"), ("running", "ok")):
        if idle_status == "ok":
            idle.send_signal(signal.SIGTERM)  # a --watch run's normal stop
            assert idle.wait(timeout=30) == 0
        listed = board.listed()
        assert [(r["run_id"], r["name"], r["status"]) for r in listed] == [
            (refused_run.run_id, "code-review", "failed"),
            (ids[0], "live-demo", status),
        ]
        processes = listed[1]["processes"]
        assert [(p["run_id"], p["status"], p["agent_runs"]) for p in processes] == [
            (ids[0], "running", 0),
            (ids[1], idle_status, 0),
        ]
    shown = json.loads(
        flock("trace", "show", refused_run.run_id[:8], "--traces", board.traces, "--json").output
    )
    assert shown["run"]["run_id"] == refused_run.run_id and "processes" not in shown["run"]


def test_a_killed_idle_member_belongs_to_the_board_run_it_was_part_of(board: Board) -> None:
    """Two `--watch` orchestrators on one board, the first killed (SIGKILL) once the second works:
    idle, the first recorded nothing after it joined, before the second started; the board's
    heartbeats say how long it lived (the second reaped it), and its run is one of the board run."""
    first = board.watch()
    wait_for(lambda: board.events(first, "board.leading") == 1)
    time.sleep(_QUIET_SECONDS + 1)  # idle: it stops its status snapshots too, and records nothing
    second = board.watch()
    wait_for(lambda: board.store(second).exists() and TraceReader(board.store(second)).runs() != [])
    time.sleep(1.5)  # both live on the board
    first.kill()
    first.wait(timeout=30)
    wait_for(lambda: board.events(second, "board.reaped") == 1)  # its heartbeat stopped: reaped
    first_id, second_id = board.run_id(first), board.run_id(second)
    last = TraceReader(board.store(first)).sql_rows(
        "SELECT greatest((SELECT max(end_ns) FROM spans), (SELECT max(ts_ns) FROM events),"
        " (SELECT max(ts_ns) FROM status))"
    )[0][0]
    assert last < TraceReader(board.store(second)).run(None).started_ns  # the case at hand
    (run,) = board.listed()
    assert (run["run_id"], run["name"], run["status"]) == (first_id, "live-demo", "running")
    assert [(p["run_id"], p["status"]) for p in run["processes"]] == [
        (first_id, "interrupted"),
        (second_id, "running"),
    ]
    shown = flock("trace", "show", second_id[:8], "--traces", board.traces).output
    assert f"2 processes: {socket.gethostname()}:{first.pid} (run {first_id[:8]})" in shown
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    (run,) = board.listed()
    assert [(p["run_id"], p["status"]) for p in run["processes"]] == [
        (first_id, "interrupted"),
        (second_id, "ok"),
    ]
