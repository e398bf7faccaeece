"""Declarative options of a subscription or an agent: joins, batches and retries."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from flock_cli.core.options import Options
from flock_cli.errors import InvalidDeclarationError

__all__ = ["BatchSpec", "Budget", "JoinSpec", "RetryPolicy", "coerce_spec"]


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


class _Spec(Options):
    """Specs raise InvalidDeclarationError (a UserError), never a bare pydantic ValidationError."""


class JoinSpec(_Spec):
    """Correlate the artifacts of an AND gate into groups.

    Artifacts are grouped by ``correlation_id`` (``by=None``, the default, or
    ``by="correlation_id"``), so one run never mixes two workflows; ``by`` may instead be a
    function of the typed payload returning the key, or ``"arrival"`` to pair artifacts of any
    workflows first in, first out. A group fires when it holds every consumed type. A group that is
    still incomplete ``window`` seconds after its first artifact, or after ``count_window`` later
    artifacts arrived for this join without completing it, expires: it is reported in the run
    summary and never silently dropped. An AND gate declared without a join gathers as
    ``JoinSpec()`` does: by correlation id, with no window.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["all_of"] = "all_of"
    window: float | None = Field(default=None, gt=0)
    count_window: int | None = Field(default=None, ge=1)
    by: Literal["correlation_id", "arrival"] | Callable[[Any], Hashable] | None = None

    _seconds = field_validator("window", mode="before")(_seconds)


class BatchSpec(_Spec):
    """Deliver artifacts in batches: flush at ``size`` items or ``within`` seconds, whichever first.

    Partial batches are also flushed when the flock goes idle and at shutdown, so nothing is held
    back forever.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int | None = Field(default=None, ge=1)
    within: float | None = Field(default=None, gt=0)

    _seconds = field_validator("within", mode="before")(_seconds)

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> BatchSpec:
        if self.size is None and self.within is None:
            raise ValueError("a batch needs size, within, or both")
        return self


class RetryPolicy(_Spec):
    """How often a failed agent run is tried again, and how long to wait between tries.

    ``max_attempts`` counts every try, the first included: ``RetryPolicy(max_attempts=1)`` means no
    retry (the default for every agent). The wait after the n-th failure is ``initial_delay`` times
    ``2**(n-1)`` (exponential), ``n`` (linear) or 1 (constant), capped at ``max_delay``; with
    ``jitter`` it is scaled by a random factor in [0.5, 1.0]. Only exceptions matching ``retry_on``
    are retried.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    max_attempts: int = Field(default=3, ge=1)
    backoff: Literal["exponential", "linear", "constant"] = "exponential"
    initial_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=60.0, ge=0)
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        if self.backoff == "exponential":
            base = self.initial_delay * (2 ** (failures - 1))
        elif self.backoff == "linear":
            base = self.initial_delay * failures
        else:
            base = self.initial_delay
        base = float(min(base, self.max_delay))
        return base * rng.uniform(0.5, 1.0) if self.jitter else base

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based) that raised ``error`` gets another try."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)


NO_RETRY = RetryPolicy(max_attempts=1)


def coerce_spec(spec_type: type[Any], value: Any, option: str) -> Any:
    """Accept a spec instance or a dict for it; reject anything else with a clear error."""
    if value is None or isinstance(value, spec_type):
        return value
    if isinstance(value, dict):
        try:
            return spec_type(**value)
        except InvalidDeclarationError as exc:
            problems = getattr(exc, "problems", str(exc))
            raise InvalidDeclarationError(f"Invalid {option}= option: {problems}") from None
    raise InvalidDeclarationError(
        f"{option}= takes a {spec_type.__name__} or a dict, got {type(value).__name__}"
    )


class Budget(_Spec):
    """Limits on what model calls may use: tokens (input + output), cost and model calls.

    A budget is checked before each run starts: once any limit is reached no further run starts,
    so the run that crosses it finishes (and may go over). ``on_exhausted="pause"`` holds the
    runs the budget covers as ``budget`` dead letters (retry them after raising the budget);
    ``"stop"`` holds every run of the flock from then on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int | None = Field(default=None, ge=1)
    cost: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    calls: int | None = Field(default=None, ge=1)
    on_exhausted: Literal["pause", "stop"] = "pause"

    def exhausted_by(self, tokens: int, cost: float, calls: int) -> str | None:
        """Which limit ``tokens``, ``cost`` and ``calls`` reach, described; None when none is."""
        if self.tokens is not None and tokens >= self.tokens:
            return f"{tokens} of {self.tokens} tokens used"
        if self.cost is not None and cost >= self.cost:
            return f"cost {cost:.4f} of {self.cost:.4f} spent"
        if self.calls is not None and calls >= self.calls:
            return f"{calls} of {self.calls} model calls made"
        return None
