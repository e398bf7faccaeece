"""Executing one delivery: stages 2 to 9 of an agent run, retries, dead letters and the breaker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flock_cli.core import lifecycle
from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.components import Context
from flock_cli.core.subscription import ReadyRun
from flock_cli.core.summary import BreakerTrip, Failure
from flock_cli.errors import AgentRunError, InvalidPayloadError, OutputError
from flock_cli.store.contract import DeadLetter, Delivery

if TYPE_CHECKING:
    from flock_cli.core.orchestrator import Flock

__all__ = ["RunExecutor"]


class RunExecutor:
    """Runs deliveries for one Flock: lease, lifecycle, atomic commit of outputs, failure handling.

    An attempt either commits its outputs together with the delivery's completion, or releases the
    lease for a retry (returning the back-off delay), or marks the delivery dead and keeps a dead
    letter. Failures after the commit (post-publish hooks, ``calls``) are reported and dead-lettered
    with ``outputs_published=True`` but never retried, since retrying would publish twice.
    """

    def __init__(self, flock: Flock) -> None:
        self._flock = flock

    async def attempt(self, agent: Agent, delivery: Delivery, run: ReadyRun) -> float | None:
        """One attempt at a delivery. Returns the back-off delay when it should be retried."""
        self._flock._iterations[agent.name] += 1
        if self._flock._iterations[agent.name] > self._flock.max_agent_iterations:
            await self._hold_by_breaker(agent, delivery, run)
            return None
        leased = await self._flock.store.lease(
            delivery.id, self._flock._owner, now=self._flock.clock.now(), ttl=self._flock._lease_ttl
        )
        if leased is None:
            return None
        attempt = leased.attempts
        artifacts = list(run.artifacts)
        ctx = Context(
            agent=agent.name,
            identity=agent.identity,
            board=self._flock._view(agent),
            task_id=f"{delivery.id}:{attempt}",
            correlation_id=artifacts[0].correlation_id if artifacts else None,
            attempt=attempt,
            is_batch=run.subscription.batch is not None,
            batch_trigger=run.batch_trigger,  # type: ignore[arg-type]
            trigger="direct" if delivery.trigger == "direct" else "event",
        )
        self._flock._collector.runs[agent.name] += 1
        try:
            try:
                result = await lifecycle.evaluate(
                    agent, ctx, artifacts, run.groups, self._wrapper(agent, ctx)
                )
                with lifecycle.staged(agent, "publish"):
                    outputs = self._outputs(agent, ctx, artifacts, result.artifacts)
                    await self._flock.store.complete(delivery.id, attempt, outputs)
            except Exception as exc:
                await self._hooks_on_error(agent, ctx, exc)
                cause = exc.__cause__ if isinstance(exc, AgentRunError) and exc.__cause__ else exc
                if agent.retry_policy.should_retry(cause, attempt):
                    self._flock._collector.retries += 1
                    await self._flock.store.release(delivery.id, attempt)
                    return agent.retry_policy.delay(attempt, self._flock._rng)
                await self._flock.store.release(delivery.id, attempt, dead=True)
                await self._dead_letter(agent, delivery, run, exc, attempt, outputs_published=False)
                return None
            published = outputs
            self._flock._collector.published += len(published)
            if delivery.id in self._flock._direct:
                self._flock._direct[delivery.id] = published
            await self._flock._route(published)
            try:
                await lifecycle.post_publish(agent, ctx, published)
                await lifecycle.invoke_calls(agent, published)
            except Exception as exc:
                await self._hooks_on_error(agent, ctx, exc)
                await self._dead_letter(agent, delivery, run, exc, attempt, outputs_published=True)
        finally:
            await self._hooks_on_terminate(agent, ctx)
        return None

    def _wrapper(self, agent: Agent, ctx: Context) -> lifecycle.Wrap:
        def wrap(item: Artifact | BaseModel) -> Artifact:
            if isinstance(item, Artifact):
                model = self._flock.registry.get(item.type)
                if model is None:
                    raise OutputError(
                        f"agent '{agent.name}' produced an artifact of unknown type '{item.type}'"
                    )
                payload: Any = item.payload
                base = item
            elif isinstance(item, BaseModel):
                model, payload, base = type(item), item.model_dump(), None
            else:
                raise OutputError(
                    f"agent '{agent.name}': engines return Artifacts or model instances, got {item!r}"
                )
            try:
                return self._flock._build(
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

        return wrap

    def _outputs(
        self, agent: Agent, ctx: Context, inputs: list[Artifact], produced: Sequence[Any]
    ) -> list[Artifact]:
        input_ids = {a.id for a in inputs}
        outputs: list[Artifact] = []
        for artifact in produced:
            if artifact.id in input_ids:
                continue  # an engine passed its inputs through; they are already on the board
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
        return outputs

    async def _hooks_on_error(self, agent: Agent, ctx: Context, error: BaseException) -> None:
        for component in lifecycle.components_of(agent):
            try:
                await component.on_error(agent, ctx, error)
            except Exception as hook_error:
                self._hook_failure(agent, ctx, "on_error", hook_error)

    async def _hooks_on_terminate(self, agent: Agent, ctx: Context) -> None:
        for component in lifecycle.components_of(agent):
            try:
                await component.on_terminate(agent, ctx)
            except Exception as hook_error:
                self._hook_failure(agent, ctx, "on_terminate", hook_error)

    def _hook_failure(self, agent: Agent, ctx: Context, stage: str, error: Exception) -> None:
        self._flock._collector.failures.append(
            Failure(
                agent=agent.name,
                error_type=type(error).__name__,
                error=str(error),
                stage=stage,
                attempts=ctx.attempt,
                artifact_ids=[],
            )
        )

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
        cause = error.__cause__ if isinstance(error, AgentRunError) and error.__cause__ else error
        stage = error.stage if isinstance(error, AgentRunError) else "evaluate"
        letter = DeadLetter(
            id=self._flock._new_id(),
            agent=agent.name,
            artifact_ids=delivery.artifact_ids,
            reason="failed",
            error_type=type(cause).__name__,
            error=str(cause),
            stage=stage,
            attempts=attempts,
            outputs_published=outputs_published,
            created_at=self._flock.clock.now(),
            delivery_id=delivery.id,
            subscription=run.subscription.index,
        )
        await self._flock.store.add_dead_letter(letter)
        self._flock._collector.dead.append(letter)
        self._flock._collector.failures.append(
            Failure(
                agent=agent.name,
                error_type=letter.error_type or "",
                error=letter.error or "",
                stage=stage,
                attempts=attempts,
                artifact_ids=list(delivery.artifact_ids),
                outputs_published=outputs_published,
                delivery_id=delivery.id,
            )
        )

    async def _hold_by_breaker(self, agent: Agent, delivery: Delivery, run: ReadyRun) -> None:
        trip = self._flock._collector.trips.setdefault(
            agent.name, BreakerTrip(agent=agent.name, limit=self._flock.max_agent_iterations)
        )
        trip.held += 1
        letter = DeadLetter(
            id=self._flock._new_id(),
            agent=agent.name,
            artifact_ids=delivery.artifact_ids,
            reason="breaker",
            error=f"circuit breaker open: over {self._flock.max_agent_iterations} runs of '{agent.name}'",
            created_at=self._flock.clock.now(),
            delivery_id=delivery.id,
            subscription=run.subscription.index,
        )
        leased = await self._flock.store.lease(
            delivery.id, self._flock._owner, now=self._flock.clock.now(), ttl=self._flock._lease_ttl
        )
        if leased is not None:
            await self._flock.store.release(delivery.id, leased.attempts, dead=True)
        await self._flock.store.add_dead_letter(letter)
        self._flock._collector.dead.append(letter)
