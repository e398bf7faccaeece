"""What one Flock's collaborators share: its services and configuration, built first by the Flock.

The scheduler, the runner, the board session, direct runs, publishing and status snapshots receive
the :class:`Runtime` (never the Flock itself, so none of them imports the orchestrator): the store,
the tracer, the clock and ids, the declared agents, budgets and limits, plus building artifacts and
the agents' board views. Configuration is fixed when the flock is built; the few flags that change
over a flock's life are in its :class:`FlockState`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NoReturn, TypeVar, overload
from uuid import UUID

from pydantic import BaseModel

from flock_cli.clock import Clock, IdFactory
from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.board import BoardView
from flock_cli.core.envelope import build_artifact
from flock_cli.core.registry import TypeRegistry
from flock_cli.core.specs import Budget
from flock_cli.core.usage import UsageLedger
from flock_cli.core.visibility import Visibility
from flock_cli.errors import UnknownAgentError, UsageError
from flock_cli.store.contract import BlackboardStore
from flock_cli.tracing.tracer import RunScope, Tracer

__all__ = ["Fixed", "FlockState", "Runtime"]


@dataclass(slots=True)
class FlockState:
    """What changes over a flock's life and its collaborators read."""

    closed: bool = False
    """Set by ``shutdown``: no new work is taken, and timers that fire do nothing."""
    release_interrupted: bool = False
    """Set by ``shutdown(release_interrupted=True)``: cancelled runs hand their lease back."""
    run_scopes: list[RunScope] = field(default_factory=list)
    """The ``traced_run`` blocks open now, innermost last."""


@dataclass(frozen=True, slots=True, eq=False)
class Runtime:
    """The services and configuration of one Flock (see the module docstring).

    ``agents`` and ``budgeted`` are the flock's own tables: declaring an agent adds to them.
    """

    store: BlackboardStore
    tracer: Tracer
    clock: Clock
    new_id: IdFactory
    owner: str
    """This flock's name as a lease owner and in run records."""
    registry: TypeRegistry
    agents: dict[str, Agent]
    budgeted: dict[str, Agent]
    """Agents given a budget (checked before each run)."""
    budget: Budget | None
    rng: random.Random
    lease_ttl: float
    max_agent_iterations: int
    model: Any  # a model string or a flock_cli.Model
    tool_servers: Any = None  # the flock's MCP servers (flock_cli.mcp_tools.McpServers)
    max_concurrency: int | None = None
    role: Literal["orchestrator", "publisher"] = "orchestrator"
    state: FlockState = field(default_factory=FlockState)
    views: dict[str, BoardView] = field(default_factory=dict, repr=False)
    """The board view of each agent, made on first use (see :meth:`view`)."""

    @property
    def usage(self) -> UsageLedger:
        """What the agents' model calls used so far."""
        return self.tracer.usage

    def agent(self, name: str) -> Agent:
        """A declared agent by name (UnknownAgentError otherwise)."""
        try:
            return self.agents[name]
        except KeyError:
            raise UnknownAgentError(name, self.agents) from None

    def view(self, agent: Agent) -> BoardView:
        """``agent``'s read-only view of the board (made again when its identity changed)."""
        view = self.views.get(agent.name)
        identity = agent.identity
        if view is None or view.identity is not identity:
            view = self.views[agent.name] = BoardView(self.store, identity, self.clock)
        return view

    def build(
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
        """A validated artifact of ``model`` with this flock's ids and time (see ``build_artifact``)."""
        return build_artifact(
            self.registry.name_of(model),
            model,
            payload,
            new_id=self.new_id,
            artifact_id=artifact_id,
            fresh_correlation=fresh_correlation,
            now=self.clock.now(),
            produced_by=produced_by,
            correlation_id=correlation_id,
            partition_key=partition_key,
            tags=tags,
            visibility=visibility,
        )


T = TypeVar("T")


class Fixed(Generic[T]):
    """A Flock setting read from its :class:`Runtime`, fixed when the flock is built.

    Assigning to it later would change nothing the runtime does, so it is refused with a message
    that says where the setting goes (every accepted option is enforced).
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, flock: None, owner: type) -> Fixed[T]: ...

    @overload
    def __get__(self, flock: object, owner: type | None = None) -> T: ...

    def __get__(self, flock: object | None, owner: type | None = None) -> Fixed[T] | T:
        if flock is None:
            return self
        value: T = getattr(flock._runtime, self._name)  # type: ignore[attr-defined]
        return value

    def __set__(self, flock: object, value: T) -> NoReturn:
        raise UsageError(
            f"Flock.{self._name} is fixed when the flock is built: pass {self._name}= to Flock(...)"
        )
