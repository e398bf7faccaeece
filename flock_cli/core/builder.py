"""The fluent API that declares an agent: ``flock.agent("x").consumes(A).publishes(B)``.

A builder fills in an :class:`~flock_cli.core.agent.Agent` and hands what the flock must know (the
types it names, its subscriptions, its concurrency limit, its budget) to an :class:`AgentHost`,
which the :class:`~flock_cli.Flock` provides; the builder never sees the Flock itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from flock_cli.core.agent import Agent, AgentComponent, EngineComponent, OutputDecl
from flock_cli.core.context import EvalResult
from flock_cli.core.specs import BatchSpec, Budget, JoinSpec, RetryPolicy, coerce_spec
from flock_cli.core.subscription import Predicate, Subscription
from flock_cli.core.visibility import PrivateVisibility, Visibility
from flock_cli.errors import InvalidDeclarationError

__all__ = ["AgentBuilder", "AgentHost"]


class AgentHost(Protocol):
    """Where a builder's declarations land: the flock's types, routing, limits and budgets."""

    def resolve_model(self, t: type[BaseModel] | str) -> type[BaseModel]:
        """The model ``t`` names: a registered type name, or the model class itself."""
        ...

    def type_name(self, model: type[BaseModel]) -> str:
        """The name ``model`` is registered under (registering it on first use)."""
        ...

    def add_subscription(self, agent: Agent, sub: Subscription) -> None:
        """Index ``sub`` for routing and add it to ``agent``."""
        ...

    def set_agent_limit(self, agent: str, limit: int | None) -> None:
        """At most ``limit`` concurrent runs of ``agent``."""
        ...

    def add_budgeted(self, agent: Agent) -> None:
        """Keep ``agent`` among those with a budget, which are checked before runs."""
        ...


class AgentBuilder:
    """Fluent declaration of an agent: ``flock.agent("x").consumes(A).publishes(B)``.

    Every method validates its arguments at once and returns the builder.
    """

    def __init__(self, host: AgentHost, agent: Agent) -> None:
        self._host = host
        self.agent = agent
        self._last_outputs: list[OutputDecl] = []

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.agent.name

    def __repr__(self) -> str:
        return f"AgentBuilder({self.agent.name!r})"

    def description(self, text: str) -> AgentBuilder:
        """What the agent does (becomes the LLM instructions)."""
        self.agent.description = text
        return self

    def consumes(
        self,
        *types: type[BaseModel] | str,
        where: Predicate | Sequence[Predicate] | None = None,
        text: str | None = None,
        min_p: float = 0.0,
        from_agents: Iterable[str] | str | None = None,
        channels: Iterable[str] | str | None = None,
        join: dict[str, Any] | JoinSpec | None = None,
        batch: dict[str, Any] | BatchSpec | None = None,
        delivery: str = "exclusive",
        group: str | None = None,
        mode: str = "both",
        priority: int = 0,
    ) -> AgentBuilder:
        """Subscribe to artifacts. Several types in one call form an AND gate; repeating a type
        forms a count gate; calling ``consumes`` again adds an alternative (OR).

        ``delivery="exclusive"`` (the default) means each artifact is processed once per
        exclusive ``group``; the group defaults to the agent's own name, so different agents all
        get the artifact while agents sharing a group compete for it. ``delivery="shared"`` skips
        the claim entirely.
        """
        if not types:
            raise InvalidDeclarationError(f"agent '{self.name}': consumes() needs at least one type")
        if text is not None or min_p:
            raise InvalidDeclarationError(
                f"agent '{self.name}': semantic text filters (text=, min_p=) need an embedding"
                " backend, which Flock-Flow does not ship yet; use where= predicates instead."
            )
        if mode not in ("events", "direct", "both"):
            raise InvalidDeclarationError(
                f"agent '{self.name}': mode must be 'events', 'direct' or 'both', got {mode!r}"
            )
        if delivery not in ("shared", "exclusive"):
            raise InvalidDeclarationError(
                f"agent '{self.name}': delivery must be 'shared' or 'exclusive', got {delivery!r}"
            )
        if group is not None and delivery != "exclusive":
            raise InvalidDeclarationError(f"agent '{self.name}': group= only applies to delivery='exclusive'")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidDeclarationError(f"agent '{self.name}': priority must be an int")
        predicates = _predicates(self.name, where)
        models: dict[str, type[BaseModel]] = {}
        names: list[str] = []
        for t in types:
            model = self._host.resolve_model(t)
            name = self._host.type_name(model)
            models[name] = model
            names.append(name)
        join_spec = coerce_spec(JoinSpec, join, "join")
        if join_spec is not None and len(types) < 2:
            raise InvalidDeclarationError(
                f"agent '{self.name}': join= correlates several artifacts; consume at least two types"
                " (or one type twice for a count gate)"
            )
        batch_spec = coerce_spec(BatchSpec, batch, "batch")
        subscription = Subscription(
            agent=self.name,
            index=len(self.agent.subscriptions),
            type_names=tuple(names),
            models=models,
            where=predicates,
            from_agents=_names(from_agents),
            channels=_names(channels),
            join=join_spec,
            batch=batch_spec,
            delivery=delivery,  # type: ignore[arg-type]
            group=(group or self.name) if delivery == "exclusive" else None,
            mode=mode,  # type: ignore[arg-type]
            priority=priority,
        )
        self._host.add_subscription(self.agent, subscription)
        return self

    def publishes(
        self,
        *types: type[BaseModel] | str,
        visibility: Visibility | None = None,
        count: int | None = None,
    ) -> AgentBuilder:
        """Declare output types; ``visibility`` applies to every artifact of these types.

        ``count`` fixes how many artifacts of each of these types one run publishes: generating
        engines (the test engine) produce that many, and a run that publishes another number
        fails with :class:`~flock_cli.errors.OutputError`. None (the default) allows any number.
        """
        if not types:
            raise InvalidDeclarationError(f"agent '{self.name}': publishes() needs at least one type")
        if visibility is not None and not isinstance(visibility, Visibility):
            raise InvalidDeclarationError(f"agent '{self.name}': visibility must be a Visibility")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise InvalidDeclarationError(f"agent '{self.name}': count must be None or an int >= 0")
        self._last_outputs = []
        for t in types:
            model = self._host.resolve_model(t)
            name = self._host.type_name(model)
            decl = self.agent.output_for(name)
            if decl is None:
                decl = OutputDecl(name, model, visibility, count)
                self.agent.outputs.append(decl)
            else:
                decl.visibility = visibility
                decl.count = count
            self._last_outputs.append(decl)
        return self

    def only_for(self, *agent_names: str) -> AgentBuilder:
        """Make the outputs of the preceding ``publishes`` call private to the named agents."""
        if not self._last_outputs:
            raise InvalidDeclarationError(f"agent '{self.name}': only_for() must follow publishes()")
        if not agent_names:
            raise InvalidDeclarationError(f"agent '{self.name}': only_for() needs at least one agent name")
        for decl in self._last_outputs:
            decl.visibility = PrivateVisibility(agents=frozenset(agent_names))
        return self

    def with_utilities(self, *components: AgentComponent) -> AgentBuilder:
        """Add utility components (sorted by priority, lower first)."""
        for c in components:
            if not isinstance(c, AgentComponent) or isinstance(c, EngineComponent):
                raise InvalidDeclarationError(
                    f"agent '{self.name}': with_utilities() takes AgentComponent instances"
                    f" (engines go to with_engines()), got {c!r}"
                )
        self.agent.utilities = sorted([*self.agent.utilities, *components], key=lambda c: c.priority)
        return self

    def with_engines(self, *engines: EngineComponent) -> AgentBuilder:
        """Set the engine chain; engines run in the given order, state flowing from one to the next."""
        if not engines:
            raise InvalidDeclarationError(f"agent '{self.name}': with_engines() needs at least one engine")
        for e in engines:
            if not isinstance(e, EngineComponent):
                raise InvalidDeclarationError(
                    f"agent '{self.name}': with_engines() takes EngineComponent instances, got {e!r}"
                )
        self.agent.engines = list(engines)
        return self

    def best_of(self, n: int, score: Callable[[EvalResult], float]) -> AgentBuilder:
        """Run the engine chain ``n`` times concurrently and keep the result with the best score."""
        if not isinstance(n, int) or n < 1:
            raise InvalidDeclarationError(f"agent '{self.name}': best_of n must be an int >= 1")
        if not callable(score):
            raise InvalidDeclarationError(f"agent '{self.name}': best_of score must be callable")
        self.agent.best_of_n, self.agent.best_of_score = n, score
        return self

    def max_concurrency(self, n: int) -> AgentBuilder:
        """At most ``n`` runs of this agent at once (default: unlimited, bounded by the flock's limit)."""
        if not isinstance(n, int) or n < 1:
            raise InvalidDeclarationError(f"agent '{self.name}': max_concurrency must be an int >= 1")
        self.agent.max_concurrency = n
        self._host.set_agent_limit(self.name, n)
        return self

    def budget(self, budget: Budget | dict[str, Any]) -> AgentBuilder:
        """Limit this agent's model usage (tokens, cost, calls); see :class:`Budget`."""
        self.agent.budget = coerce_spec(Budget, budget, "budget")
        self._host.add_budgeted(self.agent)
        return self

    def calls(self, func: Callable[..., Any | Awaitable[Any]]) -> AgentBuilder:
        """Call ``func`` with each published output (typed) as the run's final side effect."""
        if not callable(func):
            raise InvalidDeclarationError(f"agent '{self.name}': calls() needs a callable")
        self.agent.calls_func = func
        return self

    def with_tools(self, funcs: Iterable[Callable[..., Any] | str]) -> AgentBuilder:
        """Tools the agent's engines may call (the DSPy engine uses them through ReAct): Python
        callables, and MCP tools by name, ``"server.tool"`` or ``"server.*"`` (a server declared
        with ``Flock.mcp_server``; the name is checked when the agent first runs)."""
        funcs = list(funcs)
        for f in funcs:
            if isinstance(f, str):
                server, dot, tool = f.partition(".")
                if not (server and dot and tool):
                    raise InvalidDeclarationError(
                        f"agent '{self.name}': an MCP tool is named 'server.tool' or 'server.*', got {f!r}"
                    )
            elif not callable(f):
                raise InvalidDeclarationError(f"agent '{self.name}': tools must be callables, got {f!r}")
        self.agent.tools.extend(f for f in funcs if not isinstance(f, str))
        self.agent.mcp_tools.extend(f for f in funcs if isinstance(f, str))
        return self

    def labels(self, *labels: str) -> AgentBuilder:
        """RBAC labels of the agent's identity (for ``LabelledVisibility``)."""
        if any(not isinstance(label, str) or not label for label in labels):
            raise InvalidDeclarationError(f"agent '{self.name}': labels must be non-empty strings")
        self.agent.labels = self.agent.labels | frozenset(labels)
        return self

    def tenant(self, tenant_id: str) -> AgentBuilder:
        """The tenant of the agent's identity (for ``TenantVisibility``)."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise InvalidDeclarationError(f"agent '{self.name}': tenant must be a non-empty string")
        self.agent.tenant_id = tenant_id
        return self

    def prevent_self_trigger(self, enabled: bool = True) -> AgentBuilder:
        """Whether the agent ignores artifacts it published itself (on by default)."""
        self.agent.prevent_self_trigger = bool(enabled)
        return self

    def with_retry_policy(self, policy: RetryPolicy) -> AgentBuilder:
        """Retry failed runs per ``policy`` (default: no retry)."""
        if not isinstance(policy, RetryPolicy):
            raise InvalidDeclarationError(f"agent '{self.name}': with_retry_policy() takes a RetryPolicy")
        self.agent.retry_policy = policy
        return self


def _predicates(agent: str, where: Predicate | Sequence[Predicate] | None) -> tuple[Predicate, ...]:
    if where is None:
        return ()
    if isinstance(where, str):
        raise InvalidDeclarationError(
            f"agent '{agent}': where= takes a callable such as lambda m: m.runtime > 120, not the string"
            f" {where!r} (string expressions belong in YAML recipes)"
        )
    predicates = (where,) if callable(where) else tuple(where)
    for p in predicates:
        if not callable(p):
            raise InvalidDeclarationError(f"agent '{agent}': where= predicates must be callables, got {p!r}")
        if inspect.iscoroutinefunction(p):
            raise InvalidDeclarationError(f"agent '{agent}': where= predicates must be synchronous")
    return predicates


def _names(value: Iterable[str] | str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)
