"""Limits of ``flock serve``: a token bucket per caller and the request body size cap."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimit", "TokenBucket"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBucket:
    """``rate`` requests a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class BodyLimit:
    """ASGI middleware: a request whose body is larger than ``max_bytes`` is answered 413 (by its
    ``Content-Length`` before anything is read, or as soon as a chunked body passes the limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int, reject: Callable[[int], ASGIApp]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._reject = reject  # makes the 413 answer (problem+json)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await self._reject(-1)(scope, receive, send)  # not a length: 400
                    return
                if declared > self.max_bytes:
                    await self._reject(self.max_bytes)(scope, receive, send)
                    return
        # Read the body here, up to the limit, then hand it on: a chunked body that passes the
        # limit is refused before the application sees any of it.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._reject(self.max_bytes)(scope, receive, send)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        buffered: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            if buffered:
                return buffered.pop()
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)
