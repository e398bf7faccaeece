"""Streaming model text out of an engine call, whichever thread the model runs on.

An engine call sets a *sink* for its duration (:func:`streaming_to`); a model client that can
stream (the local llama.cpp engine) calls :func:`emit` with each piece of text. The sink hands
text to the event loop in pieces of a readable size, where ``ctx.trace.stream`` sends it to the
trace store and to the flock's stream listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["StreamSink", "emit", "streaming", "streaming_to"]

_SINK: ContextVar[StreamSink | None] = ContextVar("flock_stream_sink", default=None)
_PIECE_CHARS = 48  # text is passed on in pieces of about this size ...
_PIECE_SECONDS = 0.1  # ... or at least this often


class StreamSink:
    """Collects streamed text on any thread and passes it to ``deliver`` on the event loop."""

    def __init__(self, deliver: Callable[[str], None], loop: asyncio.AbstractEventLoop) -> None:
        self.deliver, self.loop = deliver, loop
        self._pending: list[str] = []
        self._size = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()  # the model's thread writes while the loop may close
        self.streamed = False
        self.closed = False

    def write(self, text: str) -> None:
        """Take a piece of text (from any thread); dropped once the sink is closed."""
        if not text:
            return
        with self._lock:
            if self.closed:
                return
            self.streamed = True
            self._pending.append(text)
            self._size += len(text)
            now = time.monotonic()
            if self._size >= _PIECE_CHARS or "\n" in text or now - self._last >= _PIECE_SECONDS:
                self._last = now
                self._send()

    def close(self) -> None:
        """Pass on what is held and take no more (the engine call is over)."""
        with self._lock:
            self.closed = True
            if self._pending:
                self._send()

    def _send(self) -> None:
        text, self._pending, self._size = "".join(self._pending), [], 0
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to show it to
            self.loop.call_soon_threadsafe(self.deliver, text)


def emit(text: str) -> None:
    """Stream ``text`` to the current engine call's sink, if it has one."""
    sink = _SINK.get()
    if sink is not None:
        sink.write(text)


def streaming() -> bool:
    """True when someone listens to the current engine call's streamed text."""
    return _SINK.get() is not None


@contextlib.contextmanager
def streaming_to(sink: StreamSink) -> Iterator[StreamSink]:
    """Make ``sink`` the current call's sink (copied into threads started with ``to_thread``)."""
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)
        sink.close()
