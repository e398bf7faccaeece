"""DSPyEngine: an agent run as one DSPy call (``Predict``, or ``ReAct`` when the agent has tools).

The signature comes from the agent (``signature.py``); the answer is parsed by DSPy's adapter
into the declared Pydantic types. An answer that does not parse or validate is tried again with
the problem shown to the model, up to ``retries`` times, and then reported as an
:class:`~flock_cli.errors.OutputError` (which the agent's retry policy and dead letters handle
like any failed run).

The language model is either injected (``DSPyEngine(lm=...)``: DSPy's ``DummyLM``, a scripted
one, any ``dspy.LM``) or built from the resolved model string (``models.py``), which the block
switch guards. DSPy is imported on first use: the command line starts without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError

from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.engines.call_spans import Callback, CallSpans
from flock_cli.engines.model_spec import Model, pick_model
from flock_cli.engines.model_spec import model_name as name_of
from flock_cli.engines.models import check_model_calls_allowed, resolve_model
from flock_cli.engines.rate_limit import on_wait
from flock_cli.engines.recording import ModelCall, Recording, ReplayMissError, call_key, replay_lm
from flock_cli.engines.signature import FEEDBACK_FIELD, SignaturePlan, build_signature
from flock_cli.engines.streaming import StreamSink, streaming_to
from flock_cli.errors import OutputError
from flock_cli.mcp_tools.dspy_tools import mcp_toolbox

if TYPE_CHECKING:
    from flock_cli.core.agent import Agent

__all__ = ["DSPyEngine"]

_PROBLEM_CHARS = 1500  # of a parse error and the answer it was about, shown to the model again


class DSPyEngine(EngineComponent):
    """Calls a language model through DSPy to turn the run's inputs into its declared outputs.

    Args:
        model: a DSPy/LiteLLM model string (``openai/gpt-4o-mini``, ``ollama_chat/llama3.2``)
            or a :class:`~flock_cli.engines.model_spec.Model` (``api_base``, ``api_key_env``,
            ``rate_limit``); None: the flock's default, then ``FLOCK_MODEL``/``DEFAULT_MODEL``.
        temperature, max_tokens: sampling options passed to the model.
        adapter: ``json`` (a JSON object, the reliable choice for small models) or ``chat``
            (DSPy's field-marker format, without its silent JSON fallback).
        cache: let DSPy cache identical calls.
        stream: pass the model's text on as it is produced (to ``flock top``, ``flock run`` and
            ``Flock.on_stream`` listeners) when the model client can stream (the local model,
            hosted models through LiteLLM, replayed answers).
        retries: how many times an answer that does not validate is asked for again, with the
            problem shown to the model.
        max_iters: tool-use steps for agents with tools (ReAct).
        lm: a language model to use instead of building one from ``model``.
        replay: recorded answers to give instead of calling a model (``flock run --replay``);
            a call the recording does not hold fails the run with ReplayMissError.
    """

    calls_models: ClassVar[bool] = True  # budgets count its runs in flight as model calls

    model: str | Model | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    adapter: Literal["chat", "json"] = "json"
    cache: bool = False
    stream: bool = True
    retries: int = Field(default=2, ge=0)
    max_iters: int = Field(default=5, ge=1)
    lm: Any = Field(default=None, exclude=True)
    replay: Recording | None = Field(default=None, exclude=True)

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        """Ask the model for the agent's outputs, validating and retrying as configured."""
        import dspy

        plan = build_signature(agent, ctx, inputs)
        keys = call_key(agent.name, plan.describe(), plan.input_values(), self._answer_options(agent))
        recorded: ModelCall | None = None
        if self.replay is not None:
            recorded = self.replay.take(keys, agent.name, name_of(self.model) or name_of(ctx.model))
            lm, model_name = replay_lm(recorded), recorded.model
        else:
            lm = self.language_model(agent=agent.name, default_model=ctx.model)
            model_name = str(getattr(lm, "model", type(lm).__name__))
        recorder = _Recorder()
        calls = CallSpans(ctx.trace, model_name)
        seen = len(getattr(lm, "history", ()))  # DSPy keeps each call's cost in the LM's history
        box = await mcp_toolbox(agent, ctx, recorded)  # MCP tools: live, or from the recording
        try:
            waits = _Waits(ctx)
            with dspy.track_usage() as usage, self._streaming(ctx), on_wait(waits):
                try:  # usage counts failed attempts too
                    result = await self._ask(agent, ctx, plan, lm, [recorder, calls], box)
                    if box is not None and box.problems:
                        raise ReplayMissError(f"agent '{agent.name}': {'; '.join(box.problems)}")
                finally:
                    recorder.usage = self._record_usage(
                        ctx,
                        usage.get_total_tokens(),
                        model_name,
                        len(recorder.answers),
                        _cost_since(lm, seen),
                    )
            # the engine-call span of the trace shows these
            result.metrics.update(model=model_name, calls=len(recorder.answers), **recorder.usage)
            if waits.seconds:  # on the engine-call span: how long the model's rate limit held it
                result.metrics["rate_limit_wait_s"] = round(waits.seconds, 3)
            if waits.queued:  # ... and how long its calls waited for a shared model to be free
                result.metrics["queue_wait_s"] = round(waits.queued, 3)
            return result
        finally:
            if recorder.answers:  # kept even when the answers did not validate: a replay fails alike
                call = ModelCall(keys[0], agent.name, model_name, recorder.answers, recorder.usage, keys[1],
                                 *((box.definitions(), box.calls) if box is not None else ()))  # fmt: skip
                ctx.trace.event("model.call", **call.event_attributes())

    async def _ask(
        self, agent: Agent, ctx: Context, plan: SignaturePlan, lm: Any, callbacks: list[Any], box: Any = None
    ) -> EvalResult:
        import dspy

        if self.adapter == "json":
            adapter: Any = dspy.JSONAdapter()
        else:  # without the fallback: one call per attempt, and a parse failure is shown, not hidden
            adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
        kwargs = dict(plan.inputs)
        signature = plan.signature
        problem: str | None = None
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            if problem is not None:
                signature = plan.with_feedback()
                kwargs[FEEDBACK_FIELD] = problem
                ctx.trace.event("engine.invalid_output", attempt=attempt - 1, problem=problem)
            program = self._program(agent, signature, box.dspy_tools() if box is not None else [])
            try:
                with dspy.context(lm=lm, adapter=adapter, callbacks=callbacks):
                    prediction = await program.acall(**kwargs)
            except dspy.AdapterParseError as exc:
                problem = _parse_problem(exc)
                continue
            outputs, problem = _collect(plan, prediction)
            if problem is None:
                return EvalResult(artifacts=outputs, metrics={"model_attempts": attempt})
        raise OutputError(
            f"agent '{agent.name}': the model's answer did not validate in {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {problem}"
        )

    @contextlib.contextmanager
    def _streaming(self, ctx: Context) -> Iterator[None]:
        if not self.stream:
            yield
            return
        loop = asyncio.get_running_loop()
        sink = StreamSink(ctx.trace.stream, loop)
        try:
            with streaming_to(sink):
                yield
        finally:  # a failed or cancelled call ends its stream too, or the ones after it would wait
            if sink.streamed:
                loop.call_soon(ctx.trace.stream_end)  # after the text still on its way to the loop

    def language_model(self, *, agent: str = "agent", default_model: str | Model | None = None) -> Any:
        """The language model this engine calls: the injected one, else a ``dspy.LM`` for the
        resolved model with this engine's options (building it makes no call). Hosted models
        go through ``hosted_stream.py`` (streamed, rate-limited, 429s waited out).

        Raises ModelNotConfiguredError when no model is named anywhere, and
        ModelCallsBlockedError while model calls are blocked.
        """
        if self.lm is not None:
            return self.lm
        chosen = pick_model(self.model, default_model)
        model = resolve_model(name_of(chosen), None, agent=agent)
        check_model_calls_allowed(model)
        from flock_cli.engines.local import is_local_model, local_lm

        if is_local_model(model):
            return local_lm(model, temperature=self.temperature, max_tokens=self.max_tokens, cache=self.cache)
        # LiteLLM (behind some DSPy model strings) would otherwise fetch its price list from the
        # internet on import: slow, and failing offline.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        options: dict[str, Any] = {"cache": self.cache}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        from flock_cli.engines.hosted_stream import hosted_lm

        return hosted_lm(chosen if chosen is not None and chosen.name == model else Model(model), **options)

    def _program(self, agent: Agent, signature: Any, mcp_tools: list[Any]) -> Any:
        import dspy

        if not agent.tools and not mcp_tools:
            return dspy.Predict(signature)
        tools = [*(_tool(f) for f in agent.tools), *mcp_tools]
        return dspy.ReAct(signature, tools=tools, max_iters=self.max_iters)

    def _answer_options(self, agent: Agent) -> dict[str, Any]:
        """The options that shape the model's answer (part of a recording's key)."""
        options: dict[str, Any] = {"adapter": self.adapter, "temperature": self.temperature,
                                   "max_tokens": self.max_tokens}  # fmt: skip
        if agent.tools or agent.mcp_tools:
            from flock_cli.core.registry import tool_schema

            options["tools"] = [tool_schema(f) for f in agent.tools]
            options["max_iters"] = self.max_iters
        if agent.mcp_tools:  # as named, not as listed: a replay starts no server to list them
            options["mcp_tools"] = list(agent.mcp_tools)
        return options

    @staticmethod
    def _record_usage(
        ctx: Context, usage: dict[str, dict[str, Any]], model_name: str, calls: int, cost: float | None
    ) -> dict[str, int]:
        totals = {"input_tokens": 0, "output_tokens": 0}
        if cost is not None:
            ctx.trace.usage(model=model_name, cost=cost)
        if not usage:  # a model that reports no usage still made its calls
            ctx.trace.usage(model=model_name, calls=calls)
        for model, counts in usage.items():
            used_in, used_out = (
                int(counts.get("prompt_tokens") or 0),
                int(counts.get("completion_tokens") or 0),
            )
            ctx.trace.usage(
                model=str(model or model_name),
                input_tokens=used_in,
                output_tokens=used_out,
                calls=calls,
            )
            calls = 0  # counted once
            totals["input_tokens"] += used_in
            totals["output_tokens"] += used_out
        return totals


class _Recorder(Callback):
    """A DSPy callback keeping the model's raw answers of one engine call, in order."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.usage: dict[str, int] = {}

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        for output in outputs or ():
            text = output.get("text") if isinstance(output, dict) else output
            if isinstance(text, str):
                self.answers.append(text)


class _Waits:
    """Rate-limit waits as trace events (``flock top`` shows the run as waiting), summed; and the
    waits of a call for a shared model (the local model's decoder, ``queue``), told once over."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.seconds, self.queued = ctx, 0.0, 0.0

    def __call__(self, seconds: float, reason: str) -> None:
        if reason == "queue":
            self.queued += seconds
            self.ctx.trace.event("model.queue_wait", seconds=round(seconds, 3))
            return
        self.seconds += seconds
        self.ctx.trace.event("model.rate_limit_wait", seconds=round(seconds, 3), reason=reason)


def _cost_since(lm: Any, seen: int) -> float | None:
    """The cost of the calls ``lm`` made after its first ``seen`` history entries, if it reports
    any. (An LM built for one engine call has only that call's entries; an injected LM shared by
    concurrent runs may count another run's calls here too.)"""
    costs = [
        entry.get("cost") for entry in list(getattr(lm, "history", ()))[seen:] if isinstance(entry, dict)
    ]
    known = [float(c) for c in costs if isinstance(c, int | float)]
    return sum(known) if known else None


def _tool(func: Any) -> Any:
    import dspy

    from flock_cli.core.registry import tool_schema

    schema = tool_schema(func)
    return dspy.Tool(func, name=schema["name"], desc=schema["description"] or None)


def _parse_problem(exc: Exception) -> str:
    """What to tell the model about an answer DSPy could not parse into the signature's types."""
    message = str(getattr(exc, "message", None) or exc).split("\n\nAdapter ", 1)[0]
    answer = getattr(exc, "lm_response", None)
    # pydantic's links to its documentation are noise to a model
    text = "\n".join(line for line in message.strip().splitlines() if "errors.pydantic.dev" not in line)
    if answer:
        text += f"\nYour answer was: {str(answer)[:_PROBLEM_CHARS]}"
    return text[: 2 * _PROBLEM_CHARS]


def _collect(plan: SignaturePlan, prediction: Any) -> tuple[list[BaseModel], str | None]:
    """The prediction's outputs as declared models, or the problem that makes them unusable."""
    outputs: list[BaseModel] = []
    for out in plan.outputs:
        value = getattr(prediction, out.name, None)
        if out.count is not None and (not isinstance(value, list) or len(value) != out.count):
            got = len(value) if isinstance(value, list) else type(value).__name__
            wanted = f"a list of exactly {out.count} {out.decl.type_name} objects"
            return [], f"`{out.name}` must be {wanted}, got {got}"
        items: list[Any] = value if isinstance(value, list) and out.count is not None else [value]
        for item in items:
            try:
                outputs.append(
                    item if isinstance(item, out.decl.model) else out.decl.model.model_validate(item)
                )
            except ValidationError as exc:
                return [], f"`{out.name}` is not a valid {out.decl.type_name}: {exc}"
    return outputs, None
