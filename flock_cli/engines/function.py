"""FunctionEngine: an engine that calls a Python function."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.errors import InvalidDeclarationError, OutputError

__all__ = ["FunctionEngine"]


class FunctionEngine(EngineComponent):
    """Wraps ``fn(inputs)`` or ``fn(inputs, ctx)`` (sync or async) as an engine.

    The function may return None (no output), a registered model instance, an Artifact, a dict
    (validated into the agent's output type when it publishes exactly one), a list of those, or
    a full EvalResult.
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
        if "takes_ctx" in data:  # worked out from the function; a second value could contradict it
            raise InvalidDeclarationError(
                "FunctionEngine works out takes_ctx from the function's parameters; do not pass it"
            )
        options: dict[str, Any] = {**data, "fn": fn, "takes_ctx": len(positional) == 2}
        super().__init__(**options)  # unknown options in ``data`` are refused there, by name

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        """Call the function and normalise what it returns."""
        value = self.fn(inputs, ctx) if self.takes_ctx else self.fn(inputs)
        if _is_awaitable(value):
            value = await value
        if isinstance(value, EvalResult):
            return value
        if value is None:
            return EvalResult()
        items = list(value) if isinstance(value, list | tuple) else [value]
        return EvalResult(artifacts=[_output(agent, item) for item in items])


_AWAITABLE_TYPES: dict[type, bool] = {}
"""Whether values of a type are awaitable, asked once per type: ``inspect.isawaitable`` on a model
instance goes through the ``Awaitable`` ABC's subclass check, a few microseconds on every run."""


def _is_awaitable(value: Any) -> bool:
    kind = type(value)
    known = _AWAITABLE_TYPES.get(kind)
    if known is None:
        known = inspect.isawaitable(value)
        if kind is GeneratorType:
            return known  # a generator is awaitable only when made by @types.coroutine
        _AWAITABLE_TYPES[kind] = known
    return known


def _output(agent: Agent, item: Any) -> BaseModel | Artifact:
    """A model or Artifact as is; a plain dict validated into the agent's only output type (so
    functions can serve recipe-declared types, which have no importable class)."""
    if isinstance(item, BaseModel | Artifact):
        return item
    if isinstance(item, dict):
        if len(agent.outputs) != 1:
            declared = ", ".join(d.type_name for d in agent.outputs) or "nothing"
            raise OutputError(
                f"agent '{agent.name}': a function may return plain dicts only when the agent publishes"
                f" exactly one type (it publishes {declared}); return model instances instead"
            )
        decl = agent.outputs[0]
        try:
            return decl.model.model_validate(item)
        except ValidationError as exc:
            raise OutputError(f"agent '{agent.name}' returned an invalid '{decl.type_name}': {exc}") from exc
    raise TypeError(
        f"FunctionEngine function returned {type(item).__name__}; return None, a model, a dict,"
        " an Artifact, a list of them, or an EvalResult"
    )
