"""What the model clients written here (replay, the local model) share: DSPy's engine interface.

DSPy 3.4 takes a custom model as an *engine* passed to ``dspy.LM(engine=..., async_engine=...)``:
an object with ``complete(Request) -> Response``, ``stream`` and ``close``, and an async twin.
Subclasses implement :meth:`LMEngine.complete`; everything else is here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LMEngine", "language_model", "text_response"]


class LMEngine:
    """A synchronous DSPy engine; ``threaded`` engines are awaited on a worker thread."""

    supports_response_schema = False
    threaded = False
    executor: Any = None
    """Where a ``threaded`` engine's calls wait (None: asyncio's default pool, which has only
    ``cpu_count() + 4`` threads: fewer than the calls a batching engine serves at once)."""

    def complete(self, request: Any) -> Any:
        """Answer one request with a ``dspy.lm15.Response``."""
        raise NotImplementedError

    def stream(self, request: Any) -> Any:
        """The answer as stream events (text reaches listeners through ``streaming.emit``)."""
        from dspy import lm15

        return lm15.response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release by default."""


class _AsyncLMEngine:
    """The async side DSPy asks for when a program is awaited."""

    def __init__(self, engine: LMEngine) -> None:
        self.engine = engine

    async def complete(self, request: Any) -> Any:
        if self.engine.threaded:  # the event loop goes on while the model thinks
            import asyncio
            import contextvars
            import functools

            if self.engine.executor is None:
                return await asyncio.to_thread(self.engine.complete, request)
            call = functools.partial(contextvars.copy_context().run, self.engine.complete, request)
            return await asyncio.get_running_loop().run_in_executor(self.engine.executor, call)
        return self.engine.complete(request)

    async def stream(self, request: Any) -> Any:
        from dspy import lm15

        for event in lm15.response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        self.engine.close()


def language_model(name: str, engine: LMEngine, **options: Any) -> Any:
    """A ``dspy.LM`` named ``name`` that calls ``engine`` (sync and async)."""
    import dspy

    return dspy.LM(name, engine=engine, async_engine=_AsyncLMEngine(engine), **options)


def text_response(
    response_id: str,
    model: str,
    text: str,
    *,
    finish_reason: str = "stop",
    input_tokens: int | None = 0,
    output_tokens: int | None = 0,
    total_tokens: int | None = 0,
    cache_read_tokens: int | None = None,
) -> Any:
    """A ``dspy.lm15.Response`` holding one text answer (``cache_read_tokens``: prompt tokens the
    model took from its cache instead of evaluating them)."""
    from dspy import lm15

    return lm15.Response(
        id=response_id,
        model=model,
        message=lm15.Message.assistant([lm15.TextPart(text)]),
        finish_reason=finish_reason,
        usage=lm15.Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            cache_read_tokens=cache_read_tokens,
        ),
    )
