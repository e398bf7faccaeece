"""A model described by more than its name: where it is served, whose key it takes, how fast it
may be called.

A recipe's ``model:`` (at the top, or on a dspy engine) is a model string or a mapping
(``{name: openai/qwen, api_base: http://127.0.0.1:8080/v1, api_key_env: MY_KEY,
rate_limit: {requests_per_minute: 60}}``); in Python it is a string or a :class:`Model`, accepted
by ``Flock(model=...)`` and ``DSPyEngine(model=...)``. The API key is only ever read from the
environment variable the model names, when a call is made: it is never part of a recipe, a
trace or a recording.

A :class:`Model` owns the rate limiter of its ``rate_limit`` (``rate_limit.py``): every agent
given the same ``Model`` object shares it. A compiled recipe makes one ``Model`` per distinct
model (name and ``api_base``), so the agents of one flock that use a model share one limiter.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from flock_cli.engines.rate_limit import RateLimit, RateLimiter
from flock_cli.errors import ModelNotConfiguredError

__all__ = ["DEFAULT_MAX_WAIT", "Model", "as_model", "local_settings_problem", "model_name", "pick_model"]

DEFAULT_MAX_WAIT = 300.0
"""Seconds one model call may spend in all waiting out a provider's 429 answers (by default)."""


class Model(BaseModel):
    """A model to call, with its connection and limits.

    Args:
        name: a DSPy/LiteLLM model string (``openai/gpt-4o-mini``; ``openai/NAME`` with
            ``api_base`` for any OpenAI-compatible server).
        api_base: the server's base URL (``http://127.0.0.1:8080/v1``).
        api_key_env: the environment variable holding the API key (read at call time, never
            traced or recorded).
        rate_limit: requests and tokens per minute (:class:`RateLimit`), shared by every agent
            that uses this model.
        max_rate_limit_wait: seconds one call may spend in all waiting out the provider's
            ``429 Too Many Requests`` answers before it fails (a ``Retry-After`` longer than
            what is left is not waited for).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"\S", description="DSPy/LiteLLM model string")
    api_base: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="base URL (http:// or https://) of the model's server",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the API key (never written in the recipe)",
    )
    rate_limit: RateLimit | None = Field(default=None, description="requests/tokens per minute")
    max_rate_limit_wait: float = Field(
        default=DEFAULT_MAX_WAIT, gt=0, description="seconds a call may wait out 429 answers in all"
    )
    _limiter: RateLimiter | None = PrivateAttr(default=None)

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        super().__init__(**data)

    @field_validator("name")
    @classmethod
    def _stripped(cls, name: str) -> str:
        return name.strip()  # " openai/x" would not be recognised as the flock's model

    @model_validator(mode="after")
    def _enforceable(self) -> Model:
        problem = local_settings_problem(self.name, self.model_dump(exclude_unset=True))
        if problem is not None:
            raise ValueError(problem)
        return self

    def api_key(self) -> str | None:
        """The API key from ``api_key_env``; None when no variable is named. A named variable that
        is unset or empty is a configuration error, said before any call."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key.strip():
            raise ModelNotConfiguredError(
                f"model '{self.name}' takes its API key from the environment variable"
                f" {self.api_key_env}, which is not set"
            )
        return key

    def redact(self, text: str) -> str:
        """``text`` with this model's API key (should a provider quote it back in an error)
        replaced by the name of its variable, ``${VARIABLE}``."""
        if self.api_key_env is None:
            return text
        key = os.environ.get(self.api_key_env, "")
        if len(key.strip()) < 4:  # a key this short would replace ordinary words
            return text
        return text.replace(key, f"${{{self.api_key_env}}}")

    def limiter(self) -> RateLimiter | None:
        """The rate limiter every user of this model shares (None without ``rate_limit``)."""
        if self.rate_limit is None:
            return None
        if self._limiter is None:
            self._limiter = RateLimiter(self.rate_limit)
        return self._limiter


def local_settings_problem(name: str, given: dict[str, Any]) -> str | None:
    """Why a model mapping cannot be honoured, or None: the embedded (in-process) model has no
    server, key or provider rate limit, so those settings would be silently ignored."""
    from flock_cli.engines.local import is_local_model

    ignored = sorted(
        k for k in ("api_base", "api_key_env", "rate_limit", "max_rate_limit_wait") if k in given
    )
    if ignored and is_local_model(name.strip()):
        return (
            f"model '{name}' runs in this process: {', '.join(ignored)} would not apply to it"
            " (serve it over HTTP and name it openai/NAME with an api_base to use them)"
        )
    return None


def as_model(value: str | Model | None) -> Model | None:
    """``value`` as a :class:`Model` (a string is a model with only a name)."""
    if value is None or isinstance(value, Model):
        return value
    return Model(name=value.strip())


def model_name(value: str | Model | None) -> str | None:
    """The model string of ``value`` (None for None or a blank string)."""
    if isinstance(value, Model):
        return value.name
    if value is None or not value.strip():
        return None
    return value.strip()


def pick_model(engine_model: str | Model | None, flock_model: str | Model | None) -> Model | None:
    """The model a dspy engine calls, before the environment is consulted: its own, else the
    flock's. An engine naming the flock's model by its string gets the flock's :class:`Model`
    (its ``api_base``, key and shared rate limiter)."""
    flock = as_model(flock_model) if model_name(flock_model) is not None else None
    if model_name(engine_model) is None:
        return flock
    if isinstance(engine_model, str) and flock is not None and flock.name == engine_model.strip():
        return flock
    return as_model(engine_model)
