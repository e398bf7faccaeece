"""The settings of one ``flock serve`` (from the command line, the recipe's ``settings.serve`` and
the defaults, in that order)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flock_cli.errors import UsageError

__all__ = ["DEFAULT_PORT", "ServiceConfig", "is_loopback"]

DEFAULT_PORT = 8344
"""The design's port for the service and its health probes."""


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service listens and the limits it enforces."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    orchestrate: bool = True
    """Run the flock's agents in this process (False: the API only, a publisher and reader)."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (413 above it)."""
    requests_per_second: float = 50.0
    """Average requests per second one token may make (429 with Retry-After above it)."""
    burst: int = 100
    """Requests one token may make at once before the average applies."""
    max_pending: int = 10_000
    """Open deliveries (pending and not yet routed) above which publishes answer 429."""
    max_streams_per_token: int = 32
    """Event streams one token may hold open at once (429 above it)."""
    retry_after_s: int = 1
    """The Retry-After of a 429 for a full board."""
    shutdown_timeout_s: float = 30.0
    """How long a stopping service lets runs in flight finish before it cancels them."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"the port must be between 0 and 65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise UsageError("max_body_bytes must be at least 1024")
        if not self.requests_per_second > 0 or self.burst < 1:
            raise UsageError("the rate limit needs requests_per_second > 0 and burst >= 1")
        if self.max_pending < 1:
            raise UsageError("max_pending must be at least 1")
        if self.max_streams_per_token < 1:
            raise UsageError("max_streams_per_token must be at least 1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
