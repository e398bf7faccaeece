"""The switch that blocks real model calls.

Tests must never reach a real model by accident: with ``FLOCK_BLOCK_MODEL_CALLS=1`` (the test
suite sets it) or inside :func:`block_model_calls`, building a model client from a model string
raises :class:`ModelCallsBlockedError`, and the local model's first-use check does not run it.
Language models injected into an engine (DSPy's ``DummyLM``, a scripted one) are the caller's
choice and are not blocked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

from flock_cli.errors import ModelCallsBlockedError

__all__ = ["BLOCK_ENV", "block_model_calls", "check_model_calls_allowed", "model_calls_blocked"]

BLOCK_ENV = "FLOCK_BLOCK_MODEL_CALLS"
_BLOCKED: ContextVar[bool] = ContextVar("flock_model_calls_blocked", default=False)
_FALSE = frozenset({"", "0", "false", "no", "off"})


def model_calls_blocked() -> bool:
    """True inside :func:`block_model_calls` or when ``FLOCK_BLOCK_MODEL_CALLS`` is set."""
    return _BLOCKED.get() or os.environ.get(BLOCK_ENV, "").strip().lower() not in _FALSE


def check_model_calls_allowed(model: str) -> None:
    """Raise ModelCallsBlockedError when a real call to ``model`` is not allowed now."""
    if model_calls_blocked():
        raise ModelCallsBlockedError(
            f"a real call to model '{model}' was blocked: model calls are off here"
            f" ({BLOCK_ENV} or block_model_calls()). Inject a language model into the engine"
            " (DSPyEngine(lm=...)) or use the test engine."
        )


@contextlib.contextmanager
def block_model_calls() -> Iterator[None]:
    """Within the block (this task and the tasks it starts), no real model call is made."""
    token = _BLOCKED.set(True)
    try:
        yield
    finally:
        _BLOCKED.reset(token)
