"""Executing one delivery: stages 2 to 9 of an agent run, retries, dead letters and the breaker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pydantic import BaseModel

from flock_cli.core import lifecycle
from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.breaker import BreakerCounts
from flock_cli.core.context import Context
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import BreakerTrip, Failure, SummaryCollector
from flock_cli.errors import AgentRunError, InvalidPayloadError, OutputError
from flock_cli.store.contract import DeadLetter, DeadLetterReason, Delivery, StaleLeaseError, denial
from flock_cli.tracing.records import Span
from flock_cli.tracing.run_trace import RunTrace

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.timers import Embargo

__all__ = ["RunExecutor", "Scheduling"]


class Scheduling(Protocol):
    """What a run needs of the scheduler (:class:`~flock_cli.core.scheduler.Scheduler`): the
    summary being collected, the breaker's counts, the artifacts appended but not routed yet,
    routing the outputs, and settling a direct call's future."""

    collector: SummaryCollector
    iterations: BreakerCounts
    in_flight: set[UUID]
    budget_stop: tuple[str, str] | None
    """Set when a budget with ``on_exhausted="stop"`` ran out: no run of any agent starts."""

    async def route(self, artifacts: Sequence[Artifact], only: Sequence[Subscription] | None = None) -> None:
        """Offer artifacts to the subscriptions of their type and start the runs that became ready."""
        ...

    def resolve_direct(
        self, delivery_id: UUID, outputs: list[Artifact] | None = None, error: BaseException | None = None
    ) -> None:
        """Settle the future of a direct (``arun``) delivery, if there is one."""
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
        self._holding: dict[UUID, int] = {}  # delivery -> attempt, while this process holds its lease
        self._scheduler = scheduler
        self._collector = scheduler.collector
        self._admitted: Counter[str] = Counter()  # model-calling runs past the budget check, not done

    async def attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool
    ) -> float | None:
        """One attempt at a delivery. Returns the back-off delay when it should be retried.

        ``count_run`` is False for retries: the circuit breaker counts runs, not attempts.
        """
        runtime = self._runtime
        now = runtime.clock.now()
        hidden = [a for a in run.artifacts if not a.visibility.allows(agent.identity, now=now)]
        if hidden:  # the last line of defence: every path that hands over a delivery checks this
            await self._refuse(agent, delivery, run, hidden, now)
            return None
        if count_run:
            workflow = run.artifacts[0].correlation_id if run.artifacts else None
            if self._scheduler.iterations.count(agent.name, workflow) > runtime.max_agent_iterations:
                await self._hold_by_breaker(agent, delivery, run, workflow)
                return None
        exhausted = self._budget_exhausted(agent)
        if exhausted is not None:
            await self._hold_by_budget(agent, delivery, run, *exhausted)
            return None
        calls_models = _calls_models(runtime, agent.name)
        if calls_models:
            self._admitted[agent.name] += 1
        try:
            return await self._attempt_leased(agent, delivery, run)
        finally:
            if calls_models:
                self._admitted[agent.name] -= 1

    async def _attempt_leased(self, agent: Agent, delivery: Delivery, run: ReadyRun) -> float | None:
        runtime, store = self._runtime, self._runtime.store
        leased = await store.lease(delivery.id, runtime.owner, now=runtime.clock.now(), ttl=runtime.lease_ttl)
        if leased is None:
            return None  # someone else holds it, or it is finished
        attempt = leased.attempts
        self._holding[delivery.id] = attempt
        try:
            result = await self._leased_attempt(agent, delivery, run, attempt)
        except asyncio.CancelledError:
            raise  # keep the attempt: abandon() fences the lease this run still holds
        except BaseException:
            self._holding.pop(delivery.id, None)
            raise
        self._holding.pop(delivery.id, None)
        return result

    async def _leased_attempt(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, attempt: int
    ) -> float | None:
        """One leased attempt inside its ``agent.run`` span (which its stages and outputs join)."""
        tracer = self._runtime.tracer
        span = tracer.start_for(
            "agent.run",
            run.artifacts,
            agent=agent.name,
            attributes={
                "flock.attempt": attempt,
                "flock.delivery": str(delivery.id),
                "flock.subscription": run.subscription.index,
                "flock.trigger": delivery.trigger,
            },
        )
        span.inputs = tuple(a.id for a in run.artifacts)
        tracer.metrics.run_started(agent.name)
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
            tracer.metrics.run_finished(agent.name, outcome, (span.end_ns - span.start_ns) / 1e9)

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
        )
        self._collector.runs[agent.name] += 1
        try:
            try:
                wrap = self._wrapper(agent, ctx)
                result, failed_tries = await lifecycle.evaluate(agent, ctx, artifacts, run.groups, wrap)
                for error in failed_tries:
                    await self._hooks_on_error(agent, ctx, error)
                    self._failure(agent, "best_of", error, attempt, delivery)
                with lifecycle.staged(agent, "publish"):
                    outputs = self._outputs(agent, ctx, artifacts, result.artifacts, wrap)
                    self._scheduler.in_flight.update(o.id for o in outputs)
                    runtime.tracer.adopt(outputs, span)
                    started = time.time_ns()
                    try:
                        await store.complete(delivery.id, attempt, outputs)
                    except BaseException as exc:
                        self._scheduler.in_flight.difference_update(o.id for o in outputs)
                        runtime.tracer.record(
                            span, "store.complete", started, time.time_ns(), "error", str(exc)
                        )
                        raise
                    runtime.tracer.record(span, "store.complete", started, time.time_ns())
            except Exception as exc:
                await self._hooks_on_error(agent, ctx, exc)
                cause = _cause(exc)
                span.status, span.message = "error", f"{type(cause).__name__}: {cause}"
                if agent.retry_policy.should_retry(cause, attempt):
                    self._collector.retries += 1
                    delay = agent.retry_policy.delay(attempt, runtime.rng)
                    span.attributes["flock.outcome"] = "retry"
                    runtime.tracer.event(
                        "run.retry", agent=agent.name, attempt=attempt, delay_s=delay, error=span.message
                    )
                    await store.release(delivery.id, attempt)
                    return delay
                span.attributes["flock.outcome"] = "failed"
                await self._dead_letter(agent, delivery, run, exc, attempt, outputs_published=False)
                self._scheduler.resolve_direct(delivery.id, error=_as_run_error(agent, exc))
                return None
            self._collector.published += len(outputs)
            runtime.tracer.published(outputs, span)
            self._scheduler.resolve_direct(delivery.id, outputs=outputs)
            await self._scheduler.route(outputs)
            try:
                await lifecycle.post_publish(agent, ctx, outputs)
                await lifecycle.invoke_calls(agent, ctx, outputs)
            except Exception as exc:
                await self._hooks_on_error(agent, ctx, exc)
                span.status, span.message = "error", f"{type(_cause(exc)).__name__}: {_cause(exc)}"
                span.attributes["flock.outcome"] = "failed"
                await self._dead_letter(agent, delivery, run, exc, attempt, outputs_published=True)
        finally:
            await self._hooks_on_terminate(agent, ctx)
        return None

    def _wrapper(self, agent: Agent, ctx: Context) -> lifecycle.Wrap:
        """Turns engine and component outputs into validated artifacts stamped with this run."""
        runtime = self._runtime
        wrapped: set[UUID] = set()

        def wrap(item: Artifact | BaseModel) -> Artifact:
            if isinstance(item, Artifact):
                if item.id in wrapped:
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
            wrapped.add(artifact.id)
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
        input_ids = {a.id for a in inputs}
        outputs: list[Artifact] = []
        for item in produced:
            if isinstance(item, Artifact) and item.id in input_ids:
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
        for component in lifecycle.components_of(agent):
            try:
                await component.on_error(agent, ctx, error)
            except Exception as hook_error:
                self._failure(agent, "on_error", hook_error, ctx.attempt, None)

    async def _hooks_on_terminate(self, agent: Agent, ctx: Context) -> None:
        for component in lifecycle.components_of(agent):
            try:
                await component.on_terminate(agent, ctx)
            except Exception as hook_error:
                self._failure(agent, "on_terminate", hook_error, ctx.attempt, None)

    def _failure(
        self,
        agent: Agent,
        stage: str,
        error: BaseException,
        attempts: int,
        delivery: Delivery | None,
        *,
        outputs_published: bool = False,
    ) -> None:
        cause = _cause(error)
        self._collector.failures.append(
            Failure(
                agent=agent.name,
                error_type=type(cause).__name__,
                error=str(cause),
                stage=stage,
                attempts=attempts,
                artifact_ids=list(delivery.artifact_ids) if delivery else [],
                outputs_published=outputs_published,
                delivery_id=delivery.id if delivery else None,
            )
        )

    async def _keep(
        self,
        agent: str,
        artifact_ids: tuple[UUID, ...],
        reason: DeadLetterReason,
        subscription: Subscription,
        *,
        error: BaseException | None = None,
        message: str | None = None,
        stage: str | None = None,
        attempts: int = 0,
        outputs_published: bool = False,
        delivery_id: UUID | None = None,
        bury: bool = False,
        attempt: int | None = None,
    ) -> DeadLetter:
        """Keep a dead letter; with ``bury`` the delivery is marked dead in the same write."""
        cause = _cause(error) if error is not None else None
        letter = DeadLetter(
            id=self._runtime.new_id(),
            agent=agent,
            artifact_ids=artifact_ids,
            reason=reason,
            error_type=type(cause).__name__ if cause is not None else None,
            error=str(cause) if cause is not None else message,
            stage=stage,
            attempts=attempts,
            outputs_published=outputs_published,
            created_at=self._runtime.clock.now(),
            delivery_id=delivery_id,
            subscription=subscription.index,
        )
        if bury and delivery_id is not None:
            await self._runtime.store.bury(delivery_id, attempt, letter)
        else:
            await self._runtime.store.add_dead_letter(letter)
        self._collector.dead.append(letter)
        self._runtime.tracer.event(
            "dead_letter", agent=agent, artifact_id=artifact_ids[0] if artifact_ids else None,
            reason=reason, error=letter.error, stage=stage, letter=str(letter.id),
        )  # fmt: skip
        return letter

    async def _dead_letter(
        self,
        agent: Agent,
        delivery: Delivery,
        run: ReadyRun,
        error: Exception,
        attempts: int,
        *,
        outputs_published: bool,
    ) -> None:
        """Keep a failed run as a dead letter and report it. Unless its outputs were published,
        the delivery is buried with it, fenced by the lease of attempt ``attempts`` (0: the
        delivery holds no lease)."""
        stage = error.stage if isinstance(error, AgentRunError) else "evaluate"
        await self._keep(
            agent.name,
            delivery.artifact_ids,
            "failed",
            run.subscription,
            error=error,
            stage=stage,
            attempts=attempts,
            outputs_published=outputs_published,
            delivery_id=delivery.id,
            bury=not outputs_published,  # after a commit the delivery is done, not dead
            attempt=attempts or None,
        )
        self._failure(agent, stage, error, attempts, delivery, outputs_published=outputs_published)

    def _budget_exhausted(self, agent: Agent) -> tuple[str, str] | None:
        """(scope, reason) when a budget covering ``agent`` is used up, else None.

        A ``stop`` budget of any agent stops every agent. Runs of model-calling agents admitted
        and not finished count as one model call each against a ``calls`` limit, so runs started
        at the same moment cannot all slip under it.
        """
        runtime = self._runtime
        stopped = self._scheduler.budget_stop
        if stopped is not None:
            return stopped
        usage = runtime.usage
        in_flight = self._admitted
        checks = [
            ("agent", agent.name, agent.budget, usage.of(agent.name), in_flight.get(agent.name, 0)),
            ("run", None, runtime.budget, usage.total, sum(in_flight.values())),
        ]
        for other in runtime.budgeted.values():  # not every agent: a run must not cost O(agents)
            if other is not agent and other.budget is not None and other.budget.on_exhausted == "stop":
                checks.append(("agent", other.name, other.budget, usage.of(other.name), 0))
        for scope, owner, budget, used, pending in checks:
            if budget is None:
                continue
            reason = budget.exhausted_by(used.tokens, used.cost, used.calls + max(0, pending))
            if reason is not None:
                where = f"agent '{owner}'" if scope == "agent" else "the run"
                found = (scope, f"budget of {where} exhausted: {reason}")
                if budget.on_exhausted == "stop":
                    self._scheduler.budget_stop = found  # no run of any agent starts from now on
                return found
        return None

    async def _refuse(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, hidden: list[Artifact], now: datetime
    ) -> None:
        """Never run ``agent`` on artifacts it may not see: record the denials and keep the
        delivery as a ``denied`` dead letter (nothing is lost, nothing leaks)."""
        denials = [denial(a, agent.identity, now, "schedule") for a in hidden]
        await self._runtime.store.record_denials(denials)
        self._collector.denials += len(denials)
        for artifact in hidden:
            self._runtime.tracer.event(
                "visibility.denied", agent=agent.name, artifact_id=artifact.id,
                visibility=artifact.visibility.describe(), embargoed_until=None,
            )  # fmt: skip
        shown = ", ".join(f"{a.id} ({a.visibility.describe()})" for a in hidden)
        await self._hold(agent, delivery, run, "denied", f"'{agent.name}' may not see {shown}")

    async def _hold_by_budget(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, scope: str, reason: str
    ) -> None:
        from flock_cli.core.summary import BudgetHold

        holds = self._collector.budget_holds
        hold = holds.get((agent.name, scope))
        if hold is None:
            hold = holds[(agent.name, scope)] = BudgetHold(agent=agent.name, scope=scope, reason=reason)
            self._runtime.tracer.event("budget.exhausted", agent=agent.name, scope=scope, reason=reason)
        hold.held += 1
        await self._hold(agent, delivery, run, "budget", reason)

    async def _hold_by_breaker(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, workflow: UUID | None
    ) -> None:
        runtime = self._runtime
        trip = self._collector.trips.setdefault(
            agent.name, BreakerTrip(agent=agent.name, limit=runtime.max_agent_iterations)
        )
        trip.held += 1
        if workflow not in trip.correlation_ids:
            trip.correlation_ids.append(workflow)
            runtime.tracer.event(
                "breaker.trip", agent=agent.name, limit=runtime.max_agent_iterations,
                correlation_id=str(workflow) if workflow else None,
            )  # fmt: skip
        message = (
            f"circuit breaker open: over {runtime.max_agent_iterations} runs of '{agent.name}'"
            f" in workflow {workflow}"
        )
        await self._hold(agent, delivery, run, "breaker", message)

    async def _hold(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, reason: DeadLetterReason, message: str
    ) -> None:
        """Keep a delivery stopped before its lease (breaker, budget) as a dead letter that a
        retry can run later, and fail a direct call waiting on it."""
        await self._keep(
            agent.name, delivery.artifact_ids, reason, run.subscription, message=message,
            delivery_id=delivery.id, bury=True,  # still pending: held before any lease
        )  # fmt: skip
        self._scheduler.resolve_direct(
            delivery.id, error=AgentRunError(agent.name, reason, RuntimeError(message))
        )

    async def abandon(self, agent: Agent, delivery: Delivery, run: ReadyRun, why: str) -> None:
        """Keep a run that was cancelled mid-flight: the delivery is marked dead (fenced by the
        lease it held, if any) together with a dead letter that allows a retry. When the flock
        shuts down with ``release_interrupted`` on a durable board, the lease is released instead,
        so the next flock on the board runs the delivery again."""
        cause = RuntimeError(why)
        error = AgentRunError(agent.name, "cancelled", cause)
        error.__cause__ = cause
        attempt = self._holding.pop(delivery.id, 0)  # 0: cancelled while backing off, no lease held
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
        await self._dead_letter(agent, delivery, run, error, attempt, outputs_published=False)
        self._scheduler.resolve_direct(delivery.id, error=error)

    async def leave(self, agent: str, delivery: Delivery, run: ReadyRun) -> None:
        """A run the flock stopped before it started: a durable board keeps its delivery pending
        for the next flock; otherwise it becomes a dead letter (``reason="stopped"``) that
        ``retry_dead_letter`` can run."""
        self._collector.not_started += 1
        message = "not started: the flock stopped before this run's turn"
        if not self._runtime.store.durable:
            await self._keep(
                agent, delivery.artifact_ids, "stopped", run.subscription, message=message,
                delivery_id=delivery.id, bury=True,
            )  # fmt: skip
        self._scheduler.resolve_direct(
            delivery.id, error=AgentRunError(agent, "stopped", RuntimeError(message))
        )

    async def keep_embargoed(self, embargo: Embargo) -> None:
        """At shutdown: keep a delivery that was still waiting for its embargo (for an exclusive
        group, one letter for the group, which ``retry_dead_letter`` offers to its members)."""
        await self._keep(
            embargo.claim,
            (embargo.artifact.id,),
            "embargoed",
            embargo.subscriptions[0],
            message=f"embargoed until {embargo.lifts_at.isoformat()} when the flock shut down",
        )


def _cause(error: BaseException) -> BaseException:
    if isinstance(error, AgentRunError) and error.__cause__ is not None:
        return error.__cause__
    return error


def _as_run_error(agent: Agent, error: Exception) -> AgentRunError:
    if isinstance(error, AgentRunError):
        return error
    wrapped = AgentRunError(agent.name, "evaluate", error)
    wrapped.__cause__ = error
    return wrapped


def _calls_models(runtime: Runtime, agent: str) -> bool:
    """True when ``agent`` has an engine that calls a language model."""
    declared = runtime.agents.get(agent)
    return declared is not None and any(getattr(type(e), "calls_models", False) for e in declared.engines)
