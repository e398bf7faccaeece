"""Admission on a board many processes share: the circuit breaker and the budgets count what every
process did, on the board, instead of what this one did.

* **Circuit breaker**: runs of one agent within one workflow are counted in the board's counter
  ``breaker:<agent>:<correlation id>``, incremented atomically before each run (retries excluded),
  so ``max_agent_iterations`` bounds the runs of all processes together. Board counters are not
  reset by a summary: a workflow's count lives as long as the board.
* **Budgets**: what model calls used (tokens, cost, calls) is added to the counters
  ``usage:<tokens|cost|calls>:<agent NAME|flock>`` after each run. A run of a model-calling agent
  reserves one call first, atomically and only within the ``calls`` limit, so processes starting
  runs at the same moment cannot all slip under it (a reservation is turned into the calls the run
  made when it ends; a process killed mid-run leaves its one call counted). A budget covers the
  board's whole life, not one process's: ``calls: 10`` means 10 calls across all processes.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.core.admission import Admission
from flock_cli.core.usage import Usage

if TYPE_CHECKING:
    from flock_cli.core.agent import Agent
    from flock_cli.core.specs import Budget
    from flock_cli.core.subscription import ReadyRun
    from flock_cli.store.contract import Delivery
    from flock_cli.store.postgres_shared import SharedBoardMixin

__all__ = ["BoardAdmission"]

_FLOCK = "flock"


class BoardAdmission(Admission):
    """:class:`Admission` whose breaker and budgets count on the shared board."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pushed: dict[str, Usage] = {}  # per agent: usage already added to the board
        self._reserved: dict[UUID, list[str]] = {}  # delivery -> the scopes it reserved a call in

    @property
    def _board(self) -> SharedBoardMixin:
        return self._runtime.store  # type: ignore[return-value]  # shared stores only

    async def admit(
        self, agent: Agent, delivery: Delivery, run: ReadyRun, *, count_run: bool, model_run: bool
    ) -> Coroutine[Any, Any, None] | None:
        """None when ``run`` may start; else the coroutine that keeps it as a dead letter."""
        hidden = self.hidden(agent, delivery, run)
        if hidden is not None:
            return hidden
        board = self._board
        if count_run:
            workflow = run.artifacts[0].correlation_id if run.artifacts else None
            runs = await board.add_to_counter(f"breaker:{agent.name}:{workflow}", 1)
            if runs is not None and runs > self._runtime.max_agent_iterations:
                return self._hold_by_breaker(agent, delivery, run, workflow)
        exhausted = await self._board_budget(agent, delivery, model_run)
        if exhausted is not None:
            return self._hold_by_budget(agent, delivery, run, *exhausted)
        return None

    def _budgets(self, agent: Agent) -> list[tuple[str, str | None, Budget]]:
        runtime = self._runtime
        found: list[tuple[str, str | None, Budget]] = []
        if agent.budget is not None:
            found.append(("agent", agent.name, agent.budget))
        if runtime.budget is not None:
            found.append(("run", None, runtime.budget))
        for other in runtime.budgeted.values():
            if other is not agent and other.budget is not None and other.budget.on_exhausted == "stop":
                found.append(("agent", other.name, other.budget))
        return found

    async def _board_budget(
        self, agent: Agent, delivery: Delivery, model_run: bool
    ) -> tuple[str, str] | None:
        budgets = self._budgets(agent)
        if not budgets:
            return None
        board = self._board
        counters = await board.counters("usage:")
        for scope, owner, budget in budgets:
            key = _key(owner)
            reason = budget.exhausted_by(
                int(counters.get(f"usage:tokens:{key}", 0)),
                counters.get(f"usage:cost:{key}", 0.0),
                int(counters.get(f"usage:calls:{key}", 0)),
            )
            if reason is not None:
                return _described(scope, owner, reason)
        if not model_run:
            return None
        reserved: list[str] = []
        for scope, owner, budget in budgets:
            if budget.calls is None or (scope == "agent" and owner != agent.name):
                continue
            key = _key(owner)
            if await board.add_to_counter(f"usage:calls:{key}", 1, limit=budget.calls) is None:
                for taken in reserved:  # all or nothing
                    await board.add_to_counter(f"usage:calls:{taken}", -1)
                reason = f"{budget.calls} of {budget.calls} model calls made"
                return _described(scope, owner, reason)
            reserved.append(key)
        self._reserved[delivery.id] = reserved
        return None

    async def finished(self, agent: Agent, delivery: Delivery) -> None:
        """After a run: add what this process's runs of ``agent`` used since the last time to the
        board's counters (a reserved call becomes the calls actually made)."""
        reserved = self._reserved.pop(delivery.id, [])
        now = self._runtime.usage.of(agent.name)
        before = self._pushed.get(agent.name, Usage())
        self._pushed[agent.name] = Usage(now.input_tokens, now.output_tokens, now.cost, now.calls)
        tokens, cost, calls = now.tokens - before.tokens, now.cost - before.cost, now.calls - before.calls
        board = self._board
        keys = [_key(agent.name), _FLOCK] if self._budgets(agent) or tokens or calls else []
        for key in keys:
            if tokens:
                await board.add_to_counter(f"usage:tokens:{key}", tokens)
            if cost:
                await board.add_to_counter(f"usage:cost:{key}", cost)
            made = calls - (1 if key in reserved else 0)
            if made:
                await board.add_to_counter(f"usage:calls:{key}", made)


def _key(owner: str | None) -> str:
    return f"agent:{owner}" if owner is not None else _FLOCK


def _described(scope: str, owner: str | None, reason: str) -> tuple[str, str]:
    where = f"agent '{owner}'" if scope == "agent" else "the run"
    return scope, f"budget of {where} exhausted on the shared board: {reason}"
