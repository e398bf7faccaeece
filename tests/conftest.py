from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from flock_cli import Flock, ManualClock, SequentialIds
from tests.otlp_receiver import collector  # noqa: F401  # a fixture, found by its name
from tests.postgres_server import PostgresServer, start_session_server

MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: a worker per core, at most :data:`MAX_WORKERS`. Each worker may start a
    PostgreSQL server of its own, and many tests start real processes and time their faults: more
    workers than that load the machine more than they speed the suite up."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def flock(clock: ManualClock) -> Flock:
    """A flock on a manual clock with deterministic ids and jitter."""
    return Flock(clock=clock, id_factory=SequentialIds(), rng=random.Random(7))


@pytest.fixture(autouse=True)
def _traces_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests write no traces unless they test tracing (each traced flock starts an ingest process).

    The whole suite also passes with tracing on: run it with FLOCK_TEST_TRACES=1.
    """
    if not os.environ.get("FLOCK_TEST_TRACES"):
        monkeypatch.setenv("FLOCK_TRACES", "off")


@pytest.fixture(autouse=True)
def _no_real_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real model: the block switch is on, and a developer's own model
    settings do not leak in. Tests inject DSPy's DummyLM or a scripted LM instead."""
    monkeypatch.setenv("FLOCK_BLOCK_MODEL_CALLS", "1")
    monkeypatch.setenv("FLOCK_LOCAL_MODEL", "off")  # the same results with or without the [local] extra
    for name in ("FLOCK_MODEL", "DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_board_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's FLOCK_BOARD would send every command's board elsewhere: tests set it
    themselves when they test it."""
    monkeypatch.delenv("FLOCK_BOARD", raising=False)


# -- PostgreSQL (tests/postgres_server.py) --------------------------------------------------------------
POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url"})


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server of the session's own, stopped and deleted at its end. Skipped with
    the reason when psycopg or the server binaries are missing (a failure with FLOCK_REQUIRE_POSTGRES=1)."""
    server = start_session_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new empty database for this test (superuser flock, over TCP), dropped after it."""
    postgres_server.start()  # a no-op, unless an earlier test stopped the server and failed before a start
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.start()
    postgres_server.drop_database(name)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `pytest -m postgres` selects these tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the PostgreSQL server (through any fixture chain) with `postgres`."""
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
