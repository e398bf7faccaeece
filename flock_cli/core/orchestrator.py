"""The Flock: declares agents, takes publishes, and reports what happened.

This module is the facade and the wiring: it builds the :class:`~flock_cli.core.runtime.Runtime`
first, then the collaborators (scheduler, runner, board session, publishing, direct runs, serving),
and hands each public call to the one that does the work. It is the only module of the runtime that
knows them all, and none of them imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel

from flock_cli.clock import Clock, IdFactory, SystemClock, random_uuid4
from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.builder import AgentBuilder
from flock_cli.core.declarations import Declarations
from flock_cli.core.direct import DirectRuns
from flock_cli.core.envelope import model_payload
from flock_cli.core.membership import Membership
from flock_cli.core.publishing import Publisher
from flock_cli.core.registry import TypeRegistry
from flock_cli.core.runner import RunExecutor
from flock_cli.core.runtime import Fixed, Runtime
from flock_cli.core.scheduler import Scheduler
from flock_cli.core.serving import Serving
from flock_cli.core.session import BoardSession
from flock_cli.core.snapshot import pending_by_agent, threadsafe_status
from flock_cli.core.specs import Budget, coerce_spec
from flock_cli.core.summary import LiveStatus, RunSummary
from flock_cli.core.usage import UsageLedger
from flock_cli.core.visibility import Visibility
from flock_cli.errors import InvalidDeclarationError, UsageError
from flock_cli.mcp_tools.config import McpServer
from flock_cli.mcp_tools.pool import McpServers
from flock_cli.store.contract import BlackboardStore, DeadLetter
from flock_cli.store.memory import InMemoryBlackboardStore
from flock_cli.store.records import RunRecord
from flock_cli.tracing.records import StatusRecord
from flock_cli.tracing.setup import TracesOption, build_tracer
from flock_cli.tracing.tracer import Activity, RunScope, StreamChunk, Tracer

if TYPE_CHECKING:
    from flock_cli.service.server import BlackboardHTTPService

__all__ = ["LEASE_TTL", "SHARED_LEASE_TTL", "Flock"]

LEASE_TTL = 300.0
"""Default seconds a run's lease lasts on a board one orchestrator works."""
SHARED_LEASE_TTL = 30.0
"""Default on a board many orchestrators share (heartbeats renew it every 10 s)."""


class Flock:
    """A blackboard and the agents around it.

    ``publish`` only schedules work; runs start at once in the background on the running event
    loop. ``run_until_idle`` waits until nothing is left to do and returns a :class:`RunSummary`
    of everything since the previous summary.

    Args:
        model: default model for engines that need one: a model string or a
            ``flock_cli.Model`` (``api_base``, ``api_key_env``, ``rate_limit``).
        store: the blackboard store (default: a new in-memory store).
        max_agent_iterations: circuit breaker: runs one agent may start between two summaries;
            runs beyond it go to the dead letters and the summary reports the trip.
        max_concurrency: global limit of concurrent runs (None: unlimited).
        clock: time source (inject ``ManualClock`` in tests).
        id_factory: UUID source (inject ``SequentialIds`` in tests).
        rng: randomness for retry jitter.
        lease_ttl: seconds a run's lease on its delivery lasts (default 300; 30 on a board many
            processes share, where heartbeats renew the leases of live processes every third
            of it and a dead process's leases are taken over once they expire).
        role: ``"orchestrator"`` (the default) runs agents; ``"publisher"`` only appends to the
            board, leaving the routing and running to the orchestrator watching that board
            (``Flock.watch``), as ``flock publish`` does next to a running ``flock run --watch``.
        traces: where spans, events and status snapshots go: a DuckDB file path, a folder (the
            flock writes ``<host>-<pid>.duckdb`` in it), ``False`` for none, or ``None`` (the
            default) for ``$FLOCK_TRACES`` or ``.flock/traces.duckdb``.
            ``OTEL_EXPORTER_OTLP_*`` variables add an OTLP export (see ``flock_cli.tracing.otlp``).
        budget: limits on the model usage of all agents together (:class:`Budget`); agents may
            have their own (``agent(...).budget(...)``).
    """

    model: Fixed[Any] = Fixed("Default model (a string or a Model) for engines that need one.")
    store: Fixed[BlackboardStore] = Fixed("The blackboard store.")
    registry: Fixed[TypeRegistry] = Fixed("The types this flock knows, by name.")
    clock: Fixed[Clock] = Fixed("The time source of windows, embargoes, timers and back-off.")
    tracer: Fixed[Tracer] = Fixed("Spans, events and metrics (``tracer.metrics.render()``: Prometheus).")
    budget: Fixed[Budget | None] = Fixed("Limits on the model usage of all agents together.")
    max_agent_iterations: Fixed[int] = Fixed("The circuit breaker: runs per agent within one workflow.")
    max_concurrency: Fixed[int | None] = Fixed("Global limit of concurrent runs (None: unlimited).")
    role: Fixed[Literal["orchestrator", "publisher"]] = Fixed("``orchestrator`` or ``publisher``.")

    def __init__(
        self,
        model: Any = None,  # a model string or a flock_cli.Model (core does not import engines)
        *,
        store: BlackboardStore | None = None,
        max_agent_iterations: int = 1000,
        max_concurrency: int | None = None,
        clock: Clock | None = None,
        id_factory: IdFactory | None = None,
        rng: random.Random | None = None,
        lease_ttl: float | None = None,
        role: Literal["orchestrator", "publisher"] = "orchestrator",
        traces: TracesOption = None,
        budget: Budget | dict[str, Any] | None = None,
    ) -> None:
        if role not in ("orchestrator", "publisher"):
            raise InvalidDeclarationError(f"role must be 'orchestrator' or 'publisher', got {role!r}")
        if not isinstance(max_agent_iterations, int) or max_agent_iterations < 1:
            raise InvalidDeclarationError("max_agent_iterations must be an int >= 1")
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise InvalidDeclarationError("max_concurrency must be None or an int >= 1")
        store = store if store is not None else InMemoryBlackboardStore()
        if lease_ttl is None:
            # On a shared board a dead process's leases are taken over when they expire, while
            # live ones renew theirs by heartbeat (every third of it): a short lease is safe.
            lease_ttl = SHARED_LEASE_TTL if store.shared else LEASE_TTL
        if not lease_ttl > 0:
            raise InvalidDeclarationError("lease_ttl must be > 0 seconds")
        clock = clock or SystemClock()
        store.clock = clock  # reads without an explicit time follow the flock's clock
        self._new_id: IdFactory = id_factory or random_uuid4
        rng = rng or random.Random()
        self._lease_ttl = lease_ttl
        owner = f"flock-{uuid.uuid4().hex[:8]}"
        self._agents: dict[str, Agent] = {}
        budgeted: dict[str, Agent] = {}
        # The services and configuration the collaborators share; they never see the Flock. The
        # public settings below (Fixed) read them, and refuse assignment.
        runtime = self._runtime = Runtime(
            store=store,
            tracer=build_tracer(traces, snapshot=self._status_record, board=store),
            clock=clock,
            new_id=self._new_id,
            owner=owner,
            registry=TypeRegistry(),
            agents=self._agents,
            budgeted=budgeted,
            budget=coerce_spec(Budget, budget, "budget"),
            rng=rng,
            lease_ttl=lease_ttl,
            max_agent_iterations=max_agent_iterations,
            model=model,
            tool_servers=McpServers(),
            max_concurrency=max_concurrency,
            role=role,
        )
        self._state = runtime.state
        scheduler = self._scheduler = Scheduler(runtime, max_concurrency)
        self.tracer.metrics.pending = lambda: pending_by_agent(scheduler)
        self._executor = RunExecutor(runtime, scheduler)
        self._session = BoardSession(runtime, scheduler)
        scheduler.connect(self._executor, self._session.reload_gathering)
        self._declarations = Declarations(
            self._agents, self.registry, scheduler.router, scheduler.dispatcher, budgeted
        )
        executor = self._executor
        membership = (
            Membership(runtime, scheduler, executor.preleased, executor.held_leases) if store.shared else None
        )
        self._serving = Serving(runtime, scheduler, self._session, self._executor.letters, role, membership)
        self._publisher = Publisher(runtime, scheduler, role, self._serving.ready)
        self._direct = DirectRuns(runtime, scheduler, self._publisher, self._serving.ready)

    @property
    def resumed(self) -> dict[str, int]:
        """What attaching to the board restored: gate and batch entries, deliveries, unrouted
        artifacts, and embargoed work offered again (``embargoed``: started or still waiting)."""
        return dict(self._session.resumed)

    @property
    def closed(self) -> bool:
        """True after :meth:`shutdown`."""
        return self._state.closed

    # -- declaration -----------------------------------------------------------------------------

    def agent(self, name: str) -> AgentBuilder:
        """Declare a new agent and return its builder.

        Names start with a letter and use letters, digits, ``_``, ``.`` and ``-``; ``external`` is
        reserved for outside publishers.
        """
        return AgentBuilder(self._declarations, self._declarations.declare(name))

    @property
    def agents(self) -> list[Agent]:
        """Declared agents, in declaration order."""
        return list(self._agents.values())

    def get_agent(self, name: str) -> Agent:
        """A declared agent by name."""
        return self._runtime.agent(name)

    def mcp_server(self, name: str, **options: Any) -> Flock:
        """Declare an MCP server whose tools agents may use (``with_tools(["name.tool"])``).

        Give ``command`` (with ``args``, ``env``, ``cwd``: a local program over stdio) or ``url``
        (with ``headers``: streamable HTTP); ``${NAME}`` in env, headers or url is read from the
        environment when the server starts. ``timeout`` (seconds per tool call, default 60),
        ``startup_timeout`` (default 30) and ``max_restarts`` (default 3) bound it. The server
        starts when an agent first needs its tools, is shared by the flock's agents and stops at
        :meth:`shutdown`. Needs the ``flock-flow[mcp]`` extra. See docs/mcp.md.
        """
        from pydantic import ValidationError

        try:
            server = McpServer(name=name, **options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in exc.errors())
            raise InvalidDeclarationError(f"MCP server '{name}': {problems}") from None
        self._runtime.tool_servers.declare(server)
        return self

    @property
    def mcp_servers(self) -> McpServers:
        """The MCP servers declared with :meth:`mcp_server` (``tools_for``, ``call``, ``aclose``)."""
        servers: McpServers = self._runtime.tool_servers
        return servers

    def register_type(self, model: type[BaseModel]) -> str:
        """Make a type known to this flock (so ``publish_external`` can name it); returns its name."""
        return self.registry.register(model)

    # -- publishing ------------------------------------------------------------------------------

    async def publish(
        self,
        obj: BaseModel,
        *,
        visibility: Visibility | None = None,
        correlation_id: UUID | None = None,
        partition_key: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> Artifact:
        """Validate and store a model instance, then schedule the agents it wakes.

        A fresh correlation id is assigned unless one is given.
        """
        published = await self.publish_many(
            [obj],
            visibility=visibility,
            correlation_id=correlation_id,
            partition_key=partition_key,
            tags=tags,
        )
        return published[0]

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
    ) -> Artifact:
        """Publish a plain dict as an artifact of the registered type ``type_name``.

        ``produced_by`` names the outside source; it may not be the name of one of this flock's
        agents (agents publish through their outputs). ``artifact_id`` fixes the new artifact's
        id (the HTTP service derives it from an ``Idempotency-Key``); the board refuses a second
        artifact with an id it holds already, so a retried publish cannot store a duplicate.
        """
        if not isinstance(produced_by, str) or not produced_by:
            raise UsageError("produced_by must be a non-empty string")
        if produced_by in self._agents:
            raise UsageError(
                f"produced_by='{produced_by}' names an agent of this flock; agents publish through"
                " their outputs, outside sources need another name"
            )
        if not isinstance(payload, dict):
            raise UsageError(f"publish_external() takes the payload as a dict, got {type(payload).__name__}")
        artifact = self._runtime.build(
            self.registry.resolve(type_name),
            payload,
            produced_by=produced_by,
            correlation_id=correlation_id,
            partition_key=partition_key,
            tags=tags,
            visibility=visibility,
            artifact_id=artifact_id,
        )
        await self._publisher.publish([artifact])
        return artifact

    async def publish_many(
        self,
        objects: Iterable[BaseModel],
        *,
        visibility: Visibility | None = None,
        correlation_id: UUID | None = None,
        partition_key: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[Artifact]:
        """Publish several instances: all are validated first, so one invalid payload stores none."""
        built = [
            self._runtime.build(
                type(obj),
                model_payload(obj, "publish"),
                produced_by="external",
                correlation_id=correlation_id,
                partition_key=partition_key,
                tags=tags,
                visibility=visibility,
            )
            for obj in objects
        ]
        await self._publisher.publish(built)
        return built

    @property
    def usage(self) -> UsageLedger:
        """What the agents' model calls used so far: ``usage.total`` and ``usage.of(agent)``."""
        return self.tracer.usage

    def on_stream(self, listener: Callable[[StreamChunk], None]) -> None:
        """Call ``listener`` on the event loop with each piece of model text an engine streams
        (``StreamChunk(agent, run, text, done)``); ``flock run`` prints them this way."""
        self.tracer.stream_listeners.append(listener)

    def on_activity(self, listener: Callable[[Activity], None]) -> None:
        """Call ``listener`` on the event loop with each agent run's start and end and each runtime
        event (``Activity``); ``flock serve``'s event stream follows the flock this way."""
        self.tracer.activity_listeners.append(listener)

    @contextlib.asynccontextmanager
    async def traced_run(self, name: str = "workflow", **attributes: Any) -> AsyncIterator[RunScope]:
        """Group a workflow into one trace: every publish inside the block, and every agent run
        those publishes cause, joins a run named ``name`` (``flock trace list`` shows it)."""
        if not isinstance(name, str) or not name.strip():
            raise UsageError("traced_run() needs a non-empty name")
        try:
            async with self.tracer.traced_run(name, attributes) as scope:
                self._state.run_scopes.append(scope)
                try:
                    yield scope
                finally:
                    self._state.run_scopes.remove(scope)
        finally:
            if self._state.closed and not self._state.run_scopes:  # shutdown inside the block left this to us
                await asyncio.to_thread(self.tracer.close)

    def _status_record(self) -> StatusRecord | None:
        return threadsafe_status(self._runtime, self._scheduler)

    async def attach(self, *, force: bool = False) -> RunRecord:
        """Attach to the board now (done automatically on first use) and resume unfinished work.

        On a durable board this restores gates and batches, dispatches pending deliveries and
        routes artifacts nobody routed yet. It refuses when another live orchestrator runs on the
        board, or when the unfinished work belongs to a different workflow definition, unless
        ``force=True``. Returns the record of this run.
        """
        return await self._serving.attach(force=force)

    async def watch(
        self,
        *,
        poll_interval: float = 0.2,
        stop: asyncio.Event | None = None,
        idle_exit: float | None = None,
    ) -> RunSummary:
        """Keep serving: route what other processes publish to the board, run it, repeat.

        Returns when ``stop`` is set (at once: what is running or queued is left to ``shutdown``,
        which drains it or not), or after ``idle_exit`` seconds with nothing to do (then once
        idle); the result is the summary of everything since the previous summary.
        """
        return await self._serving.watch(poll_interval=poll_interval, stop=stop, idle_exit=idle_exit)

    async def replay(self, artifact_ids: Iterable[UUID]) -> list[Artifact]:
        """Publish copies of chosen artifacts as new work (new ids, tagged ``replay-of:<id>``).

        Replay is explicit and never part of resuming: the originals stay as they were, and the
        copies go through routing like any new artifact.
        """
        return await self._publisher.replay(artifact_ids)

    # -- waiting and stopping --------------------------------------------------------------------

    def status(self) -> LiveStatus:
        """A snapshot for progress displays: runs going and queued per agent, counters so far."""
        return self._scheduler.status()

    async def run_until_idle(self, timeout: float | None = None) -> RunSummary:
        """Wait until no run is queued, running or backing off (partial batches are flushed), then
        return the summary of everything since the previous one.

        Raises IdleTimeoutError (carrying the summary so far) if ``timeout`` seconds pass first.
        """
        return await self._serving.run_until_idle(timeout)

    async def shutdown(
        self, timeout: float | None = None, *, release_interrupted: bool = False, drain: bool = True
    ) -> RunSummary:
        """Stop taking work, flush partial batches, wait for in-flight runs, return the summary.

        With ``drain`` (the default) every run already queued, and every run they cause, still
        runs. With ``drain=False`` no new run starts: runs in flight finish, and the runs still
        waiting (including those of flushed batches) are left: pending on a durable board for the
        next flock, dead letters (``reason="stopped"``) otherwise (``RunSummary.not_started``).

        With ``timeout``, runs still going after that many seconds are cancelled; each is reported
        as a failure and kept as a dead letter, or, with ``release_interrupted`` on a durable
        board, its lease is released so the next flock on the board runs it again (counted in
        ``RunSummary.released``). On a store that does not outlive the process,
        deliveries still waiting for an embargo become dead letters too (``reason="embargoed"``);
        a durable board offers them again when the flock resumes.
        """
        return await self._serving.shutdown(timeout, release_interrupted=release_interrupted, drain=drain)

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8344,
        *,
        tokens: str | os.PathLike[str] | None = None,
        force: bool = False,
        **limits: Any,
    ) -> BlackboardHTTPService:
        """This flock as an HTTP service (the ``[serve]`` extra): call ``.run()`` on the result,
        or ``await .serve()`` in a running loop. ``tokens`` is a token file (default:
        ``$FLOCK_TOKENS``; without one, a session token is made and only loopback is served);
        ``limits`` are :class:`~flock_cli.service.config.ServiceConfig` fields
        (``max_body_bytes``, ``requests_per_second``, ``burst``, ``max_pending``,
        ``max_streams_per_token``, ``shutdown_timeout_s``). A publisher flock serves the API only;
        an orchestrator runs its agents too.
        """
        from dataclasses import fields
        from pathlib import Path

        from flock_cli.service import require
        from flock_cli.service.config import ServiceConfig
        from flock_cli.service.tokens import tokens_from

        service = require()
        known = {f.name for f in fields(ServiceConfig)} - {"host", "port", "orchestrate"}
        unknown = sorted(set(limits) - known)
        if unknown:
            raise UsageError(
                f"serve() got an unknown option {unknown[0]!r}; options: {', '.join(sorted(known))}"
            )
        config = ServiceConfig(host=host, port=port, **limits)
        return service(self, config, tokens=tokens_from(Path(tokens) if tokens else None, None), force=force)

    # -- direct invocation and dead letters ------------------------------------------------------

    async def arun(self, agent: AgentBuilder | Agent | str, *inputs: BaseModel) -> list[Artifact]:
        """Run one agent directly on ``inputs`` (all in one run) and return its outputs.

        The inputs are stored on the board but offered to no other agent. The call returns once
        the run is done and the flock is idle again (so the outputs' own consumers have run too);
        it leaves the run summary to the next ``run_until_idle``. Raises AgentRunError if the run
        failed for good, with the engine's exception as ``__cause__``.
        """
        return await self._direct.run(self._target(agent), inputs)

    def run(self, agent: AgentBuilder | Agent | str, *inputs: BaseModel) -> list[Artifact]:
        """Synchronous :meth:`arun` (must not be called from a running event loop)."""
        return asyncio.run(self.arun(agent, *inputs))

    def _target(self, agent: AgentBuilder | Agent | str) -> Agent:
        if isinstance(agent, AgentBuilder):
            return agent.agent
        if isinstance(agent, Agent):
            return agent
        return self.get_agent(agent)

    async def dead_letters(self) -> list[DeadLetter]:
        """Runs that failed for good, were held by a circuit breaker, or waited on an embargo."""
        return await self.store.dead_letters()

    async def retry_dead_letter(self, letter_id: UUID) -> None:
        """Offer a dead letter's artifacts to its agent again; the letter is removed.

        Visibility is checked again, so an embargoed letter waits for its embargo once more.
        """
        await self._direct.retry(letter_id)
