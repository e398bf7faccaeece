"""What an orchestrator on a shared board tells its operator as it happens: `board:` lines on the
stderr of `flock run` when it takes leases over from a dead process, when it starts routing,
when it joins by force, and when it loses and regains the database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

from flock_cli.core.artifact import Artifact
from flock_cli.store import UNRESTRICTED, DeliveryStatus
from flock_cli.store.contract import Delivery
from flock_cli.store.postgres import PostgresBlackboardStore
from flock_cli.store.postgres_shared import ProcessRecord
from flock_cli.store.records import RoutingTx
from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """
name: notes
types:
  Job:
    fields: {n: int}
  Done:
    fields: {n: int}
agents:
  worker:
    consumes: Job
    publishes: Done
    engine: test
"""


def flock_run(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    recipe = tmp_path / "notes.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "FLOCK_TRACES": "off", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", str(recipe), "--board", url, *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def dead_process_holding_a_lease(url: str) -> Artifact:
    """A process that registered, leased a Job's delivery and died 10 minutes ago."""
    store = PostgresBlackboardStore(url)
    long_ago = store.now() - timedelta(minutes=10)
    job = Artifact(type="Job", payload={"n": 7})
    await store.append([job])
    delivery = Delivery(id=uuid4(), agent="worker", artifact_ids=(job.id,), created_at=long_ago)
    await store.commit_routing(RoutingTx(routed=[job.id], claims=[(job.id, "worker")], deliveries=[delivery]))
    await store.sync()
    await store.register_process(
        ProcessRecord(owner="flock-deadbeef", host="elsewhere", pid=4242, fingerprint="0" * 16,
                      started_at=long_ago, heartbeat_at=long_ago)
    )  # fmt: skip
    assert await store.lease(delivery.id, "flock-deadbeef", now=long_ago, ttl=30) is not None
    await store.close()
    return job


def test_a_takeover_and_the_routing_lead_are_board_lines(tmp_path: Path, postgres_url: str) -> None:
    job = asyncio.run(dead_process_holding_a_lease(postgres_url))
    done = flock_run(tmp_path, postgres_url)
    assert done.returncode == 0, done.stderr
    # 600 s, or a little more when the machine was slow to start the process
    note = r"board: elsewhere pid 4242 stopped beating 6\d\d s ago: its 1 lease\(s\) are pending again"
    assert re.search(note, done.stderr), done.stderr
    assert "board: this process routes the board's artifacts now" in done.stderr
    assert "Traceback" not in done.stderr

    async def outputs() -> list[Artifact]:
        store = PostgresBlackboardStore(postgres_url)
        try:
            assert await store.deliveries(status=DeliveryStatus.LEASED) == []
            return (await store.query(viewer=UNRESTRICTED)).items
        finally:
            await store.close()

    made = [a for a in asyncio.run(outputs()) if a.type == "Done"]
    assert len(made) == 1 and made[0].correlation_id == job.correlation_id  # the dead one's work, done


def test_quiet_keeps_the_warnings_and_drops_the_news(tmp_path: Path, postgres_url: str) -> None:
    asyncio.run(dead_process_holding_a_lease(postgres_url))
    done = flock_run(tmp_path, postgres_url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "stopped beating" in done.stderr
    assert "routes the board's artifacts now" not in done.stderr


async def test_a_lost_and_regained_board_is_said_once_each(
    postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresBlackboardStore(postgres_url)
    await store.ensure_ready()
    with caplog.at_level("WARNING", logger="flock_cli.board"):
        postgres_server.stop()
        reads = [asyncio.create_task(store.query(viewer=UNRESTRICTED)) for _ in range(3)]
        await asyncio.sleep(1.5)
        postgres_server.start()
        pages = await asyncio.wait_for(asyncio.gather(*reads), 60)
    assert all(page.total == 0 for page in pages)
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost the board")]
    back = [r.getMessage() for r in caplog.records if "is back after" in r.getMessage()]
    assert len(lost) == 1 and "reconnecting for up to 60 s" in lost[0], caplog.text
    assert len(back) == 1, caplog.text
    await store.close()


def test_members_are_not_taken_for_dead_after_an_outage_shorter_than_the_reconnect_limit(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    # Each member's heartbeat waited for the board to come back, then wrote the time it had
    # taken before the outage: older than lease_ttl, so the first member to beat again reaped
    # the other, whose leases went to others and whose runs were fenced.
    recipe = tmp_path / "notes.yaml"
    recipe.write_text(RECIPE.replace("name: notes", "name: notes\nsettings: {lease_ttl: 2s}"))
    env = {**os.environ, "FLOCK_TRACES": "off", "COLUMNS": "200"}
    command = [sys.executable, "-m", "flock_cli", "run", str(recipe), "--board", postgres_url, "--watch"]
    members = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        time.sleep(4)  # both joined and beating
        postgres_server.stop()
        time.sleep(6)  # three lease_ttl's worth: every heartbeat written before it is stale
        postgres_server.start()
        time.sleep(6)  # both back, each beating nine times over
    finally:
        for member in members:
            member.send_signal(signal.SIGTERM)
        errs = [member.communicate(timeout=60)[1] for member in members]
    for member, err in zip(members, errs, strict=True):
        assert "is back after" in err, err
        assert "stopped beating" not in err and "taken for dead" not in err, err
        assert member.returncode == 0, err


def test_a_run_counts_each_artifact_it_published_once(tmp_path: Path, postgres_url: str) -> None:
    # The input was counted when `flock run` published it, and again when the same process,
    # routing the board by then, adopted it from the board (4 for 1 input and 1 output).
    (tmp_path / "jobs.json").write_text('[{"n": 1}, {"n": 2}, {"n": 3}]')
    done = flock_run(tmp_path, postgres_url, "-i", "Job=jobs.json", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert (summary["artifacts_published"], summary["agent_runs"]) == (6, 3), summary


def test_psycopg_cleanup_warnings_after_a_lost_connection_stay_off_stderr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # They reached stderr raw ("error ignored terminating <psycopg.AsyncPipeline [BAD] at 0x...>:
    # the connection is lost"), several per outage, beside the board's own one-line notes: now
    # psycopg's loggers drop them (no handler sees them) and the board's log has them at DEBUG,
    # which `flock run` does not print.
    import logging

    import flock_cli.store.postgres_connections  # noqa: F401 (installs the filter)

    with caplog.at_level(logging.DEBUG, logger="flock_cli.board"):
        logging.getLogger("psycopg").warning("error ignored terminating %s: %s", "<pipeline>", "lost\nagain")
        logging.getLogger("psycopg.transaction").warning("error ignored in rollback of %s: x", "<tx>")
        logging.getLogger("psycopg").warning("something else psycopg says")
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "flock_cli.board")
    notes = [r.getMessage() for r in caplog.records if r.name == "flock_cli.board"]
    assert notes == [
        "psycopg: error ignored terminating <pipeline>: lost again",
        "psycopg: error ignored in rollback of <tx>: x",
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "psycopg"] == ["something else psycopg says"]
