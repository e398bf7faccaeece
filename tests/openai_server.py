"""A small OpenAI-compatible chat-completions server for the tests: real HTTP on 127.0.0.1.

It answers ``POST /v1/chat/completions`` with scripted text, as one JSON body or (``stream:
true``) as server-sent events, a few characters per event, with the usage in a last chunk when
``stream_options.include_usage`` asks for it (as OpenAI does). ``refusals`` makes it answer
``429 Too Many Requests`` first, each with the given ``Retry-After`` header (None: no header).
Every request is kept (time, body, status) for the tests to assert on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIServer", "openai_server"]


@dataclass
class OpenAIServer:
    """The server's script and what it saw."""

    answer: Callable[[dict[str, Any]], str]
    refusals: list[str | None] = field(default_factory=list)  # Retry-After of each 429 to give first
    outages: int = 0  # then this many 503 Service Unavailable answers
    reject_key: bool = False  # answer 401, quoting the Authorization header back (as some providers do)
    piece: int = 4  # characters per streamed event
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens of every answer; None: by length
    requests: list[tuple[float, dict[str, Any], int]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, names lowercased
    port: int = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def statuses(self) -> list[int]:
        return [status for _, _, status in self.requests]


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            with lock:
                refusal = server.refusals.pop(0) if server.refusals else "none"
                status = 200 if refusal == "none" else 429
                if status == 200 and server.outages > 0:
                    server.outages -= 1
                    status = 503
                server.requests.append((time.monotonic(), body, status))
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
            if server.reject_key:
                quoted = self.headers.get("Authorization", "")
                error = {"error": {"message": f"Incorrect API key provided: {quoted}", "type": "auth"}}
                self._json(401, error)
            elif not self.path.endswith("/chat/completions"):
                self._json(404, {"error": {"message": "not found", "type": "not_found"}})
            elif status == 503:
                self._json(503, {"error": {"message": "overloaded", "type": "server_error"}})
            elif status == 429:
                headers = {} if refusal is None else {"Retry-After": refusal}
                error = {
                    "error": {"message": "Rate limit reached", "type": "rate_limit", "code": "rate_limit"}
                }
                self._json(429, error, headers)
            elif body.get("stream"):
                self._stream(body)
            else:
                text = server.answer(body)
                self._json(200, _completion(server, body, text))

        def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def _stream(self, body: dict[str, Any]) -> None:
            text = server.answer(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                    "model": body.get("model", "test")}  # fmt: skip
            self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            for i in range(0, len(text), server.piece):
                piece = text[i : i + server.piece]
                self._event(
                    {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                )
                time.sleep(0.002)  # separate network writes: a real stream, not one buffer
            self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({**base, "choices": [], "usage": _usage(server, body, text)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def _event(self, data: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

    return Handler


def _usage(server: OpenAIServer, body: dict[str, Any], text: str) -> dict[str, int]:
    if server.usage is not None:
        prompt, completion = server.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
    completion = len(text) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(server: OpenAIServer, body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "test"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": _usage(server, body, text),
    }


@contextmanager
def openai_server(
    answer: Callable[[dict[str, Any]], str],
    refusals: list[str | None] | None = None,
    usage: tuple[int, int] | None = None,
    outages: int = 0,
    reject_key: bool = False,
) -> Iterator[OpenAIServer]:
    """Run the server on a free port of 127.0.0.1 for the block."""
    state = OpenAIServer(
        answer=answer, refusals=list(refusals or []), usage=usage, outages=outages, reject_key=reject_key
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
