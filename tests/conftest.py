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
