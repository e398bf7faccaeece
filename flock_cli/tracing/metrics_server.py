"""Serving a flock's metrics over HTTP for Prometheus to scrape (``flock run --metrics-port``).

A run usually ends between two scrapes, and a server that stopped with it would take the last
values with it: Prometheus would never see the final counts. So once the run is over
(:meth:`MetricsServer.end`) the server keeps serving the final values until a scrape has read
them, or for a bounded time (:meth:`MetricsServer.wait_for_scrape`, ``LINGER`` by default: one
default Prometheus scrape interval).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from flock_cli.errors import UsageError

if TYPE_CHECKING:
    from flock_cli.tracing.metrics import Metrics

__all__ = ["DEFAULT_HOST", "LINGER", "MetricsServer"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"
LINGER = 15.0
"""Seconds a finished run's metrics stay served when no scrape comes for them (Prometheus
scrapes every 15 s unless configured otherwise)."""


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """``GET /metrics`` on ``host:port`` from a daemon thread, until :meth:`close`."""

    def __init__(self, metrics: Metrics, port: int, host: str = DEFAULT_HOST) -> None:
        self.metrics = metrics
        self.host = host
        ended = self._ended = threading.Event()
        read = self._read_after_end = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                final = ended.is_set()  # checked before rendering: then this body is the final one
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if final:
                    read.set()

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes are not worth a line on the run's terminal

        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), Handler)
        except OSError as exc:  # in use, not an address of this machine, an unknown name
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="flock-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where Prometheus scrapes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (a name other than ``localhost`` counts as not)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def end(self) -> None:
        """The run is over: the gauges fall to 0 and every scrape from now on reads final values."""
        self.metrics.end()
        self._ended.set()

    def wait_for_scrape(self, timeout: float = LINGER) -> bool:
        """After :meth:`end`, wait until a scrape has read the final values, ``timeout`` seconds
        at most; True when one did. Ctrl-C stops the wait (the user chose not to wait)."""
        try:
            return self._read_after_end.wait(timeout)
        except KeyboardInterrupt:
            return False

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
