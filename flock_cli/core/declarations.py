"""Where an agent's declaration lands: the :class:`~flock_cli.core.builder.AgentHost` of a Flock.

The type registry names the types an agent consumes and publishes, the router indexes its
subscriptions, the dispatcher enforces its concurrency limit, and agents with a budget are kept
apart so the runner checks them without scanning every agent.
"""

from __future__ import annotations

from pydantic import BaseModel

from flock_cli.core.agent import Agent
from flock_cli.core.dispatcher import Dispatcher
from flock_cli.core.registry import TypeRegistry
from flock_cli.core.router import Router
from flock_cli.core.subscription import Subscription

__all__ = ["Declarations"]


class Declarations:
    """The flock's side of its agents' builders (implements ``AgentHost``)."""

    def __init__(
        self, registry: TypeRegistry, router: Router, dispatcher: Dispatcher, budgeted: dict[str, Agent]
    ) -> None:
        self._registry = registry
        self._router = router
        self._dispatcher = dispatcher
        self._budgeted = budgeted

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
