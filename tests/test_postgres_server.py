"""The throwaway PostgreSQL server of the tests (tests/postgres_server.py), through real use: psycopg's
async client against it, databases per test, stops and restarts, killed backends, the search for the
server binaries, the skip (or failure) when they are missing, and no server left behind by a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, PostgresUnavailable, find_binaries

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")

ROOT = Path(__file__).resolve().parent.parent


async def test_psycopg_async_writes_a_table_and_reads_it_back(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://flock@127.0.0.1:")
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        await conn.execute("CREATE TABLE artifacts (id serial PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO artifacts (body) VALUES (%s), (%s)", ("ünïcode", "b"))
        await conn.commit()
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute("SELECT body FROM artifacts ORDER BY id")
        assert await cur.fetchall() == [("ünïcode",), ("b",)]
        cur = await conn.execute("SHOW listen_addresses")
        assert await cur.fetchone() == ("127.0.0.1",)


async def test_two_databases_do_not_see_each_other(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    other = postgres_server.create_database()
    try:
        async with (
            await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as mine,
            await psycopg.AsyncConnection.connect(postgres_server.url(other), autocommit=True) as theirs,
        ):
            await mine.execute("CREATE TABLE t (x int)")
            await mine.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(psycopg.errors.UndefinedTable):
                await theirs.execute("SELECT x FROM t")
            await theirs.execute("CREATE TABLE t (x int)")
            await theirs.execute("INSERT INTO t VALUES (2)")
            assert await (await mine.execute("SELECT x FROM t")).fetchall() == [(1,)]
            assert await (await theirs.execute("SELECT x FROM t")).fetchall() == [(2,)]
    finally:
        postgres_server.drop_database(other)
    assert postgres_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [other]) == []


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_stop_and_a_start_keep_the_data_and_the_url(
    postgres_server: PostgresServer, postgres_url: str, mode: str
) -> None:
    port = postgres_server.port
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        postgres_server.stop(mode)  # type: ignore[arg-type]
        assert not postgres_server.running
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 1")  # the open connection was cut
    with pytest.raises(psycopg.OperationalError):
        await psycopg.AsyncConnection.connect(postgres_url, connect_timeout=5)  # and nobody listens
    postgres_server.start()
    assert postgres_server.running and postgres_server.port == port
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        assert await (await conn.execute("SELECT count(*), sum(x) FROM t")).fetchone() == (100, 5050)


def test_an_unknown_stop_mode_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="unknown stop mode 'sudden'"):
        postgres_server.stop("sudden")  # type: ignore[arg-type]
    assert postgres_server.running


async def test_terminating_a_backend_gives_its_client_an_operational_error(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        assert postgres_server.execute("SELECT pg_terminate_backend(%s)", [pid]) == [(True,)]
        with pytest.raises(psycopg.OperationalError, match="terminating connection"):
            await conn.execute("SELECT 1")
        assert conn.closed
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:  # the others go on
        assert await (await other.execute("SELECT 1")).fetchone() == (1,)


# -- finding the server binaries ---------------------------------------------------------------------------
def _fake_install(bindir: Path, version: str, names: tuple[str, ...] = ("initdb", "postgres")) -> Path:
    bindir.mkdir(parents=True)
    for name in names:
        exe = bindir / name
        exe.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version} (Debian {version}-1)'\n")
        exe.chmod(0o755)
    return bindir


def test_the_highest_complete_debian_install_is_found(tmp_path: Path) -> None:
    roots = tmp_path / "lib"
    for version in ("9.6", "13", "15"):
        _fake_install(roots / version / "bin", f"{version}.2")
    _fake_install(roots / "17" / "bin", "17.0", names=("initdb",))  # no postgres: not a server install
    (roots / "common").mkdir()
    found = find_binaries({"PATH": ""}, roots=[roots])
    assert (found.bindir, found.major) == (roots / "15" / "bin", 15)


def test_an_initdb_on_path_comes_first_and_flock_postgres_bindir_before_it(tmp_path: Path) -> None:
    roots = tmp_path / "lib"
    _fake_install(roots / "16" / "bin", "16.1")
    on_path = _fake_install(tmp_path / "usr" / "bin", "14.3")
    assert find_binaries({"PATH": f"/nonexistent:{on_path}"}, roots=[roots]).bindir == on_path
    chosen = _fake_install(tmp_path / "src" / "bin", "18.0")
    env = {"PATH": str(on_path), "FLOCK_POSTGRES_BINDIR": str(chosen)}
    assert find_binaries(env, roots=[roots]).major == 18


def test_missing_or_too_old_binaries_are_unavailable_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailable) as missing:
        find_binaries({"PATH": str(tmp_path)}, roots=[tmp_path / "none"])
    assert str(missing.value) == (
        "PostgreSQL server binaries not found (initdb, postgres): apt-get install -y postgresql"
    )
    with pytest.raises(
        PostgresUnavailable, match=r"not found \(initdb, postgres\) in FLOCK_POSTGRES_BINDIR="
    ):
        find_binaries({"FLOCK_POSTGRES_BINDIR": str(tmp_path)})
    _fake_install(tmp_path / "lib" / "12" / "bin", "12.9")
    with pytest.raises(
        PostgresUnavailable, match=r"PostgreSQL 12 found in .*12/bin; the tests need 13 or newer"
    ):
        find_binaries({"PATH": ""}, roots=[tmp_path / "lib"])


# -- the fixtures as a test run sees them (a nested pytest with tests/conftest.py as its plugin) -----------
NESTED_TESTS = """
import psycopg

def test_plain():
    pass

async def test_uses_postgres(postgres_url):
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
"""


def _nested_pytest(
    tmp_path: Path, tests: str, *args: str, prelude: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_nested.py"
    test_file.write_text(textwrap.dedent(tests))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "PYTEST_"))}
    environ.update(env)
    argv = ["-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    argv += ["-p", "no:cacheprovider", "-q", str(test_file), *args]
    code = f"{prelude}\nimport sys, pytest\nsys.exit(pytest.main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


def test_missing_binaries_skip_the_postgres_tests_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _nested_pytest(tmp_path, NESTED_TESTS, FLOCK_POSTGRES_BINDIR=str(empty))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    [skipped] = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED [1]")]
    assert skipped.endswith(
        f"test_nested.py:7: PostgreSQL server binaries not found (initdb, postgres) in "
        f"FLOCK_POSTGRES_BINDIR={empty}: apt-get install -y postgresql"
    ), done.stdout


def test_missing_binaries_fail_the_postgres_tests_when_ci_requires_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _nested_pytest(
        tmp_path, NESTED_TESTS, FLOCK_POSTGRES_BINDIR=str(empty), FLOCK_REQUIRE_POSTGRES="1"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout, done.stdout
    assert "FLOCK_REQUIRE_POSTGRES=1: the PostgreSQL tests must run" in done.stdout


def test_missing_psycopg_skips_the_postgres_tests_with_the_reason(tmp_path: Path) -> None:
    tests = "def test_plain():\n    pass\n\ndef test_uses_postgres(postgres_url):\n    pass\n"
    # psycopg is installed here: the nested run blocks its import, as an environment without it would.
    done = _nested_pytest(tmp_path, tests, "-rs", prelude="import sys; sys.modules['psycopg'] = None")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "psycopg is not installed" in done.stdout and "pip install -e '.[postgres]'" in done.stdout


def test_dash_m_postgres_selects_the_tests_that_use_the_server_through_any_fixture(tmp_path: Path) -> None:
    tests = NESTED_TESTS + textwrap.dedent("""
        import pytest

        @pytest.fixture
        def board(postgres_url):
            return postgres_url

        def test_through_a_fixture(board):
            pass
    """)
    done = _nested_pytest(tmp_path, tests, "-m", "postgres", "--collect-only")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = [line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line]
    assert listed == ["test_uses_postgres", "test_through_a_fixture"]
    assert "2/3 tests collected (1 deselected)" in done.stdout


def test_a_test_that_fails_with_the_server_stopped_does_not_break_the_next(tmp_path: Path) -> None:
    tests = """
        import psycopg

        def test_fails_during_an_outage(postgres_server):
            postgres_server.stop()
            raise AssertionError("failed while the server was down")

        def test_fails_during_an_outage_with_a_database(postgres_server, postgres_url):
            postgres_server.stop()
            raise AssertionError("failed while the server was down")

        def test_next(postgres_url):
            with psycopg.connect(postgres_url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    """
    done = _nested_pytest(tmp_path, tests)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 failed, 1 passed in"), done.stdout


# -- no server left behind ---------------------------------------------------------------------------------
def test_a_killed_test_process_leaves_no_server_and_no_folder_behind() -> None:
    try:
        binaries = find_binaries()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.postgres_server import Binaries, PostgresServer\n"
        f"server = PostgresServer.create(Binaries(Path({str(binaries.bindir)!r}), {binaries.major}))\n"
        "print(server.url(), server.base, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url, base = proc.stdout.readline().split()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        proc.send_signal(signal.SIGKILL)  # no finalizer, no atexit: only the keeper can clean up
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 60
    while Path(base).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(base).exists(), f"{base} is still there a minute after its test process was killed"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)
