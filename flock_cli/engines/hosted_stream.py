"""Hosted models (anything LiteLLM reaches) as a DSPy engine that streams, paces and waits out 429s.

DSPy 3.4 calls a custom *engine* (``dspy.LM(engine=..., async_engine=...)``, see
``lm_engine.py``) with a ``dspy.lm15.Request`` and expects a ``Response``. This engine answers it
with DSPy's own LiteLLM engine (``dspy.clients.engines.AsyncLiteLLMEngine``): when someone
listens to the run's text (``streaming.py``) it asks LiteLLM for a streamed answer
(``stream=True``: server-sent events over HTTP, with the usage in the last chunk), passes each
piece of text on as it arrives and assembles the complete response, which DSPy then parses and
validates as it does any answer; otherwise it asks for the whole answer at once.

Retries happen in one place, here: LiteLLM is called with ``num_retries=0`` (DSPy's engine does
that), and the ``dspy.LM`` with ``num_retries=0``. A ``429 Too Many Requests`` is waited out
(``rate_limit.py``: ``Retry-After`` or a bounded backoff, at most ``max_rate_limit_wait`` seconds
in all) and asked again, within the same attempt of the run; other transient failures (a 5xx,
a dropped connection, a timeout) are asked again up to ``TRANSIENT_RETRIES`` times when no text
of the answer was streamed yet. What still fails reaches the agent's retry policy.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from flock_cli.engines.model_spec import Model
from flock_cli.engines.rate_limit import notify_wait, retry_delay
from flock_cli.engines.streaming import emit, streaming
from flock_cli.errors import RunError

__all__ = ["TRANSIENT_RETRIES", "AsyncHostedEngine", "HostedEngine", "ModelCallError", "hosted_lm"]

TRANSIENT_RETRIES = 3
"""How often a call that failed transiently (not a 429) with nothing streamed is asked again."""


class ModelCallError(RunError):
    """A hosted model's call failed with an error that quoted its API key (the key is replaced
    by the name of its environment variable here)."""


class _Hosted:
    """What the sync and async engines share: the connection, the capabilities, the 429 rule."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._capabilities: tuple[bool, bool, bool, frozenset[str]] | None = None

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.model.api_base is not None:
            options["api_base"] = self.model.api_base
        key = self.model.api_key()  # read now: never kept anywhere it could be written out
        if key is not None:
            options["api_key"] = key
        return options

    def _caps(self) -> tuple[bool, bool, bool, frozenset[str]]:
        """What LiteLLM knows this model supports (the hints DSPy's adapters read)."""
        if self._capabilities is None:
            from dspy.clients._litellm import get_litellm

            litellm = get_litellm(feature="hosted models")
            provider = self.model.name.split("/", 1)[0] if "/" in self.model.name else "openai"
            # a model LiteLLM has no entry for gets False and its provider's parameters
            name = self.model.name
            params = litellm.get_supported_openai_params(model=name, custom_llm_provider=provider)
            schema = litellm.supports_response_schema(model=name, custom_llm_provider=provider)
            tools = litellm.supports_function_calling(model=name, custom_llm_provider=provider)
            self._capabilities = (bool(tools), False, bool(schema), frozenset(params or ()))
        return self._capabilities

    @property
    def supports_function_calling(self) -> bool:
        return self._caps()[0]

    @property
    def supports_reasoning(self) -> bool:
        return self._caps()[1]

    @property
    def supports_response_schema(self) -> bool:
        return self._caps()[2]

    @property
    def supported_params(self) -> frozenset[str]:
        return self._caps()[3]

    def _after_429(self, exc: Any, waits: int, waited: float) -> float:
        """How long to wait before asking again after ``exc`` (a 429); raises ``exc`` when the
        wait would pass the model's ``max_rate_limit_wait``. A shared limiter pauses every caller."""
        from dspy import lm15

        delay = retry_delay(getattr(exc, "retry_after", None), waits)
        left = self.model.max_rate_limit_wait - waited
        if delay > left:
            raise lm15.RateLimitError(
                f"model '{self.model.name}' answered 429 (rate limited) {waits + 1} time(s); waited"
                f" {waited:.1f}s, and the next wait ({delay:.1f}s) would pass max_rate_limit_wait"
                f" ({self.model.max_rate_limit_wait:g}s): {exc}",
                status=429,
            ) from exc
        limiter = self.model.limiter()
        if limiter is not None:
            limiter.pause(delay)
        return delay

    def _paused(self, waited: float) -> float:
        """``waited`` (seconds this call spent in 429 pauses, its own and other callers' of the
        shared limiter), or RateLimitError once that passes ``max_rate_limit_wait``."""
        if waited > self.model.max_rate_limit_wait:
            from dspy import lm15

            raise lm15.RateLimitError(
                f"model '{self.model.name}' was rate limited (429) for {waited:.1f}s, past"
                f" max_rate_limit_wait ({self.model.max_rate_limit_wait:g}s)",
                status=429,
            )
        return waited

    def _spend(self, response: Any) -> None:
        limiter = self.model.limiter()
        usage = getattr(response, "usage", None)
        if limiter is not None and usage is not None:
            total = usage.total_tokens
            if total is None:
                total = (usage.input_tokens or 0) + (usage.output_tokens or 0)
            limiter.spend(int(total))

    def _reraise_redacted(self, exc: Exception) -> None:
        """A provider that quotes the API key back in its error (``Incorrect API key provided:
        sk-...``) must not get it into the terminal, the trace store or a dead letter: such an
        error is raised again as a :class:`ModelCallError` with the key replaced by
        ``${VARIABLE}``. Any other error is left to propagate as it is."""
        text = f"{type(exc).__name__}: {exc}"
        clean = self.model.redact(text)
        if clean != text:
            raise ModelCallError(clean) from None

    def close(self) -> None:
        """Nothing held between calls (LiteLLM's clients are its own)."""


def _retryable(exc: Exception) -> bool:
    from dspy import lm15

    return isinstance(exc, lm15.ServerError | lm15.TransportError | lm15.TimeoutError)


class AsyncHostedEngine(_Hosted):
    """The engine DSPy awaits (``acall``): waits with ``asyncio.sleep``, never blocking the loop."""

    async def complete(self, request: Any) -> Any:
        """Answer ``request``: paced by the model's limiter, streamed when listened to."""
        try:
            return await self._complete(request)
        except Exception as exc:
            self._reraise_redacted(exc)
            raise

    async def _complete(self, request: Any) -> Any:
        from dspy import lm15

        limiter = self.model.limiter()
        waits, waited, failures = 0, 0.0, 0
        while True:
            if limiter is not None:
                waited = self._paused(waited + await limiter.acquire())
            streamed: list[bool] = [False]
            try:
                response = await self._once(request, streamed)
            except lm15.RateLimitError as exc:
                delay = self._after_429(exc, waits, waited)
                waits += 1
                if limiter is None:  # with one, acquire() waits out the pause, says so and counts it
                    waited += delay
                    notify_wait(delay, "429")
                    await asyncio.sleep(delay)
                continue
            except Exception as exc:
                if streamed[0] or failures >= TRANSIENT_RETRIES or not _retryable(exc):
                    raise
                failures += 1
                await asyncio.sleep(min(2.0 ** (failures - 1), 30.0))
                continue
            self._spend(response)
            return response

    async def _once(self, request: Any, streamed: list[bool]) -> Any:
        inner = _litellm_engine(asynchronous=True, server=self.model.api_base is not None)(**self._options())
        if not streaming():
            return await inner.complete(request)
        collected = _accumulator(request)
        async for event in inner.stream(request):
            collected.push(event)
            text = _text_of(event)
            if text:
                streamed[0] = True
                emit(text)
        return collected.response()

    async def stream(self, request: Any) -> Any:
        """The answer as stream events (DSPy's own streaming asks for this)."""
        from dspy import lm15

        for event in lm15.response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing held between calls."""


class HostedEngine(_Hosted):
    """The synchronous engine (a program called without ``await``)."""

    def complete(self, request: Any) -> Any:
        """Answer ``request`` on this thread: paced, streamed when listened to."""
        try:
            return self._complete(request)
        except Exception as exc:
            self._reraise_redacted(exc)
            raise

    def _complete(self, request: Any) -> Any:
        from dspy import lm15

        limiter = self.model.limiter()
        waits, waited, failures = 0, 0.0, 0
        while True:
            if limiter is not None:
                waited = self._paused(waited + limiter.acquire_sync())
            inner = _litellm_engine(asynchronous=False, server=self.model.api_base is not None)(
                **self._options()
            )
            streamed = False
            try:
                if not streaming():
                    response = inner.complete(request)
                else:
                    collected = _accumulator(request)
                    for event in inner.stream(request):
                        collected.push(event)
                        text = _text_of(event)
                        if text:
                            streamed = True
                            emit(text)
                    response = collected.response()
            except lm15.RateLimitError as exc:
                delay = self._after_429(exc, waits, waited)
                waits += 1
                if limiter is None:
                    waited += delay
                    notify_wait(delay, "429")
                    time.sleep(delay)
                continue
            except Exception as exc:
                if streamed or failures >= TRANSIENT_RETRIES or not _retryable(exc):
                    raise
                failures += 1
                time.sleep(min(2.0 ** (failures - 1), 30.0))
                continue
            self._spend(response)
            return response

    def stream(self, request: Any) -> Any:
        """The answer as stream events."""
        from dspy import lm15

        return lm15.response_to_events(self.complete(request))


@functools.cache
def _litellm_engine(*, asynchronous: bool, server: bool) -> Any:
    """DSPy's LiteLLM engine; for a model on a server of its own (``api_base``), one that sends
    the answer's length limit as ``max_tokens``. DSPy speaks OpenAI's current dialect,
    ``max_completion_tokens``, which OpenAI-compatible servers (llama.cpp's, older vLLM and
    Ollama) ignore: the engine's ``max_tokens`` would silently not apply there."""
    from dspy.clients.engines import AsyncLiteLLMEngine, LiteLLMEngine

    base: Any = AsyncLiteLLMEngine if asynchronous else LiteLLMEngine
    if not server:
        return base

    class _CompatibleLengthLimit(base):  # type: ignore[misc]
        def _arguments(self, request: Any, *, streaming: bool = False) -> Any:
            data = super()._arguments(request, streaming=streaming)
            if "max_completion_tokens" in data and "max_tokens" not in data:
                data["max_tokens"] = data.pop("max_completion_tokens")
            return data

    return _CompatibleLengthLimit


def _accumulator(request: Any) -> Any:
    """DSPy's own assembler of stream events into a ``Response`` (what its streaming path uses).
    Imported by name: its vendored package ships type hints that would make mypy type-check
    all of dspy, which has none."""
    import importlib

    return importlib.import_module("dspy._vendor.lm15.result").StreamAccumulator(request)


def _text_of(event: Any) -> str | None:
    delta = getattr(event, "delta", None) if getattr(event, "type", None) == "delta" else None
    if delta is not None and getattr(delta, "type", None) == "text":
        return getattr(delta, "text", None)
    return None


def hosted_lm(model: Model, **options: Any) -> Any:
    """A ``dspy.lm`` for ``model`` through LiteLLM: streamed, paced and retried here (DSPy's own
    retries are off: ``num_retries=0``)."""
    import dspy

    model.api_key()  # a key variable that is not set is said now, not as a failed call
    return dspy.LM(
        model.name,
        engine=HostedEngine(model),
        async_engine=AsyncHostedEngine(model),
        num_retries=0,
        **options,
    )
