"""Embargoes across runs and in --watch (issue 14, item 5): work waiting for an embargo is
reported as waiting (not as denials), a later run does it and ends well, and an embargo lifting
on an exclusive group shared by two agents gives exactly one run."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.test_cli import cli, spawn, wait_for, write

RECIPE = """
    name: embargo
    types:
      Story: {fields: {n: int}}
      Draft: {fields: {n: int}}
      Read: {fields: {n: int}}
    agents:
      writer:
        consumes: Story
        publishes: {type: Draft, visibility: {kind: after, ttl: TTL}}
        engine: test
      desk_a: {consumes: {types: Draft, group: desk}, publishes: Read, engine: test}
      desk_b: {consumes: {types: Draft, group: desk}, publishes: Read, engine: test}
"""


def setup(tmp_path: Path, ttl: str = "2s") -> Path:
    write(tmp_path / "story.json", '{"n": 1}')
    return write(tmp_path / "embargo.yaml", RECIPE.replace("TTL", ttl))


def test_a_later_run_does_the_embargoed_work_and_ends_well(tmp_path: Path) -> None:
    # Long enough for the second run to start while the first story is still embargoed, on a
    # loaded machine too: each run is a process of its own.
    recipe = setup(tmp_path, ttl="6s")
    first = cli("run", recipe, "-i", "Story=story.json", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    summary = data["summary"]
    assert summary["visibility_denials"] == 0 and summary["embargoed"] == 1  # waiting, not denied
    (waiting,) = summary["pending_embargoes"]
    assert waiting["agent"] == "group:desk" and sorted(waiting["agents"]) == ["desk_a", "desk_b"]
    text = cli("run", recipe, "-i", "Story=story.json", cwd=tmp_path)
    # two stories on the board now: one delivery each, whichever desk takes it (not one per desk)
    assert "2 deliveries waiting for an embargo" in text.stdout
    assert "the next flock run on this board delivers them" in text.stdout
    lifts = re.search(r"the last lifts (\S+);", text.stdout)
    assert lifts is not None, text.stdout
    time.sleep(max(0.0, (datetime.fromisoformat(lifts.group(1)) - datetime.now(UTC)).total_seconds()) + 0.2)
    second = cli("run", recipe, "--json", "--traces", "traces.duckdb", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr  # not "nothing to run" (exit 2)
    done = json.loads(second.stdout)
    assert sum(done["summary"]["runs_by_agent"].values()) == 2  # both stories' drafts, once each
    assert done["summary"]["pending_embargoes"] == []
    listed = cli("trace", "list", "--json", "--traces", "traces.duckdb", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] == ["ok"]  # not marked failed


def test_an_embargo_lifting_on_a_shared_group_during_watch_runs_once(tmp_path: Path) -> None:
    recipe = setup(tmp_path)
    proc = spawn("run", recipe, "--watch", "--quiet", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".flock" / "embargo.db").exists())
        write(tmp_path / "stories.json", json.dumps([{"n": n} for n in range(4)]))
        assert cli("publish", "Story", "stories.json", "--recipe", recipe, cwd=tmp_path).returncode == 0

        def reads() -> int:
            listed = cli("board", "list", "--recipe", recipe, "--type", "Read", "--json", cwd=tmp_path)
            return int(json.loads(listed.stdout)["total"])

        wait_for(lambda: reads() == 4, timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "already claimed" not in out + err and "failed" not in out
    assert reads() == 4
