"""``flock serve`` / ``Flock.serve()``: the HTTP service around a flock, on uvicorn.

One process serves the API and, unless it was built as a publisher (``--no-orchestrator``), runs
the flock's agents on the same event loop. Stopping (SIGTERM, Ctrl-C or :meth:`request_stop`)
goes in this order: readiness turns false and publishes answer 503, open event streams end with
a ``stream.closed`` event, no new run starts, runs in flight finish (for up to
``shutdown_timeout_s``), partial batches are flushed, and then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.core.visibility import AgentIdentity
from flock_cli.errors import RunError, UsageError
from flock_cli.service.app import build_app
from flock_cli.service.config import ServiceConfig, is_loopback
from flock_cli.service.state import ServiceState
from flock_cli.service.tokens import Principal, TokenBook, hash_token, new_token

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.summary import RunSummary
    from flock_cli.early_signals import EarlySignals
    from flock_cli.service.state import ServedFlock

__all__ = ["BlackboardHTTPService"]

log = logging.getLogger("flock_cli.service")

MONITOR_S = 0.5
"""How often the service checks the board (readiness) and counts its open deliveries (backpressure)."""
BOARD_PROBE_S = 5.0
"""A board check that has no answer after this long makes the service not ready."""


class BlackboardHTTPService:
    """A flock served over HTTP. ``run()`` blocks until the service stops; ``await serve()`` does
    the same inside a running event loop; ``app`` is the ASGI application.

    Without ``tokens`` the service accepts one token made for this process (``session_token``),
    and only on a loopback address: binding another address without a token file is refused.
    """

    def __init__(
        self,
        flock: ServedFlock,
        config: ServiceConfig | None = None,
        *,
        tokens: TokenBook | None = None,
        types: dict[str, type[BaseModel]] | None = None,
        force: bool = False,
    ) -> None:
        config = config or ServiceConfig()
        orchestrate = flock.role == "orchestrator"
        if config.orchestrate != orchestrate:
            config = dataclasses.replace(config, orchestrate=orchestrate)
        if tokens is None and not is_loopback(config.host):
            raise UsageError(
                f"refusing to serve on {config.host} without tokens: anyone who reaches the port could"
                " publish and read. Give a token file (--tokens FILE, $FLOCK_TOKENS or settings.serve.tokens;"
                " `flock token new` makes one), or serve on 127.0.0.1 behind a proxy"
            )
        self.session_token: str | None = None
        """The token made for this process when no token file was given (print it for the user)."""
        if tokens is None:
            self.session_token = new_token()
            session = Principal(AgentIdentity(name="session"), None, operator=True)
            tokens = TokenBook({hash_token(self.session_token): session}, "the session token")
        tokens.check_against([a.name for a in flock.agents], (types or _types(flock)).keys())
        traces = [Path(str(sink.path)) for sink in flock.tracer.sinks if hasattr(sink, "path")]
        self.state = ServiceState(flock, config, tokens, types or _types(flock), traces)
        self.config = config
        self.app = build_app(self.state)
        self._force = force
        self._server: Any = None
        self._stopping: asyncio.Task[RunSummary | None] | None = None
        self._stop_board = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._stop_requested = False
        self.failure: BaseException | None = None
        """Why the service stopped on its own (its scheduler failed), if it did."""
        self._summaries: list[RunSummary] = []
        self.summary: RunSummary | None = None
        """What the flock did while served (set when the service has stopped)."""
        self._listening = threading.Event()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait (from another thread) until the service listens; False if ``timeout`` passed first."""
        return self._listening.wait(timeout)

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0, once started)."""
        server = self._server
        if server is not None and server.servers:
            sockets = server.servers[0].sockets
            if sockets:
                return int(sockets[0].getsockname()[1])
        return self.config.port

    def run(self, *, early_signals: EarlySignals | None = None) -> RunSummary | None:
        """Serve until stopped (blocking); returns the flock's summary. See :meth:`serve`."""
        return asyncio.run(self.serve(early_signals=early_signals))

    async def serve(self, *, early_signals: EarlySignals | None = None) -> RunSummary | None:
        """Serve until stopped; returns the summary of what the flock did.

        ``early_signals``: the block that counted Ctrl-C and SIGTERM since the board was opened
        (``flock serve``); it is released just before the server takes the signals, and a signal
        it counted stops the service as soon as it has started, the way one later would.
        """
        import uvicorn

        flock, state = self.state.flock, self.state
        state.closing = asyncio.Event()
        flock.on_activity(state.hub.on_activity)
        flock.on_stream(state.hub.on_stream)
        await self._check_board()
        if self.config.orchestrate:
            await flock.attach(force=self._force)
        watcher = self._watcher = asyncio.create_task(self._watch()) if self.config.orchestrate else None
        tail = asyncio.create_task(state.tail.run(self._stop_board))
        monitor = asyncio.create_task(self._monitor())
        server = self._server = _Server(
            uvicorn.Config(
                self.app,
                host=self.config.host,
                port=self.config.port,
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=max(1, int(self.config.shutdown_timeout_s)),
            ),
            self,
        )
        if early_signals is not None and early_signals.release():
            self._stop_requested = True  # stopped while it started (attaching can take a while)
        if self._stop_requested:
            server.should_exit = True  # request_stop() came before the server existed
        try:
            try:
                await server.serve()
            except SystemExit:  # uvicorn's answer to a port it cannot bind (it logged why)
                raise UsageError(
                    f"flock serve could not listen on {self.config.host}:{self.config.port}"
                    " (in use, or not an address of this machine)"
                ) from None
        finally:
            self.begin_stop()
            assert self._stopping is not None
            try:
                self.summary = await self._stopping
            finally:
                self._stop_board.set()
                for task in (watcher, tail, monitor):
                    if task is not None:
                        await _cancelled(task)
        if self.failure is not None:
            raise RunError(
                f"flock serve stopped because its scheduler failed: {self.failure}"
            ) from self.failure
        return self.summary

    def request_stop(self) -> None:
        """Stop gracefully (as SIGTERM does); safe to call from another thread, and before the
        service has started (it then stops as soon as it has)."""
        self._stop_requested = True
        server = self._server
        if server is None:
            return
        loop = server.loop
        if loop is None:
            server.should_exit = True  # not serving yet: it stops as soon as it starts
            return
        loop.call_soon_threadsafe(self.begin_stop)
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    def begin_stop(self) -> None:
        """Turn readiness false, end the event streams, and start draining the flock."""
        state = self.state
        if self._stopping is not None:
            return
        state.draining = True
        state.closing.set()
        self._stopping = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> RunSummary | None:
        self._stop_board.set()
        if not self.config.orchestrate:
            await self.state.flock.shutdown()
            return None
        state = self.state
        state.scheduler_running = False
        try:
            final = await state.flock.shutdown(
                self.config.shutdown_timeout_s,
                drain=False,
                release_interrupted=state.store.durable,
            )
        except Exception:
            log.exception("flock serve: stopping the flock failed")
            raise
        if self._watcher is not None:
            await _cancelled(self._watcher)  # the watch returns its summary once stopped
        from flock_cli.core.summary import RunSummary

        return RunSummary.merged([*self._summaries, final])

    async def _watch(self) -> None:
        state = self.state
        state.scheduler_running = True
        try:
            self._summaries.append(await state.flock.watch(stop=self._stop_board))
        except Exception as exc:
            # A service that runs no agents any more must not look alive: stop, and say why.
            log.error("flock serve: the scheduler stopped: %s", exc)
            self.failure = exc
            self.begin_stop()
            if self._server is not None:
                self._server.should_exit = True
        finally:
            state.scheduler_running = False

    async def _check_board(self) -> None:
        state = self.state
        try:
            # A board that stopped answering does not fail the read at once: its connection pool
            # keeps reconnecting for up to a minute. Readiness must turn 503 meanwhile, not keep
            # the last answer (load balancers would send requests that then hang).
            pending, _, unrouted = await asyncio.wait_for(state.store.open_work(), BOARD_PROBE_S)
        except TimeoutError:
            state.board_ok = False
            state.board_problem = f"board unreachable: no answer within {BOARD_PROBE_S:g} s"
            return
        except Exception as exc:
            state.board_ok, state.board_problem = False, f"board unreachable: {exc}"
            return
        state.board_ok, state.board_problem = True, None
        state.open_deliveries = pending + unrouted

    async def _monitor(self) -> None:
        while not self._stop_board.is_set():
            await self._check_board()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_board.wait(), MONITOR_S)


def _types(flock: ServedFlock) -> dict[str, type[BaseModel]]:
    return {name: flock.registry.resolve(name) for name in flock.registry.names()}


async def _cancelled(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception as exc:  # already logged where it happened; the service is stopping
            log.debug("flock serve: %s ended with %s", task.get_name(), exc)


class _Server:
    """uvicorn's server, with the stop signal turned into a graceful drain first."""

    def __new__(cls, config: Any, service: BlackboardHTTPService) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            loop: asyncio.AbstractEventLoop | None = None

            async def serve(self, sockets: Any = None) -> None:
                self.loop = asyncio.get_running_loop()
                await super().serve(sockets)

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    service._listening.set()

            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                # uvicorn's own re-raises the signal once served, which would kill the process
                # before the flock drained: the drain is this service's answer to the signal.
                import signal
                import threading

                from uvicorn.server import HANDLED_SIGNALS

                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
                try:
                    yield
                finally:
                    for sig, handler in original.items():
                        signal.signal(sig, handler)

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(service.begin_stop)
                super().handle_exit(sig, frame)

        return Server(config)
