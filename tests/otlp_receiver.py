"""A real OTLP/HTTP receiver on 127.0.0.1 for the tests: it parses what it receives, OTLP/JSON
or OTLP/protobuf (with the official protocol package, as collectors do), and keeps every post in
``Receiver.bodies``. The ``collector`` fixture (registered in conftest.py) starts one and gives its
base URL."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["Receiver", "collector"]


class Receiver(http.server.BaseHTTPRequestHandler):
    """A collector on 127.0.0.1: JSON bodies are parsed as JSON, protobuf ones with the official
    OTLP definitions (and kept as protobuf's JSON mapping)."""

    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        if self.headers["Content-Type"] == "application/x-protobuf":
            from google.protobuf.json_format import MessageToDict
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            body = MessageToDict(ExportTraceServiceRequest.FromString(raw))
        else:
            body = json.loads(raw)
        type(self).bodies.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[str]:
    Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
