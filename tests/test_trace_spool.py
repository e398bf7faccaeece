"""No trace is lost to a reader: what a flock cannot write while another process holds its trace
store goes to the store's spool, and the next writer or reader writes it, exactly once.

Real processes throughout: ``flock run`` and ``flock trace list`` as commands, readers holding the
store as separate Python processes with DuckDB, an ingester killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flock_cli import Flock, TestEngine
from flock_cli.tracing.reader import TraceReader
from flock_cli.tracing.spool import spool_dir
from flock_cli.tracing.writer import TraceWriter
from tests.models import Idea, Movie

_RECIPE = """
name: spool-check
types:
  Topic:
    fields: {title: str, n: int}
  Notes:
    fields: {title: str, points: "list[str]"}
  Critique:
    fields: {score: int, remark: str}
agents:
  researcher:
    consumes:
      - types: Topic
        where: n > 4
    publishes:
      - type: Notes
        visibility: {kind: private, agents: [critic]}
    max_concurrency: 2
    engine: {kind: test, latency: 1s}
  critic:
    consumes: Notes
    publishes: Critique
    engine: {kind: test, latency: 200ms}
  gossip:
    consumes: Notes
    publishes: Critique
    engine: test
"""
"""Several seconds of work (so that batches are spooled mid-run too), with filtered subscriptions
and visibility denials (so that the run has events as well as spans and artifacts)."""

_HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)  # as a notebook or a dashboard would
    con.execute("SELECT 1").fetchall()
    print("holding", flush=True)
    sys.stdin.read()  # until the test lets go
    con.close()
    """
)

_KILLED_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from flock_cli.tracing import spool
    from flock_cli.tracing.ingest import ingest_spooled

    # Killed right after the first file's transaction commits, before the file is deleted.
    spool._delete = lambda path: os.kill(os.getpid(), signal.SIGKILL)
    ingest_spooled(Path(sys.argv[1]), wait=30)
    """
)


def _flock(
    *args: str | Path, store: Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOCK_TRACES": str(store)}
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,  # only against a hang; nothing here is timed
    )


def _recipe(folder: Path) -> tuple[Path, Path]:
    recipe = folder / "spool_check.yaml"
    recipe.write_text(_RECIPE)
    topics = folder / "topics.json"
    topics.write_text(json.dumps([{"title": f"topic {n}", "n": n} for n in range(1, 13)]))
    return recipe, topics


def _run_args(recipe: Path, topics: Path) -> list[str | Path]:
    return ["run", recipe, "-q", "--json", "--board", ":memory:", "-i", f"Topic={topics}"]


@contextmanager
def _holding(store: Path) -> Iterator[None]:
    """Another process keeps ``store`` open read-only for the whole block."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "holding"
            yield
        finally:
            holder.stdin.close()
            holder.wait(60)


def _waiting(store: Path) -> list[Path]:
    return sorted(spool_dir(store).glob("*.batch")) if spool_dir(store).exists() else []


def _assert_complete(store: Path, outcome: dict[str, Any]) -> None:
    """The store holds the whole run, each row once, as the run itself counted it."""
    reader = TraceReader(store)
    run_id, summary = outcome["trace_run"], outcome["summary"]
    run = reader.run(run_id)
    assert (run.status, run.artifacts, run.agent_runs) == (
        "ok",
        summary["artifacts_published"],
        summary["agent_runs"],
    )
    spans = Counter(s.name for s in reader.spans(run_id))
    inputs = sum(a["produced_by"] == "external" for a in outcome["artifacts"])
    assert spans == {
        "spool-check": 1,
        "flock.publish": inputs,
        "store.append": inputs,
        "flock.schedule": summary["artifacts_published"],
        "agent.run": summary["agent_runs"],
        "stage.evaluate": summary["agent_runs"],
        "engine.call": summary["agent_runs"],
        "store.complete": summary["agent_runs"],
    }
    ((rows, distinct),) = reader.sql_rows(
        "SELECT count(*), count(DISTINCT span_id) FROM spans WHERE trace_id = ?", [run_id]
    )
    assert rows == distinct == sum(spans.values())  # nothing written twice
    stored = reader.sql_rows("SELECT artifact_id FROM artifacts WHERE trace_id = ?", [run_id])
    assert sorted(row[0] for row in stored) == sorted(a["id"] for a in outcome["artifacts"])
    events = Counter(e.kind for e in reader.events(run_id))
    assert events == {
        "visibility.denied": summary["visibility_denials"],
        "subscription.filtered": sum(summary["filtered"].values()),
    }
    assert summary["visibility_denials"] > 0 and summary["filtered"]


def test_a_run_loses_nothing_to_a_reader_holding_the_store_throughout(tmp_path: Path) -> None:
    store = tmp_path / "traces.duckdb"
    recipe, topics = _recipe(tmp_path)
    first = _flock(*_run_args(recipe, topics), store=store, cwd=tmp_path)  # a store to hold
    assert first.returncode == 0, first.stderr
    with _holding(store):
        run = _flock(*_run_args(recipe, topics), store=store, cwd=tmp_path)
        assert run.returncode == 0, run.stderr  # it ended, the store held all along
        outcome = json.loads(run.stdout)
        waiting = _waiting(store)
        assert waiting  # handed off: not in the store yet, and the run says where
        assert any(f"trace batches are waiting in {spool_dir(store)}" in p for p in outcome["trace_problems"])
        assert stat.S_IMODE(spool_dir(store).stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in waiting} == {0o600}
        meanwhile = _flock("trace", "list", "--json", store=store, cwd=tmp_path)
        assert meanwhile.returncode == 0, meanwhile.stderr  # the read works, and says what waits
        assert meanwhile.stderr.strip() == (
            f"note: {len(waiting)} trace batches are waiting in {spool_dir(store)} (the store is"
            " held by another process); they are written when it is free"
        )
    after = _flock("trace", "list", "--json", store=store, cwd=tmp_path)
    assert after.returncode == 0 and after.stderr == "", after.stderr
    listed = {r["run_id"]: r for r in json.loads(after.stdout)}
    row = listed[outcome["trace_run"]]
    assert (row["status"], row["artifacts"], row["agent_runs"]) == ("ok", 28, 16)
    assert _waiting(store) == [] and list(spool_dir(store).iterdir()) == []
    _assert_complete(store, outcome)


def test_many_readers_during_a_run_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "traces.duckdb"
    recipe, topics = _recipe(tmp_path)
    env = {**os.environ, "FLOCK_TRACES": str(store)}
    with subprocess.Popen(
        [sys.executable, "-m", "flock_cli", *map(str, _run_args(recipe, topics))],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        results: list[subprocess.CompletedProcess[str]] = []

        def read() -> None:
            while run.poll() is None:
                if store.exists():  # (before its first write there is no store to read)
                    results.append(_flock("trace", "list", "--json", store=store, cwd=tmp_path))
                else:
                    time.sleep(0.05)

        readers = [threading.Thread(target=read) for _ in range(6)]
        for reader in readers:
            reader.start()
        out, err = run.communicate(timeout=120)
        for reader in readers:
            reader.join(120)
    assert run.returncode == 0, err
    assert results and all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    TraceReader(store).catch_up()  # whatever a reader's hold made the run spool
    assert _waiting(store) == []
    _assert_complete(store, json.loads(out))


async def _spooled_run(tmp_path: Path) -> tuple[Path, str]:
    """A store whose last run went to the spool whole (a reader held the store all along), and
    that run's id. The store holds an earlier run of its own."""
    store = tmp_path / "t.duckdb"
    flock = Flock(traces=store)
    await flock.publish(Idea(topic="before"))
    await flock.shutdown()
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    with _holding(store):
        async with flock.traced_run("spooled") as scope:
            for n in range(5):
                await flock.publish(Idea(topic=str(n)))
            await flock.run_until_idle()
        await flock.shutdown()
        assert len(_waiting(store)) >= 1
        assert any("trace batches are waiting" in p for p in flock.tracer.problems)
    return store, scope.trace_id


def _counts(store: Path, run_id: str) -> tuple[int, ...]:
    ((spans, distinct_spans, artifacts, distinct_artifacts),) = TraceReader(store).sql_rows(
        "SELECT (SELECT count(*) FROM spans WHERE trace_id = $1),"
        " (SELECT count(DISTINCT span_id) FROM spans WHERE trace_id = $1),"
        " (SELECT count(*) FROM artifacts WHERE trace_id = $1),"
        " (SELECT count(DISTINCT artifact_id) FROM artifacts WHERE trace_id = $1)",
        [run_id],
    )
    assert spans == distinct_spans and artifacts == distinct_artifacts  # each row once
    return spans, artifacts


async def test_an_ingester_killed_between_commit_and_delete_writes_nothing_twice(tmp_path: Path) -> None:
    store, run_id = await _spooled_run(tmp_path)
    files = _waiting(store)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_COMMIT, str(store)], capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    claimed = [p for p in spool_dir(store).iterdir() if ".claim-" in p.name]
    assert len(claimed) == 1 and claimed[0].name.startswith(files[0].name.removesuffix(".batch"))
    recorded = TraceReader(store).sql_rows("SELECT value FROM meta WHERE key = 'spooled'")
    assert recorded == [(files[0].name.removesuffix(".batch"),)]  # committed, file left behind

    reader = TraceReader(store)
    assert reader.catch_up() == 0  # the dead ingester's claim is taken over; its file not written again
    assert list(spool_dir(store).iterdir()) == []
    run = reader.run(run_id)
    assert (run.name, run.status, run.artifacts, run.agent_runs) == ("spooled", "ok", 10, 5)
    spans, artifacts = _counts(store, run_id)
    assert artifacts == 10 and spans == len(reader.spans(run_id))


async def test_a_corrupt_spool_file_is_reported_and_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    store, run_id = await _spooled_run(tmp_path)
    folder = spool_dir(store)
    real = _waiting(store)
    garbage = folder / "00000000000000000001-hand-1-000001.batch"  # first in line
    garbage.write_bytes(b"not a spool file at all")
    truncated = folder / "00000000000000000002-disk-1-000001.batch"
    truncated.write_bytes(real[0].read_bytes()[:-7])
    listed = _flock("trace", "list", "--json", "--traces", store, store=store, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    notes = listed.stderr.strip().splitlines()
    assert len(notes) == 2, notes
    assert f"{garbage} is not a trace spool file; moved aside as {folder / garbage.stem}.bad" in notes[0]
    assert f"{truncated} is damaged or truncated (checksum mismatch); moved aside" in notes[1]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [garbage.stem + ".bad", truncated.stem + ".bad"]
    )
    run = next(r for r in json.loads(listed.stdout) if r["run_id"] == run_id)
    assert (run["name"], run["status"], run["artifacts"], run["agent_runs"]) == ("spooled", "ok", 10, 5)
    assert _counts(store, run_id)[1] == 10
    again = _flock("trace", "list", "--traces", store, store=store, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""  # set aside once, not reported on every read


async def test_frames_a_killed_ingest_process_never_acknowledged_are_spooled(tmp_path: Path) -> None:
    store = tmp_path / "t.duckdb"
    first = Flock(traces=store)
    await first.publish(Idea(topic="before"))
    await first.shutdown()
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    with _holding(store):
        async with flock.traced_run("killed") as scope:
            for n in range(5):
                await flock.publish(Idea(topic=str(n)))
            await flock.run_until_idle()
            writer = flock.tracer.sinks[0]
            assert isinstance(writer, TraceWriter)
            # Until it was given frames, which the held store keeps it from writing (or spooling yet).
            deadline = time.monotonic() + 60
            while not (writer._process and writer._process.unacked) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            process = writer._process
            assert process is not None and process.unacked
            process.popen.kill()
            process.popen.wait()
            await flock.publish(Idea(topic="after"))  # no ingest process to take it now
            await flock.run_until_idle()
        await flock.shutdown()
    problems = " ".join(flock.tracer.problems)
    assert "trace ingest process exited with status -9" in problems and "dropped" not in problems
    run = TraceReader(store).run(scope.trace_id)
    assert (run.name, run.status, run.artifacts, run.agent_runs) == ("killed", "ok", 12, 6)
    assert list(spool_dir(store).iterdir()) == []


async def test_a_large_run_ends_without_waiting_for_its_last_batches_and_they_all_arrive(
    tmp_path: Path,
) -> None:
    """At its end a flock hands what its ingest process has not written yet over (spooled, then
    written by that process after the flock has gone on): nothing is lost, and a reader waits for
    the batches being written rather than showing a partial run."""
    from flock_cli import FunctionEngine
    from tests.models import Tagline

    # Whether the ingest process is still behind at the end depends on how fast this machine
    # writes: on a quick, idle one a run of 3,000 seeds may leave no backlog, so a larger one
    # follows (its backlog grows with its size: the ingest writes slower than the flock runs).
    for seeds in (3000, 12000):
        store = tmp_path / f"traces-{seeds}.duckdb"
        flock = Flock(traces=store, max_agent_iterations=seeds + 1)
        flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(
            FunctionEngine(lambda i: Movie(title=f"About {i.artifacts[0].payload['topic']}", runtime=90))
        )
        flock.agent("pitch").consumes(Movie).publishes(Tagline).with_engines(TestEngine())
        async with flock.traced_run("large"):
            await flock.publish_many([Idea(topic=f"t{n}") for n in range(seeds)])
            await flock.run_until_idle()
        await flock.shutdown()
        assert flock.tracer.problems == []
        [writer] = [sink for sink in flock.tracer.sinks if isinstance(sink, TraceWriter)]
        if writer.handed_off:
            break
    assert writer.handed_off, "the run was too small to leave a backlog: the hand-off went untested"
    # No reader comes: the ingest process writes the hand-off into the store on its own.
    deadline = time.monotonic() + 60
    while spool_dir(store).exists() and any(spool_dir(store).iterdir()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(spool_dir(store).iterdir()), list(spool_dir(store).iterdir())
    reader = TraceReader(store)
    run = reader.run(None)
    assert (run.status, run.agent_runs, run.artifacts) == ("ok", 2 * seeds, 3 * seeds)
    counted = reader.sql_rows("SELECT count(*) FROM spans WHERE name = 'agent.run'")
    assert counted == [(2 * seeds,)]  # each once
    assert not spool_dir(store).exists() or not any(spool_dir(store).iterdir())  # all written


async def test_what_a_detached_ingest_process_could_not_write_is_reported_by_the_next_reader(
    tmp_path: Path, capsys: Any
) -> None:
    from flock_cli.tracing import spool

    store = tmp_path / "traces.duckdb"
    flock = Flock(traces=store)
    flock.agent("writer").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    await flock.publish(Idea(topic="a"))
    await flock.run_until_idle()
    await flock.shutdown()
    # What the ingest process logs once its flock has stopped listening (a file set aside, say).
    spool.log_problems(store, ["spooled traces 123 were set aside as 123.bad: not a spool file"])
    TraceReader(store).runs()
    assert "note: spooled traces 123 were set aside" in capsys.readouterr().err
    TraceReader(store).runs()
    assert "set aside" not in capsys.readouterr().err  # reported once
