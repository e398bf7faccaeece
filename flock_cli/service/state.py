"""What the routes of one ``flock serve`` share: the flock, its limits, the event sources and
whether the service is draining."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from flock_cli.service.access import Access, output_rules
from flock_cli.service.events import ActivityHub
from flock_cli.service.limits import TokenBucket
from flock_cli.service.problems import Problem
from flock_cli.service.tail import BoardTail, Notifier

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.artifact import Artifact
    from flock_cli.core.registry import TypeRegistry
    from flock_cli.core.summary import LiveStatus, RunSummary
    from flock_cli.core.visibility import Visibility
    from flock_cli.service.config import ServiceConfig
    from flock_cli.service.tokens import Principal, TokenBook
    from flock_cli.store.contract import BlackboardStore, DeadLetter
    from flock_cli.tracing.tracer import Activity, StreamChunk, Tracer

__all__ = ["ServedFlock", "ServiceState"]


class ServedFlock(Protocol):
    """What the service uses of a :class:`~flock_cli.Flock` (the service sits above the runtime
    and never imports it)."""

    @property
    def store(self) -> BlackboardStore: ...
    @property
    def registry(self) -> TypeRegistry: ...
    @property
    def tracer(self) -> Tracer: ...
    @property
    def role(self) -> str: ...
    @property
    def agents(self) -> list[Any]: ...
    @property
    def budget(self) -> Any: ...
    @property
    def usage(self) -> Any: ...

    def status(self) -> LiveStatus: ...
    def on_activity(self, listener: Callable[[Activity], None]) -> None: ...
    def on_stream(self, listener: Callable[[StreamChunk], None]) -> None: ...
    async def attach(self, *, force: bool = False) -> Any: ...
    async def watch(
        self, *, poll_interval: float = 0.2, stop: asyncio.Event | None = None, idle_exit: float | None = None
    ) -> RunSummary: ...
    async def shutdown(
        self, timeout: float | None = None, *, release_interrupted: bool = False, drain: bool = True
    ) -> RunSummary: ...
    async def retry_dead_letter(self, letter_id: UUID) -> None: ...
    async def dead_letters(self) -> list[DeadLetter]: ...
    async def publish_external(
        self,
        type_name: str,
        payload: dict[str, Any],
        *,
        visibility: Visibility | None = None,
        correlation_id: UUID | None = None,
        partition_key: str | None = None,
        tags: Iterable[str] | None = None,
        produced_by: str = "external",
        artifact_id: UUID | None = None,
    ) -> Artifact: ...


@dataclass
class ServiceState:
    """The state every request of one service sees."""

    flock: ServedFlock
    config: ServiceConfig
    tokens: TokenBook | None
    types: dict[str, type[BaseModel]]
    """The recipe's types by name (each a named schema of the OpenAPI document)."""
    traces: list[Path] = field(default_factory=list)
    """Trace stores ``/v1/runs`` reads (empty: tracing is off)."""
    notifier: Notifier = field(default_factory=Notifier)
    draining: bool = False
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    scheduler_running: bool = False
    board_ok: bool = False
    board_problem: str | None = None
    open_deliveries: int = 0
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _streams: dict[str, int] = field(default_factory=dict)
    tail: BoardTail = field(init=False)
    hub: ActivityHub = field(init=False)
    access: Access = field(init=False)

    def __post_init__(self) -> None:
        self.tail = BoardTail(self.flock.store, self.notifier)
        self.hub = ActivityHub(self.notifier)
        self.access = Access(self.flock.store, output_rules(self.flock.agents))

    @property
    def store(self) -> BlackboardStore:
        """The board."""
        return self.flock.store

    def admit(self, principal: Principal) -> None:
        """Count one request of ``principal`` against its rate limit (429 when it is spent)."""
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            bucket = self._buckets[principal.name] = TokenBucket(
                self.config.requests_per_second, self.config.burst
            )
        wait = bucket.take()
        if wait > 0:
            raise Problem(
                429,
                f"rate limit of {principal.name!r} reached ({self.config.requests_per_second:g} requests/s,"
                f" bursts of {self.config.burst}); retry after {wait:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def check_streams(self, principal: Principal) -> None:
        """429 when ``principal`` holds all its event-stream slots."""
        if self._streams.get(principal.name, 0) >= self.config.max_streams_per_token:
            raise Problem(
                429,
                f"the token {principal.name!r} has {self.config.max_streams_per_token} event streams open"
                " already; close one first",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )

    def take_stream_slot(self, principal: Principal) -> Callable[[], None]:
        """Take one of ``principal``'s event-stream slots (429 when all are taken: streams are the
        one thing a client keeps open on the server); returns what gives it back (once)."""
        self.check_streams(principal)
        name = principal.name
        self._streams[name] = self._streams.get(name, 0) + 1
        given_back = False

        def release() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._streams[name] -= 1

        return release

    def check_room(self) -> None:
        """Refuse a publish while the board holds more open deliveries than allowed (429)."""
        if self.open_deliveries > self.config.max_pending:
            raise Problem(
                429,
                f"the board holds {self.open_deliveries} open deliveries (more than max_pending"
                f" {self.config.max_pending}); retry later",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )

    def check_accepting(self) -> None:
        """Refuse new work while the service is shutting down (503)."""
        if self.draining:
            raise Problem(503, "the service is shutting down", headers={"Retry-After": "1"})

    @property
    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness and its reasons: board reachable, scheduler running (when this process runs
        agents), not draining."""
        board_ok = self.board_ok and self.tail.problem is None
        checks = {
            "board": "ok" if board_ok else (self.board_problem or self.tail.problem or "not checked yet"),
            "scheduler": (
                ("running" if self.scheduler_running else "not running")
                if self.config.orchestrate
                else "none (API only)"
            ),
            "draining": self.draining,
        }
        ok = board_ok and not self.draining and (self.scheduler_running or not self.config.orchestrate)
        return ok, checks
