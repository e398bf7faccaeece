"""Dead letters: what cannot run, or failed for good, kept so that nothing is lost.

A failed run, a run held before its lease (visibility, circuit breaker, budget), a run the flock
stopped before it started, and a delivery still waiting for an embargo at shutdown each become a
:class:`~flock_cli.store.records.DeadLetter` that ``retry_dead_letter`` can run later. Failures are
reported in the run summary too, and a direct call waiting on the delivery is failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import Failure, SummaryCollector
from flock_cli.errors import AgentRunError
from flock_cli.store.contract import DeadLetter, DeadLetterReason, Delivery

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime
    from flock_cli.core.timers import Embargo

__all__ = ["DeadLetters", "DirectCalls", "cause_of"]


class DirectCalls(Protocol):
    """Settling the futures of direct (``arun``) deliveries (the scheduler keeps them)."""

    def resolve_direct(
        self, delivery_id: UUID, outputs: list[Artifact] | None = None, error: BaseException | None = None
    ) -> None:
        """Settle the future of a direct delivery, if there is one."""
        ...


class DeadLetters:
    """Keeps dead letters and reports failures for one Flock."""

    def __init__(self, runtime: Runtime, collector: SummaryCollector, scheduler: DirectCalls) -> None:
        self._runtime = runtime
        self._collector = collector
        self._scheduler = scheduler

    def failure(
        self,
        agent: Agent,
        stage: str,
        error: BaseException,
        attempts: int,
        delivery: Delivery | None,
        *,
        outputs_published: bool = False,
    ) -> None:
        cause = cause_of(error)
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
        cause = cause_of(error) if error is not None else None
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
            artifacts=[str(i) for i in artifact_ids],
        )  # fmt: skip
        return letter

    async def dead_letter(
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
        self.failure(agent, stage, error, attempts, delivery, outputs_published=outputs_published)

    async def hold(
        self,
        agent: Agent,
        delivery: Delivery,
        run: ReadyRun,
        reason: DeadLetterReason,
        message: str,
        attempt: int | None = None,
    ) -> None:
        """Keep a delivery stopped before its run (breaker, budget) as a dead letter that a
        retry can run later, and fail a direct call waiting on it. ``attempt`` is the lease held
        when the delivery was leased from a shared board first, else None (still pending)."""
        await self._keep(
            agent.name, delivery.artifact_ids, reason, run.subscription, message=message,
            delivery_id=delivery.id, bury=True, attempt=attempt,
        )  # fmt: skip
        self._scheduler.resolve_direct(
            delivery.id, error=AgentRunError(agent.name, reason, RuntimeError(message))
        )

    async def leave(self, agent: str, delivery: Delivery, run: ReadyRun, attempt: int | None = None) -> None:
        """A run the flock stopped before it started: a durable board keeps its delivery pending
        for the next flock; otherwise it becomes a dead letter (``reason="stopped"``) that
        ``retry_dead_letter`` can run. ``attempt`` is the lease the delivery holds, if any."""
        self._collector.not_started += 1
        message = "not started: the flock stopped before this run's turn"
        if not self._runtime.store.durable:
            await self._keep(
                agent, delivery.artifact_ids, "stopped", run.subscription, message=message,
                delivery_id=delivery.id, bury=True, attempt=attempt,
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


def cause_of(error: BaseException) -> BaseException:
    """What a failure is reported as: the engine's exception inside an AgentRunError, else ``error``."""
    if isinstance(error, AgentRunError) and error.__cause__ is not None:
        return error.__cause__
    return error
