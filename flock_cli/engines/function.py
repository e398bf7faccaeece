"""FunctionEngine: an engine that calls a Python function."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.errors import InvalidDeclarationError

__all__ = ["FunctionEngine"]


class FunctionEngine(EngineComponent):
    """Wraps ``fn(inputs)`` or ``fn(inputs, ctx)`` (sync or async) as an engine.

    The function may return None (no output), a registered model instance, an Artifact, a list of
    those, or a full EvalResult.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    fn: Callable[..., Any]
    takes_ctx: bool = False

    def __init__(self, fn: Callable[..., Any], **data: Any) -> None:
        if not callable(fn):
            raise InvalidDeclarationError(f"FunctionEngine needs a callable, got {fn!r}")
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) not in (1, 2) and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise InvalidDeclarationError(
                f"FunctionEngine functions take (inputs) or (inputs, ctx); {fn!r} takes {len(positional)}"
            )
        super().__init__(fn=fn, takes_ctx=len(positional) == 2, **data)

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        """Call the function and normalise what it returns."""
        value = self.fn(inputs, ctx) if self.takes_ctx else self.fn(inputs)
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, EvalResult):
            return value
        if value is None:
            return EvalResult()
        if isinstance(value, BaseModel | Artifact):
            return EvalResult(artifacts=[value])
        if isinstance(value, list | tuple):
            return EvalResult(artifacts=list(value))
        raise TypeError(
            f"FunctionEngine function returned {type(value).__name__}; return None, a model,"
            " an Artifact, a list of them, or an EvalResult"
        )
