"""Admission: whether a run may start, checked before it takes its lease.

The last line of defence of visibility (an agent never runs on an artifact it may not see), the
circuit breaker (runs of one agent within one workflow) and the budgets (model usage of an agent,
or of all agents together). A run refused here is kept as a dead letter (``denied``, ``breaker``,
``budget``) that ``retry_dead_letter`` can run later; nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.breaker import BreakerCounts
from flock_cli.core.dead_letters import DeadLetters
from flock_cli.core.subscription import ReadyRun
from flock_cli.core.summary import BreakerTrip, SummaryCollector
from flock_cli.store.contract import Delivery, denial

if TYPE_CHECKING:
    from flock_cli.core.runtime import Runtime

__all__ = ["Admission", "calls_models"]


class Admission:
    """Admits the runs of one Flock, or keeps them as dead letters."""

    def __init__(
        self,
        runtime: Runtime,
        iterations: BreakerCounts,
        collector: SummaryCollector,
        letters: DeadLetters,
        preleased: dict[UUID, int],
    ) -> None:
        self._runtime = runtime
        self._preleased = preleased  # leased from a shared board before admission (RunExecutor)
        self._iterations = iterations
        self._collector = collector
        self._letters = letters
        self.admitted: Counter[str] = Counter()  # model-calling runs past the budget check, not done
        self.budget_stop: tuple[str, str] | None = None  # set when a budget with on_exhausted="stop" ran out

    def check(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool
    ) -> Coroutine[Any, Any, None] | None:
        """None when ``run`` may start; else the coroutine that keeps it as a dead letter, which
        the caller awaits (the hold is only made for a run refused). ``count_run`` is False for
        retries: the circuit breaker counts runs, not attempts.
        """
        runtime = self._runtime
        refused = self.hidden(agent, delivery, run)
        if refused is not None:
            return refused
        if count_run:
            workflow = run.artifacts[0].correlation_id if run.artifacts else None
            if self._iterations.count(agent.name, workflow) > runtime.max_agent_iterations:
                return self._hold_by_breaker(agent, delivery, run, workflow)
        exhausted = self._budget_exhausted(agent)
        if exhausted is not None:
            return self._hold_by_budget(agent, delivery, run, *exhausted)
        return None

    def hidden(self, agent: Agent, delivery: Delivery, run: ReadyRun) -> Coroutine[Any, Any, None] | None:
        """The refusal of a run on artifacts ``agent`` may not see now, or None. The last line of
        defence: every path that hands over a delivery checks this."""
        now = self._runtime.clock.now()
        hidden = [a for a in run.artifacts if not a.visibility.allows(agent.identity, now=now)]
        return self._refuse(agent, delivery, run, hidden, now) if hidden else None

    async def admit(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool, model_run: bool
    ) -> Coroutine[Any, Any, None] | None:
        """:meth:`check`, as a coroutine (a shared board's admission asks the board)."""
        return self.check(agent, delivery, run, count_run=count_run)

    async def finished(self, agent: Agent, delivery: Delivery) -> None:
        """After a run that was admitted (a shared board's admission adds up its usage)."""

    def _held(self, delivery: Delivery) -> int | None:
        """The lease a refused delivery holds (leased from a shared board first), or None."""
        return self._preleased.pop(delivery.id, None)

    def _budget_exhausted(self, agent: Agent) -> tuple[str, str] | None:
        """(scope, reason) when a budget covering ``agent`` is used up, else None.

        A ``stop`` budget of any agent stops every agent. Runs of model-calling agents admitted
        and not finished count as one model call each against a ``calls`` limit, so runs started
        at the same moment cannot all slip under it.
        """
        runtime = self._runtime
        stopped = self.budget_stop
        if stopped is not None:
            return stopped
        if agent.budget is None and runtime.budget is None and not runtime.budgeted:
            return None  # no budget anywhere: nothing to add up
        usage = runtime.usage
        in_flight = self.admitted
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
                    self.budget_stop = found  # no run of any agent starts from now on
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
        await self._letters.hold(
            agent, delivery, run, "denied", f"'{agent.name}' may not see {shown}", self._held(delivery)
        )

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
        await self._letters.hold(agent, delivery, run, "budget", reason, self._held(delivery))

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
        await self._letters.hold(agent, delivery, run, "breaker", message, self._held(delivery))


def calls_models(agent: Agent) -> bool:
    """True when ``agent`` has an engine that calls a language model (asked every run)."""
    for engine in agent.engines:  # noqa: SIM110 - a loop, no generator
        if getattr(type(engine), "calls_models", False):
            return True
    return False
