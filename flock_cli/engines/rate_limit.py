"""Rate limits per model: requests and tokens per minute, and waiting out a provider's 429.

One :class:`RateLimiter` belongs to one :class:`~flock_cli.engines.model_spec.Model` and is
shared by every agent (and thread) that calls it:

- ``requests_per_minute``: request starts are spaced evenly, at most one every ``60 / N``
  seconds (never a burst the provider's per-minute window would refuse);
- ``tokens_per_minute``: a bucket of ``M`` tokens refilled at ``M / 60`` per second; each
  answer's reported usage (input + output tokens) is taken from it, and a request waits while
  it is empty;
- a provider's ``429`` pauses every caller of the model until its ``Retry-After`` has passed.

How long to wait after a 429 (:func:`retry_delay`): the ``Retry-After`` header (seconds or an
HTTP date) when the provider sends one, else a bounded exponential backoff (1, 2, 4, ... up to
30 seconds). A call waits out 429s for at most its model's ``max_rate_limit_wait`` seconds in
all; a ``Retry-After`` longer than what is left fails the call at once, so a hostile or broken
provider cannot stall a run forever.

Whoever waits says so (:func:`on_wait`): the DSPy engine turns each wait into a
``model.rate_limit_wait`` trace event, which ``flock top`` shows as ``waiting: rate limit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BACKOFF_CAP", "RateLimit", "RateLimiter", "WaitListener", "notify_wait", "on_wait", "retry_delay"]

BACKOFF_CAP = 30.0
"""The longest wait after a 429 without a ``Retry-After`` (seconds)."""

WaitListener = Callable[[float, str], None]
"""Told ``(seconds, reason)`` before a call waits; reason is ``requests``, ``tokens`` or ``429``;
or ``queue`` after a call waited for a shared model (the local model's decoder) to take it."""

_SLACK = 0.005  # a timer may fire a little early: sleep past the moment, not to it
_LISTENER: ContextVar[WaitListener | None] = ContextVar("flock_rate_limit_listener", default=None)


class RateLimit(BaseModel):
    """How fast a model may be called, summed over every agent that uses it.

    Requests are spaced evenly (at most one every ``60 / requests_per_minute`` seconds);
    tokens are counted from each answer's reported usage, and a request waits while the tokens
    of the last minute exceed ``tokens_per_minute`` (a bucket refilled continuously).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: float | None = Field(default=None, gt=0, description="requests per minute")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="tokens (input + output) per minute"
    )

    @model_validator(mode="after")
    def _something(self) -> RateLimit:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("a rate_limit needs requests_per_minute, tokens_per_minute or both")
        return self


class RateLimiter:
    """The shared pace of one model (thread-safe; waits are computed here, slept by the caller)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.clock = limit, clock
        self._lock = threading.Lock()
        self._next_start = 0.0  # when the next request may start (requests_per_minute)
        self._paused_until = 0.0  # a provider's 429 pauses every caller
        capacity = float(limit.tokens_per_minute or 0)
        self._tokens, self._filled_at = capacity, clock()

    def _refill(self, now: float) -> None:
        if self.limit.tokens_per_minute is not None:
            rate = self.limit.tokens_per_minute / 60.0
            self._tokens = min(
                float(self.limit.tokens_per_minute), self._tokens + (now - self._filled_at) * rate
            )
        self._filled_at = now

    def reserve(self) -> tuple[float, str]:
        """Take a request's place when one is free now: ``(0, "")``; else how long to wait
        before asking again, and why (``requests``, ``tokens`` or ``429``)."""
        with self._lock:
            now = self.clock()
            self._refill(now)
            waits = [(self._paused_until - now, "429"), (self._next_start - now, "requests")]
            if self.limit.tokens_per_minute is not None and self._tokens <= 0:
                waits.append((-self._tokens / (self.limit.tokens_per_minute / 60.0) + 1e-3, "tokens"))
            wait, reason = max(waits)
            if wait > 0:
                return wait, reason
            if self.limit.requests_per_minute is not None:
                self._next_start = max(now, self._next_start) + 60.0 / self.limit.requests_per_minute
            return 0.0, ""

    def spend(self, tokens: int) -> None:
        """Count an answer's tokens (they may take the bucket below zero: the next request waits)."""
        if self.limit.tokens_per_minute is None or tokens <= 0:
            return
        with self._lock:
            self._refill(self.clock())
            self._tokens -= tokens

    def pause(self, seconds: float) -> None:
        """The provider said 429: nobody calls this model for ``seconds``."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)

    async def acquire(self) -> float:
        """Wait (asynchronously) until a request may start; the seconds of that spent in a
        provider's 429 pause (whoever's call met it: they count against ``max_rate_limit_wait``)."""
        paused = 0.0
        while (wait := self._next_wait()) is not None:
            await asyncio.sleep(wait[0] + _SLACK)
            paused += wait[1]
        return paused

    def acquire_sync(self) -> float:
        """Wait (blocking this thread) until a request may start; as :meth:`acquire`."""
        paused = 0.0
        while (wait := self._next_wait()) is not None:
            time.sleep(wait[0] + _SLACK)
            paused += wait[1]
        return paused

    def _next_wait(self) -> tuple[float, float] | None:
        """None when a request may start now (its place is taken); else, told to the listener,
        how long to wait before asking again and how much of that is a 429 pause."""
        wait, reason = self.reserve()
        if wait <= 0:
            return None
        notify_wait(wait, reason)
        return wait, wait if reason == "429" else 0.0


def retry_delay(retry_after: float | None, waits_so_far: int) -> float:
    """Seconds to wait after a 429: the provider's ``Retry-After`` when given, else 1, 2, 4, ...
    seconds up to :data:`BACKOFF_CAP`."""
    if retry_after is not None and retry_after >= 0:
        return float(retry_after)
    return min(BACKOFF_CAP, float(2 ** min(waits_so_far, 10)))


def notify_wait(seconds: float, reason: str) -> None:
    """Tell the current engine call's listener that it waits ``seconds`` for ``reason``."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(seconds, reason)


@contextlib.contextmanager
def on_wait(listener: WaitListener) -> Iterator[None]:
    """Within the block (and threads started from it with ``to_thread``), tell ``listener`` of
    every rate-limit wait."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
