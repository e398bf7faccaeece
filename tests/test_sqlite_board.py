"""The runtime on a real SQLite file: persistence across opens, schema versioning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flock_cli import Flock, TestEngine, UserError
from flock_cli.store import UNRESTRICTED, DeliveryStatus, SQLiteBlackboardStore
from flock_cli.store.sqlite_schema import SCHEMA_VERSION
from tests.models import BugReport, CodeSubmission, FinalReview, SecurityReport


async def test_pipeline_on_sqlite_persists_everything(tmp_path: Path) -> None:
    path = tmp_path / "board.db"
    flock = Flock(store=SQLiteBlackboardStore(path))
    flock.agent("bugs").consumes(CodeSubmission).publishes(BugReport).with_engines(TestEngine())
    flock.agent("security").consumes(CodeSubmission).publishes(SecurityReport).with_engines(TestEngine())
    flock.agent("reviewer").consumes(BugReport, SecurityReport, join={"window": 60}).publishes(
        FinalReview
    ).with_engines(TestEngine())
    for i in range(3):
        await flock.publish(CodeSubmission(code=f"print({i})", language="python"))
    summary = await flock.run_until_idle()
    assert summary.ok and summary.agent_runs == 9
    await flock.shutdown()
    await flock.store.close()

    reopened = SQLiteBlackboardStore(path)
    assert len(await reopened.get_by_type(FinalReview)) == 3
    assert len(await reopened.list(viewer=UNRESTRICTED)) == 12
    done = await reopened.deliveries(status=DeliveryStatus.DONE)
    assert len(done) == 9 and all(d.attempts == 1 for d in done)
    await reopened.close()


async def test_schema_version_is_recorded_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "board.db"
    store = SQLiteBlackboardStore(path)
    assert store.schema_version_before == 0
    await store.close()
    again = SQLiteBlackboardStore(path)
    assert again.schema_version_before == SCHEMA_VERSION
    await again.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="upgrade flock-flow"):
        SQLiteBlackboardStore(path)


async def test_default_location_is_dot_flock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await SQLiteBlackboardStore().close()
    assert (tmp_path / ".flock" / "board.db").exists()
    journal = sqlite3.connect(tmp_path / ".flock" / "board.db").execute("PRAGMA journal_mode").fetchone()
    assert journal == ("wal",)


async def test_a_write_after_close_fails_cleanly(tmp_path: Path) -> None:
    store = SQLiteBlackboardStore(tmp_path / "b.db")
    await store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="is closed"):
        await store.release_leases("nobody")
