"""A throwaway PostgreSQL server for the tests: a cluster of its own in a temporary folder, listening
only on a free port of 127.0.0.1, started from the server binaries of Debian's ``postgresql`` package
(or of any install whose ``initdb`` is on PATH), and gone when the test session ends, however it ends.

The fixtures in tests/conftest.py skip the tests that use it, with the reason, when the binaries or
psycopg are missing; with FLOCK_REQUIRE_POSTGRES=1 (CI) a missing piece fails those tests instead.
FLOCK_POSTGRES_BINDIR=DIR takes the binaries from DIR (another version, a source build) instead of
searching for them.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest

NEEDED = ("initdb", "postgres")
INSTALL_HINT = "apt-get install -y postgresql"
DEBIAN_ROOTS = (Path("/usr/lib/postgresql"),)
MIN_MAJOR = 13  # DROP DATABASE ... WITH (FORCE), so a test's leftover connections never block the drop
STOP_TIMEOUT = 60.0
START_TIMEOUT = 60.0

StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailable(Exception):
    """No usable PostgreSQL server binaries (or no psycopg): the reason says what is missing."""


class PostgresServerError(RuntimeError):
    """The server binaries are there but the server did not start or stop: the message has its log."""


@dataclass(frozen=True)
class Binaries:
    """The folder holding ``initdb`` and ``postgres`` of one install, and its major version."""

    bindir: Path
    major: int

    def path(self, name: str) -> str:
        return str(self.bindir / name)


def _version_key(folder: Path) -> tuple[int, ...]:
    # Debian names each install's folder by its version: /usr/lib/postgresql/15, /usr/lib/postgresql/9.6.
    parts = folder.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()


def _has_all(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) and (bindir / name).is_file() for name in NEEDED)


def _major_version(bindir: Path) -> int:
    # `postgres --version` answers before its refusal to run as root: "postgres (PostgreSQL) 15.14 (...)".
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if match is None:
        raise PostgresUnavailable(f"{bindir / 'postgres'} --version printed no PostgreSQL version: {out!r}")
    return int(match.group(1))


def find_binaries(environ: Mapping[str, str] = os.environ, roots: Iterable[Path] = DEBIAN_ROOTS) -> Binaries:
    """The server binaries to use: FLOCK_POSTGRES_BINDIR when set, else the folder of the ``initdb`` on
    PATH (with ``postgres`` beside it), else the highest version under Debian's /usr/lib/postgresql/*/bin.
    Raises PostgresUnavailable with the reason when none is found or the one found is too old."""
    if explicit := environ.get("FLOCK_POSTGRES_BINDIR"):
        candidates = [Path(explicit)]
        where = f" in FLOCK_POSTGRES_BINDIR={explicit}"
    else:
        candidates = []
        on_path = shutil.which("initdb", path=environ.get("PATH", ""))
        if on_path is not None:
            candidates.append(Path(on_path).resolve().parent)
        installs = [d for root in roots if root.is_dir() for d in root.iterdir() if _version_key(d)]
        candidates += [d / "bin" for d in sorted(installs, key=_version_key, reverse=True)]
        where = ""
    for bindir in candidates:
        if _has_all(bindir):
            major = _major_version(bindir)
            if major < MIN_MAJOR:
                raise PostgresUnavailable(
                    f"PostgreSQL {major} found in {bindir}; the tests need {MIN_MAJOR} or newer: "
                    + INSTALL_HINT
                )
            return Binaries(bindir, major)
    raise PostgresUnavailable(
        f"PostgreSQL server binaries not found ({', '.join(NEEDED)}){where}: {INSTALL_HINT}"
    )


def require_psycopg() -> None:
    """Raise PostgresUnavailable when psycopg (the [postgres] extra) is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise PostgresUnavailable(f"psycopg is not installed ({e}): pip install -e '.[postgres]'") from e


def unavailable(reason: str, environ: Mapping[str, str] = os.environ) -> NoReturn:
    """Skip the test with the reason; with FLOCK_REQUIRE_POSTGRES=1 (CI) fail it instead, so a CI
    machine without PostgreSQL cannot pass by skipping the PostgreSQL tests."""
    if environ.get("FLOCK_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (FLOCK_REQUIRE_POSTGRES=1: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on host now: the kernel's pick for a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd:
    # initdb and postgres refuse to run as root (a server bug or SQL injection must not own the machine),
    # and tests here and in CI run as root: the server then runs as Debian's `postgres` system user (the
    # package creates it), or as `nobody` where there is none.
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresServerError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


# The server's keeper, run by the test process with the server's command line. The test process holds
# the only write end of its stdin: it writes a stop mode there to stop the server; when the test process
# dies however it dies (a SIGKILL included), the kernel closes that end, the keeper reads nothing, and
# stops the server at once and deletes its folder. It also exits when the server stops by itself, so
# the test process sees a dead server. Run as the test process's user (with root's Python, which the
# server's user may not be allowed to read); it starts the server as the unprivileged user when root.
_KEEPER = r"""
import os, shutil, signal, subprocess, sys, threading
base, uid, gid, *argv = sys.argv[1:]
ids = {} if uid == "-" else {"user": int(uid), "group": int(gid), "extra_groups": []}
server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=base, **ids)
stopping = threading.Event()
def follow():
    status = server.wait()
    if not stopping.is_set():
        os._exit(status if status >= 0 else 128 - status)
threading.Thread(target=follow, daemon=True).start()
word = sys.stdin.readline().strip()
stopping.set()
signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
server.send_signal(signals.get(word, signal.SIGQUIT))
status = server.wait()
if not word:
    shutil.rmtree(base)
sys.exit(status if status >= 0 else 128 - status)
"""


class PostgresServer:
    """One throwaway cluster: superuser ``flock`` with trust authentication, over TCP on 127.0.0.1 only.

    ``start()``/``stop()`` keep the port and the data, so a URL handed out before a stop works again after
    the next start. ``execute()`` runs SQL as the superuser (``pg_terminate_backend`` and the like).
    ``destroy()`` stops it and deletes its folder; it is registered with atexit as well.
    """

    host = "127.0.0.1"
    user = "flock"

    def __init__(self, binaries: Binaries, base: Path, port: int) -> None:
        self.binaries = binaries
        self.base = base
        self.datadir = base / "data"
        self.log_path = base / "postgres.log"
        self.port = port
        self._owner_pid = os.getpid()  # a forked child must not stop its parent's server at its exit
        self._runs_as = _unprivileged_user() if os.geteuid() == 0 else None
        self._keeper: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._names = itertools.count(1)
        self._destroyed = False

    @classmethod
    def create(cls, binaries: Binaries) -> PostgresServer:
        """initdb a new cluster in a new temporary folder and start it on a free port."""
        server = cls(binaries, Path(tempfile.mkdtemp(prefix="flock-pg-")), free_port())
        atexit.register(server.destroy)
        try:
            server._initdb()
            server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    # -- addresses -------------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._keeper is not None and self._keeper.poll() is None

    # -- life cycle ------------------------------------------------------------------------------------
    def _ids(self) -> dict[str, Any]:
        if self._runs_as is None:
            return {}
        return {"user": self._runs_as.pw_uid, "group": self._runs_as.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        if self._runs_as is not None:
            os.chown(self.base, self._runs_as.pw_uid, self._runs_as.pw_gid)
        done = subprocess.run(
            [
                self.binaries.path("initdb"),
                *("-D", str(self.datadir), "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C"),
                *("--no-sync", "--no-instructions"),
            ],
            cwd=self.base,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env=_server_env(),
            **self._ids(),
        )
        if done.returncode != 0:
            raise PostgresServerError(
                f"initdb failed with exit code {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.base),
            "max_connections": "200",
            # Speed for a cluster that is thrown away: no fsync and no full-page images. Commits stay
            # synchronous: with fsync off they cost one write() to the page cache, and an asynchronous
            # commit would be lost by stop("immediate"), which tests use to play a crashed server.
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "on",
        }
        args = [a for name, value in settings.items() for a in ("-c", f"{name}={value}")]
        return [self.binaries.path("postgres"), "-D", str(self.datadir), *args]

    def start(self) -> None:
        """Start the server (no-op when running) and wait until it accepts connections."""
        with self._lock:
            if self.running:
                return
            if self._destroyed:
                raise PostgresServerError("this server was destroyed")
            self._reap()
            uid, gid = (str(self._runs_as.pw_uid), str(self._runs_as.pw_gid)) if self._runs_as else ("-", "-")
            with open(self.log_path, "ab") as log:
                self._keeper = subprocess.Popen(
                    [sys.executable, "-I", "-c", _KEEPER, str(self.base), uid, gid, *self._command()],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=log,
                    cwd=self.base,
                    env=_server_env(),
                    start_new_session=True,  # its own process group: Ctrl-C on the tests does not reach it
                )
            self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._keeper is not None
            if self._keeper.poll() is not None:
                code = self._keeper.returncode
                self._reap()
                raise PostgresServerError(
                    f"postgres exited with code {code} while starting:\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=5):
                    return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    self.stop("immediate")
                    raise PostgresServerError(
                        f"postgres did not accept connections within {START_TIMEOUT:.0f} s ({e}):\n"
                        + self.log_tail()
                    ) from e
                time.sleep(0.02)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server, keeping its data (no-op when stopped). ``smart`` waits for the clients to
        leave, ``fast`` disconnects them and shuts down cleanly, ``immediate`` quits at once like a crash
        (the next start recovers from the WAL); PostgreSQL's own shutdown modes."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}: smart, fast or immediate")
        with self._lock:
            keeper = self._keeper
            if keeper is None:
                return
            assert keeper.stdin is not None
            if keeper.poll() is None:
                try:
                    keeper.stdin.write(f"{mode}\n".encode())
                    keeper.stdin.flush()
                except BrokenPipeError:
                    pass  # the keeper exited (the server stopped by itself) between poll() and write()
            self._reap()

    def _reap(self) -> None:
        """Wait for the keeper (already told to stop, or gone); kill its process group if it hangs."""
        keeper, self._keeper = self._keeper, None
        if keeper is None:
            return
        assert keeper.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # unflushed bytes cannot matter: it stops either way
            keeper.stdin.close()
        try:
            keeper.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(keeper.pid, signal.SIGKILL)
            keeper.wait()
            raise PostgresServerError(
                f"postgres did not stop within {STOP_TIMEOUT:.0f} s and was killed:\n{self.log_tail()}"
            ) from None

    def destroy(self) -> None:
        """Stop the server at once and delete its folder (idempotent; only in the process that made it)."""
        if os.getpid() != self._owner_pid or self._destroyed:
            return
        with self._lock:
            self._destroyed = True
            atexit.unregister(self.destroy)
            try:
                self.stop("immediate")
            finally:
                if self.base.exists():
                    shutil.rmtree(self.base)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- SQL -------------------------------------------------------------------------------------------
    def execute(self, query: Any, params: Sequence[Any] | None = None, dbname: str = "postgres") -> list[Any]:
        """Run one statement as the superuser in autocommit mode; the rows it returns, if any."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def create_database(self) -> str:
        """Create a new empty database (``test_<n>``) and return its name."""
        from psycopg import sql

        name = f"test_{next(self._names)}"
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        from psycopg import sql

        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _server_env() -> dict[str, str]:
    # The server and initdb see no PG* variables of the developer's (PGDATA, PGPORT...) and a plain locale.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def start_session_server(environ: Mapping[str, str] = os.environ) -> PostgresServer:
    """The session's server: skips (or, with FLOCK_REQUIRE_POSTGRES=1, fails) when psycopg or the server
    binaries are missing; a server that is there but does not start is an error either way."""
    try:
        require_psycopg()
        binaries = find_binaries(environ)
    except PostgresUnavailable as e:
        unavailable(str(e), environ)
    return PostgresServer.create(binaries)
