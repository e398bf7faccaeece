"""Executing one delivery: the lease, stages 2 to 9 of an agent run, the commit, and retries.

Before the lease a run passes admission (visibility, circuit breaker, budgets:
:mod:`flock_cli.core.admission`); what fails for good is kept by :mod:`flock_cli.core.dead_letters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pydantic import BaseModel

from flock_cli.core import lifecycle
from flock_cli.core.admission import Admission, calls_models
from flock_cli.core.agent import Agent, AgentComponent
from flock_cli.core.artifact import Artifact
from flock_cli.core.board_admission import BoardAdmission
from flock_cli.core.breaker import BreakerCounts
from flock_cli.core.context import Context
from flock_cli.core.dead_letters import DeadLetters, DirectCalls, cause_of
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import SummaryCollector
from flock_cli.errors import AgentRunError, BoardConnectionError, InvalidPayloadError, OutputError
from flock_cli.store.contract import Delivery, StaleLeaseError
from flock_cli.tracing.records import Span
from flock_cli.tracing.run_trace import RunTrace
from flock_cli.tracing.tracer import Activity

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime

__all__ = ["RunExecutor", "Scheduling"]


class Scheduling(DirectCalls, Protocol):
    """What a run needs of the scheduler (:class:`~flock_cli.core.scheduler.Scheduler`): the
    summary being collected, the breaker's counts, the artifacts appended but not routed yet,
    routing the outputs, and settling a direct call's future (``DirectCalls``)."""

    collector: SummaryCollector
    iterations: BreakerCounts
    in_flight: set[UUID]
    preleased: dict[UUID, int]

    def done_routing(self, ids: Iterable[UUID]) -> None:
        """``ids`` leave ``in_flight`` (see ``Routing.done_routing``)."""

    def taken_by_none(self, artifacts: Sequence[Artifact]) -> frozenset[UUID]:
        """The ids of ``artifacts`` no subscription takes (see ``Routing.taken_by_none``)."""
        ...

    async def route(
        self,
        artifacts: Sequence[Artifact],
        only: Sequence[Subscription] | None = None,
        *,
        stored_routed: Collection[UUID] = frozenset(),
    ) -> None:
        """Offer artifacts to the subscriptions of their type and start the runs that became ready
        (``stored_routed``: those stored routed already, see ``Routing.route``)."""
        ...


class RunExecutor:
    """Runs deliveries for one Flock: lease, lifecycle, atomic commit of outputs, failure handling.

    An attempt either commits its outputs together with the delivery's completion, or releases the
    lease for a retry (returning the back-off delay), or marks the delivery dead and keeps a dead
    letter. Failures after the commit (post-publish hooks, ``calls``) are reported and dead-lettered
    with ``outputs_published=True`` but never retried, since retrying would publish twice.
    """

    def __init__(self, runtime: Runtime, scheduler: Scheduling) -> None:
        self._runtime = runtime
        # delivery (its id's integer: hashed in C) -> attempt, while this process holds its lease
        self._holding: dict[int, int] = {}
        # delivery -> attempt: leased before its run started (created leased by routing, or
        # taken from a shared board); shared with the scheduler, which fills it
        self.preleased = scheduler.preleased
        self._scheduler = scheduler
        self._collector = scheduler.collector
        self.letters = DeadLetters(runtime, scheduler.collector, scheduler)
        kind = BoardAdmission if runtime.store.shared else Admission
        self._admission = kind(
            runtime, scheduler.iterations, scheduler.collector, self.letters, self.preleased
        )
        # A board only this process works: admission is decided in memory (``Admission.check``)
        # and has nothing to add up after a run, so neither needs a coroutine.
        self._local_admission = kind is Admission

    async def attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool
    ) -> float | None:
        """One attempt at a delivery. Returns the back-off delay when it should be retried.

        ``count_run`` is False for retries: the circuit breaker counts runs, not attempts.
        """
        admission = self._admission
        model_run = calls_models(agent)
        if self._local_admission:  # decided here, without a coroutine per run
            refused = admission.check(agent, delivery, run, count_run=count_run)
        else:
            refused = await admission.admit(agent, delivery, run, count_run=count_run, model_run=model_run)
        if refused is not None:
            await refused  # kept as a dead letter: denied, breaker or budget
            return None
        if model_run:
            admission.admitted[agent.name] += 1
        try:
            return await self._attempt_leased(agent, delivery, run)
        finally:
            if model_run:
                admission.admitted[agent.name] -= 1
            if not self._local_admission:
                await admission.finished(agent, delivery)

    async def _attempt_leased(self, agent: Agent, delivery: Delivery, run: ReadyRun) -> float | None:
        runtime, store = self._runtime, self._runtime.store
        attempt = self.preleased.pop(delivery.id, None)
        if attempt is None:
            leased = await store.lease(
                delivery.id, runtime.owner, now=runtime.clock.now(), ttl=runtime.lease_ttl
            )
            if leased is None:
                return None  # someone else holds it, or it is finished
            attempt = leased.attempts
        key = delivery.id.int
        self._holding[key] = attempt
        try:
            result = await self._leased_attempt(agent, delivery, run, attempt)
        except asyncio.CancelledError:
            raise  # keep the attempt: abandon() fences the lease this run still holds
        except BaseException:
            self._holding.pop(key, None)
            raise
        self._holding.pop(key, None)
        return result

    async def _leased_attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, attempt: int
    ) -> float | None:
        """One leased attempt inside its ``agent.run`` span (which its stages and outputs join)."""
        tracer = self._runtime.tracer
        attributes: dict[str, Any] = {}
        if tracer.enabled:  # with tracing off no one reads them (the outcome is set below)
            attributes = {
                "flock.attempt": attempt,
                "flock.delivery": str(delivery.id),
                "flock.subscription": run.subscription.index,
                "flock.trigger": delivery.trigger,
            }
        span = tracer.start_for("agent.run", run.artifacts, agent=agent.name, attributes=attributes)
        span.inputs = tuple(a.id for a in run.artifacts)
        tracer.metrics.run_started(agent.name)
        if tracer.activity_listeners:
            tracer.notify(
                Activity(
                    "run.started", agent.name, span.span_id, tuple(run.artifacts), None, {"attempt": attempt}
                )
            )
        token = tracer.enter(span)
        outcome = "cancelled"
        try:
            delay = await self._traced_attempt(agent, delivery, run, attempt, span)
            outcome = span.attributes.setdefault("flock.outcome", "ok")
            return delay
        except BaseException as exc:
            cancelled = not isinstance(exc, Exception)
            span.status = "error"
            span.message = "cancelled: the flock was stopped" if cancelled else f"{type(exc).__name__}: {exc}"
            outcome = "cancelled" if cancelled else "failed"
            span.attributes["flock.outcome"] = outcome
            raise
        finally:
            tracer.leave(token)
            tracer.end(span, "ok" if span.status == "unset" else span.status, span.message)
            seconds = (span.end_ns - span.start_ns) / 1e9
            tracer.metrics.run_finished(agent.name, outcome, seconds)
            if tracer.activity_listeners:
                kind = "run.finished" if outcome == "ok" else "run.failed"
                details = {"attempt": attempt, "outcome": outcome, "duration_s": round(seconds, 6)}
                if span.message:
                    details["error"] = span.message
                tracer.notify(Activity(kind, agent.name, span.span_id, tuple(run.artifacts), None, details))

    async def _traced_attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, attempt: int, span: Span
    ) -> float | None:
        runtime, store = self._runtime, self._runtime.store
        artifacts = list(run.artifacts)
        ctx = Context(
            agent=agent.name,
            identity=agent.identity,
            board=runtime.view(agent),
            task_id=f"{delivery.id}:{attempt}",
            correlation_id=artifacts[0].correlation_id if artifacts else None,
            attempt=attempt,
            is_batch=run.subscription.batch is not None,
            batch_trigger=run.batch_trigger,  # type: ignore[arg-type]
            trigger="direct" if delivery.trigger == "direct" else "event",
            trace=RunTrace(runtime.tracer, span),
            model=runtime.model,
            tool_servers=runtime.tool_servers,
        )
        self._collector.runs[agent.name] += 1
        try:
            try:
                wrap = self._wrapper(agent, ctx)
                result, failed_tries = await lifecycle.evaluate(agent, ctx, artifacts, run.groups, wrap)
                for error in failed_tries:
                    await self._hooks_on_error(agent, ctx, error)
                    self.letters.failure(agent, "best_of", error, attempt, delivery)
                with lifecycle.staged(agent, "publish"):
                    outputs = self._outputs(agent, ctx, artifacts, result.artifacts, wrap)
                    self._scheduler.in_flight.update(o.id for o in outputs)
                    terminal = self._scheduler.taken_by_none(outputs)
                    runtime.tracer.adopt(outputs, span)
                    started = time.time_ns()
                    try:
                        await store.complete(delivery.id, attempt, outputs, routed=terminal)
                    except BaseException as exc:
                        self._scheduler.done_routing(o.id for o in outputs)
                        runtime.tracer.record(
                            span, "store.complete", started, time.time_ns(), "error", str(exc)
                        )
                        raise
                    runtime.tracer.record(span, "store.complete", started, time.time_ns())
            except Exception as exc:
                cause = cause_of(exc)
                if isinstance(cause, StaleLeaseError | BoardConnectionError):
                    # The lease expired (a long pause, a lost connection) and another process of
                    # the shared board took the delivery over: that run counts, this one's
                    # outputs were refused. Or the board stayed unreachable past its reconnect
                    # limit: the outputs were not stored, and the lease, no longer renewed,
                    # lapses, so the delivery runs again once the board is back (not the
                    # agent's failure: no retry, no dead letter, which could not be written).
                    self._collector.leases_lost += 1
                    span.status, span.message = "error", f"lease lost: {cause}"
                    span.attributes["flock.outcome"] = "lease_lost"
                    runtime.tracer.event(
                        "run.lease_lost", agent=agent.name, attempt=attempt, error=str(cause)
                    )
                    return None
                await self._hooks_on_error(agent, ctx, exc)
                span.status, span.message = "error", f"{type(cause).__name__}: {cause}"
                if agent.retry_policy.should_retry(cause, attempt):
                    self._collector.retries += 1
                    delay = agent.retry_policy.delay(attempt, runtime.rng)
                    span.attributes["flock.outcome"] = "retry"
                    runtime.tracer.event(
                        "run.retry", agent=agent.name, attempt=attempt, delay_s=delay, error=span.message
                    )
                    retry_at = runtime.clock.now() + timedelta(seconds=delay)
                    await store.release(delivery.id, attempt, retry_at=retry_at)
                    return delay
                span.attributes["flock.outcome"] = "failed"
                await self.letters.dead_letter(agent, delivery, run, exc, attempt, outputs_published=False)
                self._scheduler.resolve_direct(delivery.id, error=_as_run_error(agent, exc))
                return None
            self._collector.published += len(outputs)
            runtime.tracer.published(outputs, span)
            self._scheduler.resolve_direct(delivery.id, outputs=outputs)
            await self._scheduler.route(outputs, stored_routed=terminal)
            try:
                if agent.utilities:  # stages 8 and 9 only when there is something to call
                    await lifecycle.post_publish(agent, ctx, outputs)
                if agent.calls_func is not None:
                    await lifecycle.invoke_calls(agent, ctx, outputs)
            except Exception as exc:
                await self._hooks_on_error(agent, ctx, exc)
                span.status, span.message = "error", f"{type(cause_of(exc)).__name__}: {cause_of(exc)}"
                span.attributes["flock.outcome"] = "failed"
                await self.letters.dead_letter(agent, delivery, run, exc, attempt, outputs_published=True)
        finally:
            terminating = lifecycle.hooks_of(agent, "on_terminate")
            if terminating:  # no coroutine when no component overrides it
                await self._hooks_on_terminate(agent, ctx, terminating)
        return None

    def _wrapper(self, agent: Agent, ctx: Context) -> lifecycle.Wrap:
        """Turns engine and component outputs into validated artifacts stamped with this run."""
        runtime = self._runtime
        # by id(): the very artifacts this run made (kept alive here, so no id() is reused);
        # an int key hashes without running Python code, a UUID's does not
        wrapped: dict[int, Artifact] = {}

        def wrap(item: Artifact | BaseModel) -> Artifact:
            if isinstance(item, Artifact):
                if wrapped.get(id(item)) is item:
                    return item  # already validated and stamped in this run
                model = runtime.registry.get(item.type)
                if model is None:
                    raise OutputError(
                        f"agent '{agent.name}' produced an artifact of unknown type '{item.type}'"
                    )
                payload: Any = item.payload
                base: Artifact | None = item
            elif isinstance(item, BaseModel):
                model, payload, base = type(item), item.model_dump(), None
            else:
                raise OutputError(
                    f"agent '{agent.name}': engines return Artifacts or model instances, got {item!r}"
                )
            try:
                artifact = runtime.build(
                    model,
                    payload,
                    produced_by=agent.name,
                    correlation_id=base.correlation_id if base else ctx.correlation_id,
                    partition_key=base.partition_key if base else None,
                    tags=base.tags if base else None,
                    visibility=base.visibility if base else None,
                    artifact_id=base.id if base else None,
                    fresh_correlation=False,
                )
            except InvalidPayloadError as exc:
                raise OutputError(f"agent '{agent.name}' produced an invalid output: {exc}") from exc
            wrapped[id(artifact)] = artifact
            return artifact

        return wrap

    def _outputs(
        self,
        agent: Agent,
        ctx: Context,
        inputs: list[Artifact],
        produced: Sequence[Artifact | BaseModel],
        wrap: lifecycle.Wrap,
    ) -> list[Artifact]:
        input_ids = {a.id.int for a in inputs}
        outputs: list[Artifact] = []
        for item in produced:
            if isinstance(item, Artifact) and item.id.int in input_ids:
                continue  # an engine passed its inputs through; they are already on the board
            artifact = wrap(item)  # utilities' post-evaluate results may still be bare models
            decl = agent.output_for(artifact.type)
            if decl is None:
                declared = ", ".join(d.type_name for d in agent.outputs) or "nothing"
                raise OutputError(f"agent '{agent.name}' produced '{artifact.type}' but publishes {declared}")
            if decl.visibility is not None:
                artifact = artifact.model_copy(
                    update={"visibility": decl.visibility.bind(artifact.created_at)}
                )
            if artifact.correlation_id is None:
                artifact = artifact.model_copy(update={"correlation_id": ctx.correlation_id})
            outputs.append(artifact)
        for decl in agent.outputs:
            if decl.count is not None:
                made = sum(1 for a in outputs if a.type == decl.type_name)
                if made != decl.count:
                    raise OutputError(
                        f"agent '{agent.name}' publishes {decl.count} '{decl.type_name}' per run"
                        f" but produced {made}"
                    )
        return outputs

    async def _hooks_on_error(self, agent: Agent, ctx: Context, error: BaseException) -> None:
        for component in lifecycle.hooks_of(agent, "on_error"):
            try:
                await component.on_error(agent, ctx, error)
            except Exception as hook_error:
                self.letters.failure(agent, "on_error", hook_error, ctx.attempt, None)

    async def _hooks_on_terminate(
        self, agent: Agent, ctx: Context, components: Sequence[AgentComponent]
    ) -> None:
        for component in components:
            try:
                await component.on_terminate(agent, ctx)
            except Exception as hook_error:
                self.letters.failure(agent, "on_terminate", hook_error, ctx.attempt, None)

    def held_leases(self) -> list[UUID]:
        """The deliveries whose lease this process holds for a run: running, or leased and
        waiting to start. A shared board's heartbeat renews these and no others."""
        return [UUID(int=key) for key in self._holding] + list(self.preleased)

    async def abandon(self, agent: Agent, delivery: Delivery, run: ReadyRun, why: str) -> None:
        """Keep a run that was cancelled mid-flight: the delivery is marked dead (fenced by the
        lease it held, if any) together with a dead letter that allows a retry. When the flock
        shuts down with ``release_interrupted`` on a durable board, the lease is released instead,
        so the next flock on the board runs the delivery again."""
        cause = RuntimeError(why)
        error = AgentRunError(agent.name, "cancelled", cause)
        error.__cause__ = cause
        # 0: cancelled while backing off, no lease held
        attempt = self._holding.pop(delivery.id.int, 0) or self.preleased.pop(delivery.id, 0)
        # StaleLeaseError: the run's completion was queued and committed first; nothing to keep.
        with contextlib.suppress(StaleLeaseError):
            await self._abandon(agent, delivery, run, error, attempt)

    async def _abandon(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, error: AgentRunError, attempt: int
    ) -> None:
        runtime = self._runtime
        if runtime.state.release_interrupted and runtime.store.durable and attempt:
            await runtime.store.release(delivery.id, attempt)
            self._collector.released += 1
            self._scheduler.resolve_direct(delivery.id, error=error)
            return
        await self.letters.dead_letter(agent, delivery, run, error, attempt, outputs_published=False)
        self._scheduler.resolve_direct(delivery.id, error=error)

    async def leave(self, agent: str, delivery: Delivery, run: ReadyRun) -> None:
        """A run the flock stopped before it started (see :meth:`DeadLetters.leave`). A lease it
        was given in advance is handed back first, so a durable board keeps it pending."""
        attempt = self.preleased.pop(delivery.id, None)
        if attempt is not None and self._runtime.store.durable:
            await self._runtime.store.release(delivery.id, attempt)
        await self.letters.leave(agent, delivery, run, attempt)


def _as_run_error(agent: Agent, error: Exception) -> AgentRunError:
    if isinstance(error, AgentRunError):
        return error
    wrapped = AgentRunError(agent.name, "evaluate", error)
    wrapped.__cause__ = error
    return wrapped
