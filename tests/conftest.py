from __future__ import annotations

import random

import pytest

from flock_cli import Flock, ManualClock, SequentialIds


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
    import os

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
