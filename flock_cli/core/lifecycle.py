"""The stages of one agent run, as the design orders them.

1. acquire a concurrency slot (the dispatcher), 2. ``on_initialize``, 3. ``on_pre_consume``,
4. ``on_pre_evaluate``, 5. evaluate (the engine chain, ``best_of`` times), 6. ``on_post_evaluate``,
7. publish (outputs committed with the delivery), 8. ``on_post_publish``, 9. the ``calls`` side
effect. ``on_error`` runs when an attempt fails and ``on_terminate`` always runs.

This module holds stages 2-6, 8 and 9; the orchestrator owns 1 and 7 because they touch the store.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from flock_cli.core.agent import Agent, AgentComponent
from flock_cli.core.artifact import Artifact
from flock_cli.core.context import Context, EvalInputs, EvalResult
from flock_cli.errors import AgentRunError, InvalidDeclarationError

__all__ = [
    "Wrap",
    "components_of",
    "evaluate",
    "hooked",
    "hooks_of",
    "invoke_calls",
    "post_publish",
    "staged",
]

Wrap = Callable[[Artifact | BaseModel], Artifact]
"""Turns an engine's output (a registered model or an artifact) into a validated artifact."""


def components_of(agent: Agent) -> list[AgentComponent]:
    """Utilities (by priority) then engines: the order of the lifecycle hooks."""
    return [*agent.utilities, *agent.engines]


_HOOKS = ("on_initialize", "on_pre_consume", "on_pre_evaluate", "on_post_evaluate", "on_post_publish",
          "on_error", "on_terminate")  # fmt: skip


@functools.cache
def _overridden(cls: type[AgentComponent]) -> frozenset[str]:
    """The lifecycle hooks ``cls`` defines itself: the others do nothing, and are not called."""
    return frozenset(hook for hook in _HOOKS if getattr(cls, hook) is not getattr(AgentComponent, hook))


def hooked(components: list[AgentComponent], hook: str) -> list[AgentComponent]:
    """The ``components`` whose ``hook`` does something (decided once per component class)."""
    return [c for c in components if hook in _overridden(type(c))]


def hooks_of(agent: Agent, hook: str) -> Sequence[AgentComponent]:
    """``hooked(components_of(agent), hook)``, without building the list for the usual agent:
    no utilities and one engine (asked twice every run)."""
    engines = agent.engines
    if not agent.utilities and len(engines) == 1:
        return (engines[0],) if hook in _overridden(type(engines[0])) else ()
    return hooked(components_of(agent), hook)


class staged:
    """Wrap any exception raised inside in an AgentRunError naming the stage, and trace the stage
    as a span of the run (unless ``traced`` is False: a stage with no hook to run is not traced)."""

    __slots__ = ("agent", "ctx", "stage", "start_ns")

    def __init__(self, agent: Agent, stage: str, ctx: Context | None = None, *, traced: bool = True) -> None:
        self.agent, self.stage = agent, stage
        self.ctx = ctx if traced else None
        self.start_ns = 0

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.start_ns = time.time_ns()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.ctx is not None:
            if exc is None:
                self.ctx.trace.stage(self.stage, self.start_ns)
            else:
                self.ctx.trace.stage(self.stage, self.start_ns, "error", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, Exception) and not isinstance(exc, AgentRunError):
            raise AgentRunError(self.agent.name, self.stage, exc) from exc


async def evaluate(
    agent: Agent, ctx: Context, artifacts: list[Artifact], groups: list[list[Artifact]], wrap: Wrap
) -> tuple[EvalResult, list[BaseException]]:
    """Stages 2 to 6: initialise, pre-consume, pre-evaluate, run the engines, post-evaluate.

    Returns the result and the exceptions of ``best_of`` tries that failed while others succeeded.
    """
    utilities = bool(agent.utilities)
    initializing = hooks_of(agent, "on_initialize")
    if initializing or utilities:  # a stage with nothing to call is neither entered nor traced
        with staged(agent, "initialize", ctx, traced=utilities):
            for component in initializing:
                await component.on_initialize(agent, ctx)
    if utilities:
        with staged(agent, "pre_consume", ctx):
            for utility in agent.utilities:
                artifacts = await utility.on_pre_consume(agent, ctx, artifacts)
    inputs = EvalInputs(artifacts=list(artifacts), state={}, groups=groups)
    if utilities:
        with staged(agent, "pre_evaluate", ctx):
            for utility in agent.utilities:
                inputs = await utility.on_pre_evaluate(agent, ctx, inputs)
    with staged(agent, "evaluate", ctx):
        failed_tries: list[BaseException] = []
        if agent.best_of_n == 1 or agent.best_of_score is None:  # one try: no coroutine around it
            result = await _run_chain(agent, ctx, inputs, wrap)
        else:
            result, failed_tries = await _best_of(agent, ctx, inputs, wrap)
    if utilities:
        with staged(agent, "post_evaluate", ctx):
            for utility in agent.utilities:
                result = await utility.on_post_evaluate(agent, ctx, inputs, result)
    # The run's metrics reach its agent.run span (flock.metric.<name>) here, once utilities had
    # their say: the engines' (merged by _run_chain, a later engine's value winning a name),
    # best_of's, and whatever utilities' post_evaluate added, changed or removed. Each engine's
    # own metrics are already on its engine.call span (RunTrace.engine_call).
    ctx.trace.metrics(result.metrics)
    return result, failed_tries


async def _run_chain(agent: Agent, ctx: Context, inputs: EvalInputs, wrap: Wrap) -> EvalResult:
    if not agent.engines:
        raise InvalidDeclarationError(
            f"agent '{agent.name}' has no engine: add one with .with_engines(...)"
            " (TestEngine, FunctionEngine, or your own EngineComponent)"
        )
    current = inputs
    logs: list[str] = []
    metrics: dict[str, Any] = {}
    for engine in agent.engines:
        started = time.time_ns()
        hooks = _overridden(type(engine))
        try:
            if "on_pre_evaluate" in hooks:
                current = await engine.on_pre_evaluate(agent, ctx, current)
            result = await engine.evaluate(agent, ctx, current)
            if not isinstance(result, EvalResult):
                raise TypeError(f"{type(engine).__name__}.evaluate must return an EvalResult, got {result!r}")
            if "on_post_evaluate" in hooks:
                result = await engine.on_post_evaluate(agent, ctx, current, result)
        except Exception as exc:
            ctx.trace.engine_call(type(engine).__name__, started, {}, exc)
            raise
        ctx.trace.engine_call(type(engine).__name__, started, result.metrics)
        logs.extend(result.logs)
        metrics.update(result.metrics)
        # The next engine sees this engine's outputs (or the same inputs if it produced none),
        # and the state of every engine before it.
        produced = [wrap(a) for a in result.artifacts]
        current = EvalInputs(
            artifacts=produced or current.artifacts,
            state={**current.state, **result.state},
            groups=current.groups,
        )
    return EvalResult(artifacts=current.artifacts, state=current.state, metrics=metrics, logs=logs)


async def _best_of(
    agent: Agent, ctx: Context, inputs: EvalInputs, wrap: Wrap
) -> tuple[EvalResult, list[BaseException]]:
    tries = await asyncio.gather(
        *(
            _run_chain(
                agent, ctx, EvalInputs(list(inputs.artifacts), dict(inputs.state), inputs.groups), wrap
            )
            for _ in range(agent.best_of_n)
        ),
        return_exceptions=True,
    )
    results = [r for r in tries if isinstance(r, EvalResult)]
    errors = [r for r in tries if isinstance(r, BaseException)]
    if not results:
        raise errors[0]
    score = agent.best_of_score
    assert score is not None  # evaluate() runs a single try without one
    best = max(results, key=score)
    best.metrics.setdefault(
        "best_of", {"n": agent.best_of_n, "succeeded": len(results), "score": score(best)}
    )
    return best, errors


async def post_publish(agent: Agent, ctx: Context, outputs: list[Artifact]) -> None:
    """Stage 8: let utilities react to each published artifact."""
    if not agent.utilities:
        return
    with staged(agent, "post_publish", ctx):
        for artifact in outputs:
            for utility in agent.utilities:
                await utility.on_post_publish(agent, ctx, artifact)


async def invoke_calls(agent: Agent, ctx: Context, outputs: list[Artifact]) -> None:
    """Stage 9: call ``agent.calls_func`` once per output (typed) whose type fits its first parameter."""
    func = agent.calls_func
    if func is None:
        return
    wanted = _first_param_type(func)
    with staged(agent, "calls", ctx):
        for artifact in outputs:
            decl = agent.output_for(artifact.type)
            assert decl is not None  # outputs were checked against the declarations
            model = artifact.as_model(decl.model)
            if wanted is not None and not isinstance(model, wanted):
                continue
            value = func(model)
            if inspect.isawaitable(value):
                await value


def _first_param_type(func: Any) -> type | None:
    try:
        hints = inspect.get_annotations(func, eval_str=True)
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError, NameError):
        return None
    if not params:
        raise InvalidDeclarationError("calls() functions take the output model as one argument")
    hint = hints.get(params[0].name)
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
