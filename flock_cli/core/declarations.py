"""Where an agent's declaration lands: the :class:`~flock_cli.core.builder.AgentHost` of a Flock.

A new agent's name is checked and taken; the type registry names the types it consumes and
publishes, the router indexes its subscriptions, the dispatcher enforces its concurrency limit,
and agents with a budget are kept apart so the runner checks them without scanning every agent.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from flock_cli.core.agent import Agent
from flock_cli.core.dispatcher import Dispatcher
from flock_cli.core.registry import TypeRegistry
from flock_cli.core.router import Router
from flock_cli.core.subscription import Subscription
from flock_cli.errors import DuplicateAgentError, InvalidDeclarationError

__all__ = ["Declarations"]

_AGENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_RESERVED = frozenset({"external"})


class Declarations:
    """The flock's side of its agents' builders (implements ``AgentHost``)."""

    def __init__(
        self,
        agents: dict[str, Agent],
        registry: TypeRegistry,
        router: Router,
        dispatcher: Dispatcher,
        budgeted: dict[str, Agent],
    ) -> None:
        self._agents = agents
        self._registry = registry
        self._router = router
        self._dispatcher = dispatcher
        self._budgeted = budgeted

    def declare(self, name: str) -> Agent:
        """A new agent named ``name``, added to the flock (see ``Flock.agent`` for the rules)."""
        if not isinstance(name, str) or not _AGENT_NAME.match(name):
            raise InvalidDeclarationError(
                f"Invalid agent name {name!r}: start with a letter, then letters, digits, '_', '.' or '-'"
            )
        if name in _RESERVED:
            raise InvalidDeclarationError(f"'{name}' is reserved for artifacts published from outside")
        if name in self._agents:
            raise DuplicateAgentError(f"An agent named '{name}' already exists in this flock.")
        agent = Agent(name=name)
        self._agents[name] = agent
        return agent

    def resolve_model(self, t: type[BaseModel] | str) -> type[BaseModel]:
        """The model ``t`` names: a registered type name, or the model class itself."""
        return self._registry.resolve(t) if isinstance(t, str) else t

    def type_name(self, model: type[BaseModel]) -> str:
        """The name ``model`` is registered under (registering it on first use)."""
        return self._registry.name_of(model)

    def add_subscription(self, agent: Agent, sub: Subscription) -> None:
        """Index ``sub`` for routing and add it to ``agent``."""
        self._router.add(sub)
        agent.subscriptions.append(sub)

    def set_agent_limit(self, agent: str, limit: int | None) -> None:
        """At most ``limit`` concurrent runs of ``agent``."""
        self._dispatcher.set_agent_limit(agent, limit)

    def add_budgeted(self, agent: Agent) -> None:
        """Keep ``agent`` among those with a budget, which are checked before runs."""
        self._budgeted[agent.name] = agent
