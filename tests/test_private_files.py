"""The board and the trace store hold every payload, so they are created readable by their owner only."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flock_cli import Artifact
from flock_cli.private_files import make_private_dirs, owner_only_umask
from flock_cli.store.sqlite import SQLiteBlackboardStore

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask, which makes new files readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_real_run_leaves_only_owner_only_files_in_flock(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOCK_TRACES"}  # the default trace store
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "run", ROOT / "recipes" / "multi_tenant.yaml", "--engine", "test",
         "--input", f"SupportRequest={ROOT / 'recipes' / 'inputs' / 'support_requests.json'}", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, umask=0o022,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = tmp_path / ".flock"
    assert mode(folder) == 0o700
    made = {p.name: mode(p) for p in folder.rglob("*")}
    assert {"multi-tenant.db", "traces.duckdb"} <= set(made)
    assert {name: m & 0o077 for name, m in made.items()} == dict.fromkeys(made, 0)
    assert made["multi-tenant.db"] == made["traces.duckdb"] == 0o600


def test_the_boards_wal_and_shared_memory_files_follow_the_board(tmp_path: Path, open_umask: None) -> None:
    async def go() -> dict[str, int]:
        store = SQLiteBlackboardStore(tmp_path / "deep" / "er" / "board.db")
        try:
            await store.append([Artifact(type="Note", payload={"secret": "s"})])
            return {p.name: mode(p) for p in (tmp_path / "deep" / "er").iterdir()}  # while it is open
        finally:
            await store.close()

    files = asyncio.run(go())
    assert files == {"board.db": 0o600, "board.db-wal": 0o600, "board.db-shm": 0o600}
    assert mode(tmp_path / "deep") == mode(tmp_path / "deep" / "er") == 0o700


def test_existing_boards_and_folders_keep_their_mode(tmp_path: Path, open_umask: None) -> None:
    shared = tmp_path / "team"
    shared.mkdir(mode=0o750)
    board = shared / "board.db"
    asyncio.run(SQLiteBlackboardStore(board).close())
    board.chmod(0o640)  # an operator opened it to a group on purpose
    asyncio.run(SQLiteBlackboardStore(board).close())
    assert mode(board) == 0o640 and mode(shared) == 0o750


def test_trace_store_writes_make_owner_only_wal_files(tmp_path: Path, open_umask: None) -> None:
    import duckdb

    path = tmp_path / "traces.duckdb"
    with owner_only_umask():
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE t (payload VARCHAR)")
        con.execute("INSERT INTO t VALUES ('secret')")
        wal = path.with_name(path.name + ".wal")
        assert wal.exists() and mode(wal) == 0o600  # checked while the connection holds it
        con.close()
    assert mode(path) == 0o600
    assert os.umask(0o022) == 0o022  # the block gave the umask back


def test_private_folders_ignore_an_odd_umask(tmp_path: Path) -> None:
    previous = os.umask(0o277)  # would leave the owner unable to write into the folder
    try:
        make_private_dirs(tmp_path / "a" / "b")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
