"""The Flock: declares agents, takes publishes, routes artifacts and runs agents."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ValidationError

from flock_cli.clock import Clock, IdFactory, SystemClock, random_uuid4
from flock_cli.core.agent import Agent, AgentBuilder
from flock_cli.core.artifact import Artifact
from flock_cli.core.board import BoardView
from flock_cli.core.dispatcher import Dispatcher, Job
from flock_cli.core.registry import TypeRegistry
from flock_cli.core.router import Router, typed_loader
from flock_cli.core.runner import RunExecutor
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import Failure, RunSummary, SummaryCollector
from flock_cli.core.visibility import PublicVisibility, Visibility
from flock_cli.errors import (
    AgentRunError,
    DuplicateAgentError,
    FlockClosedError,
    IdleTimeoutError,
    InvalidDeclarationError,
    InvalidPayloadError,
    UnknownAgentError,
)
from flock_cli.store.contract import UNRESTRICTED, BlackboardStore, DeadLetter, Delivery, denial
from flock_cli.store.memory import InMemoryBlackboardStore

__all__ = ["Flock"]


class Flock:
    """A blackboard and the agents around it.

    ``publish`` only schedules work; runs start at once in the background on the running event
    loop. ``run_until_idle`` waits until nothing is left to do and returns a :class:`RunSummary`
    of everything since the previous summary.

    Args:
        model: default LLM model string for engines that need one.
        store: the blackboard store (default: a new in-memory store).
        max_agent_iterations: circuit breaker: runs one agent may start between two summaries;
            runs beyond it go to the dead letters and the summary reports the trip.
        max_concurrency: global limit of concurrent runs (None: unlimited).
        clock: time source (inject ``ManualClock`` in tests).
        id_factory: UUID source (inject ``SequentialIds`` in tests).
        rng: randomness for retry jitter.
        lease_ttl: seconds a run's lease on its delivery lasts.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        store: BlackboardStore | None = None,
        max_agent_iterations: int = 1000,
        max_concurrency: int | None = None,
        clock: Clock | None = None,
        id_factory: IdFactory | None = None,
        rng: random.Random | None = None,
        lease_ttl: float = 300.0,
    ) -> None:
        if not isinstance(max_agent_iterations, int) or max_agent_iterations < 1:
            raise InvalidDeclarationError("max_agent_iterations must be an int >= 1")
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise InvalidDeclarationError("max_concurrency must be None or an int >= 1")
        self.model = model
        self.store: BlackboardStore = store if store is not None else InMemoryBlackboardStore()
        self.registry = TypeRegistry()
        self.max_agent_iterations = max_agent_iterations
        self.max_concurrency = max_concurrency
        self.clock: Clock = clock or SystemClock()
        self.store.clock = self.clock  # reads without an explicit time follow the flock's clock
        self._new_id: IdFactory = id_factory or random_uuid4
        self._rng = rng or random.Random()
        self._lease_ttl = lease_ttl
        self._owner = f"flock-{uuid.uuid4().hex[:8]}"
        self._agents: dict[str, Agent] = {}
        self._collector = SummaryCollector()
        self._router = Router(self._agents, self._collector)
        self._dispatcher = Dispatcher(self._start_job, max_concurrency)
        self._iterations: Counter[str] = Counter()
        self._views: dict[str, BoardView] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.Task[Any]] = set()
        self._active = 0
        self._idle: asyncio.Event | None = None
        self._route_lock: asyncio.Lock | None = None
        self._direct: dict[UUID, list[Artifact]] = {}
        self._closed = False
        self._executor = RunExecutor(self)

    # -- declaration -----------------------------------------------------------------------------

    def agent(self, name: str) -> AgentBuilder:
        """Declare a new agent and return its builder."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidDeclarationError("agent names must be non-empty strings")
        if name in self._agents:
            raise DuplicateAgentError(f"An agent named '{name}' already exists in this flock.")
        agent = Agent(name=name)
        self._agents[name] = agent
        return AgentBuilder(self, agent)

    @property
    def agents(self) -> list[Agent]:
        """Declared agents, in declaration order."""
        return list(self._agents.values())

    def get_agent(self, name: str) -> Agent:
        """A declared agent by name."""
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgentError(name, self._agents) from None

    def register_type(self, model: type[BaseModel]) -> str:
        """Make a type known to this flock (so ``publish_external`` can name it); returns its name."""
        return self.registry.register(model)

    def _resolve_model(self, t: type[BaseModel] | str) -> type[BaseModel]:
        return self.registry.resolve(t) if isinstance(t, str) else t

    def _add_subscription(self, agent: Agent, sub: Subscription) -> None:
        self._router.add(sub)
        agent.subscriptions.append(sub)

    def _view(self, agent: Agent) -> BoardView:
        view = self._views.get(agent.name)
        identity = agent.identity
        if view is None or view.identity is not identity:
            view = self._views[agent.name] = BoardView(self.store, identity, self.clock)
        return view

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
        """Validate and store a model instance, then schedule the agents it wakes."""
        return (
            await self.publish_many(
                [obj],
                visibility=visibility,
                correlation_id=correlation_id,
                partition_key=partition_key,
                tags=tags,
            )
        )[0]

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
    ) -> Artifact:
        """Publish a plain dict as an artifact of the registered type ``type_name``."""
        model = self.registry.resolve(type_name)
        artifact = self._build(
            model,
            payload,
            produced_by=produced_by,
            correlation_id=correlation_id,
            partition_key=partition_key,
            tags=tags,
            visibility=visibility,
        )
        await self._publish_built([artifact])
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
        built: list[Artifact] = []
        for obj in objects:
            if not isinstance(obj, BaseModel):
                raise InvalidDeclarationError(
                    f"publish() takes a pydantic model instance, got {type(obj).__name__};"
                    " use publish_external(type_name, payload) for dicts"
                )
            model = type(obj)
            self.registry.name_of(model)
            built.append(
                self._build(
                    model,
                    obj.model_dump(),
                    produced_by="external",
                    correlation_id=correlation_id,
                    partition_key=partition_key,
                    tags=tags,
                    visibility=visibility,
                )
            )
        await self._publish_built(built)
        return built

    def _build(
        self,
        model: type[BaseModel],
        payload: Any,
        *,
        produced_by: str,
        correlation_id: UUID | None,
        partition_key: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: Visibility | None = None,
        artifact_id: UUID | None = None,
        fresh_correlation: bool = True,
    ) -> Artifact:
        type_name = self.registry.name_of(model)
        try:
            validated = model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayloadError(type_name, exc) from None
        if isinstance(tags, str):
            tags = [tags]
        now = self.clock.now()
        if correlation_id is None and fresh_correlation:
            correlation_id = self._new_id()
        return Artifact.trusted(
            id=artifact_id or self._new_id(),
            type=type_name,
            payload=validated.model_dump(mode="json"),
            produced_by=produced_by,
            correlation_id=correlation_id,
            partition_key=partition_key,
            tags=frozenset(tags or ()),
            visibility=(visibility or PublicVisibility()).bind(now),
            created_at=now,
            version=1,
        )

    async def _publish_built(self, artifacts: list[Artifact]) -> None:
        if self._closed:
            raise FlockClosedError("This flock was shut down; it takes no new work.")
        self._hold()
        try:
            await self.store.append(artifacts)
            self._collector.published += len(artifacts)
            await self._route(artifacts)
        finally:
            self._release()

    # -- idle accounting -------------------------------------------------------------------------

    def _idle_event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    def _hold(self) -> None:
        self._active += 1
        self._idle_event().clear()

    def _release(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle_event().set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], bucket: set[asyncio.Task[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        bucket.add(task)
        task.add_done_callback(bucket.discard)

    def _report_crash(self, error: Exception) -> None:
        # An exception escaping a background task is a bug in the runtime or a broken store; it
        # must show up in the summary rather than vanish with the task.
        self._collector.failures.append(
            Failure(
                agent="<runtime>",
                error_type=type(error).__name__,
                error=str(error),
                stage="runtime",
                attempts=0,
                artifact_ids=[],
            )
        )

    def _after(self, delay: float, coro_fn: Any, *args: Any) -> None:
        """Run ``coro_fn(*args)`` after ``delay`` seconds of the flock's clock (timers do not hold idle)."""

        async def timer() -> None:
            await self.clock.sleep(delay)
            if not self._closed:
                try:
                    await coro_fn(*args)
                except Exception as error:
                    self._report_crash(error)

        self._spawn(timer(), self._timers)

    # -- routing ---------------------------------------------------------------------------------

    async def _route(self, artifacts: Sequence[Artifact], only: Subscription | None = None) -> None:
        if self._route_lock is None:
            self._route_lock = asyncio.Lock()
        async with self._route_lock:
            for artifact in artifacts:
                await self._route_one(artifact, only)

    async def _route_one(self, artifact: Artifact, only: Subscription | None) -> None:
        router = self._router
        now = self.clock.now()
        subs = [only] if only is not None else router.subscriptions_for(artifact.type)
        group_runs: dict[str, tuple[Subscription, dict[str, int]]] = {}
        for sub in subs:
            if not sub.accepts_events:
                continue
            agent = self._agents[sub.agent]
            if not artifact.visibility.allows(agent.identity, now=now):
                await self._deny(artifact, sub, agent, now)
                continue
            typed = typed_loader(artifact, sub.models[artifact.type])
            reason = router.screen(artifact, sub, typed, now)
            if reason is not None:
                self._collector.filtered[reason] += 1
                continue
            claim = router.claim_key(sub)
            if claim != sub.agent:  # an exclusive group shared by several agents
                if claim in group_runs:
                    group_runs[claim][1][sub.agent] = sub.priority
                    continue
                if await self.store.claim_consumption(artifact.id, claim):
                    group_runs[claim] = (sub, {sub.agent: sub.priority})
                continue
            if not await self.store.claim_consumption(artifact.id, sub.agent):
                continue  # this agent already took the artifact (idempotency, or an OR branch)
            runs, opened, started = router.gather(artifact, sub, typed, now)
            for gate, group in opened:
                assert sub.join is not None and sub.join.window is not None
                self._after(sub.join.window, self._expire_group, gate, group.key, group.opened_at)
            for batcher, generation in started:
                assert sub.batch is not None and sub.batch.within is not None
                self._after(sub.batch.within, self._flush_batch, batcher, generation)
            for run in runs:
                await self._enqueue(run)
        for claim, (sub, candidates) in group_runs.items():
            await self._enqueue(ReadyRun(sub, [artifact]), queue=claim, candidates=candidates)

    async def _deny(self, artifact: Artifact, sub: Subscription, agent: Agent, now: datetime) -> None:
        record = denial(artifact, agent.identity, now, "schedule")
        await self.store.record_denials([record])
        self._collector.denials += 1
        lifts = self._router.embargo_lift(artifact, agent, now)
        if lifts is not None:
            self._collector.embargoed += 1
            self._after((lifts - now).total_seconds(), self._route, [artifact], sub)

    async def _expire_group(self, gate: Any, key: Any, opened_at: datetime) -> None:
        group = gate.expire(key, opened_at)
        if group is not None:
            self._router.record_expired(gate.sub, group, "window")

    async def _flush_batch(self, batcher: Any, generation: int) -> None:
        if batcher.generation == generation and batcher.units:
            await self._enqueue(self._router.batch_run(batcher, batcher.take(), "timeout"))

    async def _flush_all(self, trigger: str) -> None:
        for run in self._router.flush_all(trigger):
            await self._enqueue(run)

    # -- running ---------------------------------------------------------------------------------

    async def _enqueue(
        self,
        run: ReadyRun,
        *,
        queue: str | None = None,
        candidates: dict[str, int] | None = None,
        trigger: Literal["event", "direct", "redelivery"] = "event",
    ) -> Delivery:
        sub = run.subscription
        delivery = Delivery(
            id=self._new_id(),
            agent=queue or sub.agent,
            artifact_ids=tuple(a.id for a in run.artifacts),
            created_at=self.clock.now(),
            priority=sub.priority,
            trigger=trigger,
            batch_trigger=run.batch_trigger,
            group_sizes=tuple(len(g) for g in run.groups),
        )
        await self.store.add_delivery(delivery)
        self._hold()
        self._dispatcher.submit(
            Job(
                queue=queue or sub.agent,
                priority=max((candidates or {sub.agent: sub.priority}).values()),
                candidates=candidates or {sub.agent: sub.priority},
                payload=(delivery, run),
            )
        )
        return delivery

    def _start_job(self, job: Job) -> None:
        self._spawn(self._run_job(job), self._tasks)

    async def _run_job(self, job: Job) -> None:
        assert job.agent is not None
        agent = self._agents[job.agent]
        delivery, run = job.payload
        resubmitted = False
        try:
            try:
                retry_in = await self._executor.attempt(agent, delivery, run)
            finally:
                self._dispatcher.finished(agent.name)
            if retry_in is not None:
                await self.clock.sleep(retry_in)  # back-off without holding a concurrency slot
                self._dispatcher.submit(job)
                resubmitted = True  # the job stays counted as active work
        except Exception as error:
            self._report_crash(error)
        finally:
            if not resubmitted:
                self._release()  # exactly once per job, whatever happened (a crash is reported)

    # -- waiting and stopping --------------------------------------------------------------------

    async def run_until_idle(self, timeout: float | None = None) -> RunSummary:
        """Wait until no run is queued, running or backing off (partial batches are flushed), then
        return the summary of everything since the previous one.

        Raises IdleTimeoutError (carrying the summary so far) if ``timeout`` seconds pass first.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._settle("idle")
        except TimeoutError:
            raise IdleTimeoutError(timeout or 0.0, self._take_summary()) from None
        return self._take_summary()

    async def _settle(self, flush_trigger: str) -> None:
        idle = self._idle_event()
        while True:
            await idle.wait()
            if any(b.units for b in self._router.batchers.values()):
                await self._flush_all(flush_trigger)
                continue
            if self._active == 0:
                return

    def _take_summary(self) -> RunSummary:
        summary = self._collector.build(self._router.pending())
        self._collector.reset()
        self._iterations.clear()
        return summary

    async def shutdown(self) -> RunSummary:
        """Stop taking work, flush partial batches, wait for in-flight runs; return the summary."""
        self._closed = True
        await self._settle("shutdown")
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        return self._take_summary()

    # -- direct invocation and dead letters ------------------------------------------------------

    async def arun(self, agent: AgentBuilder | Agent | str, *inputs: BaseModel) -> list[Artifact]:
        """Run one agent directly on ``inputs`` (all in one run), wait until idle, return its outputs.

        The inputs are stored on the board but delivered to no other agent. Raises AgentRunError if
        the run failed.
        """
        target = self._target(agent)
        if not inputs:
            raise InvalidDeclarationError(f"arun('{target.name}') needs at least one input")
        built = []
        correlation = self._new_id()
        for obj in inputs:
            if not isinstance(obj, BaseModel):
                raise InvalidDeclarationError(f"arun() inputs must be model instances, got {obj!r}")
            built.append(
                self._build(type(obj), obj.model_dump(), produced_by="external", correlation_id=correlation)
            )
        types = {a.type for a in built}
        sub = next((s for s in target.subscriptions if s.accepts_direct and types <= set(s.type_names)), None)
        if sub is None:
            raise InvalidDeclarationError(
                f"agent '{target.name}' has no subscription with mode 'direct' or 'both' consuming"
                f" {', '.join(sorted(types))}"
            )
        if self._closed:
            raise FlockClosedError("This flock was shut down; it takes no new work.")
        self._hold()
        try:
            await self.store.append(built)
            self._collector.published += len(built)
            for artifact in built:
                await self.store.claim_consumption(artifact.id, target.name)
            delivery = await self._enqueue(
                ReadyRun(sub, built, [built] if sub.gathers else []), trigger="direct"
            )
            self._direct[delivery.id] = []
        finally:
            self._release()
        summary = await self.run_until_idle()
        outputs = self._direct.pop(delivery.id)
        failure = next((f for f in summary.failures if f.delivery_id == delivery.id), None)
        if failure is not None and not failure.outputs_published:
            raise AgentRunError(
                target.name, failure.stage, RuntimeError(f"{failure.error_type}: {failure.error}")
            )
        return outputs

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
        """Runs that failed for good or were held by a circuit breaker."""
        return await self.store.dead_letters()

    async def retry_dead_letter(self, letter_id: UUID) -> Delivery:
        """Deliver a dead letter's artifacts to its agent again (the letter is removed)."""
        letter = await self.store.take_dead_letter(letter_id)
        if letter is None:
            raise InvalidDeclarationError(f"No dead letter with id {letter_id}")
        agent = self.get_agent(letter.agent)
        artifacts = await self.store.get_many(letter.artifact_ids, viewer=UNRESTRICTED)
        index = letter.subscription if letter.subscription is not None else 0
        sub = agent.subscriptions[index]
        self._hold()
        try:
            return await self._enqueue(
                ReadyRun(sub, artifacts, [artifacts] if sub.gathers else []), trigger="redelivery"
            )
        finally:
            self._release()
