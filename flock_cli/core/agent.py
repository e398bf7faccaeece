"""An agent's declaration: what it consumes and publishes, how it runs, and the component classes
(``AgentComponent``, ``EngineComponent``) it is built from, whose hooks receive the agent.

The fluent API that fills a declaration is :mod:`flock_cli.core.builder`; what a run hands the hooks
is :mod:`flock_cli.core.context`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from flock_cli.core.artifact import Artifact
from flock_cli.core.context import Context, EvalInputs, EvalResult
from flock_cli.core.options import Options
from flock_cli.core.specs import NO_RETRY, Budget, RetryPolicy
from flock_cli.core.subscription import Subscription
from flock_cli.core.visibility import AgentIdentity, Visibility

__all__ = ["Agent", "AgentComponent", "EngineComponent", "OutputDecl"]


@dataclass
class OutputDecl:
    """One declared output type, the visibility its artifacts get (None: the artifact's own) and,
    when set, exactly how many artifacts of it every run publishes."""

    type_name: str
    model: type[BaseModel]
    visibility: Visibility | None = None
    count: int | None = None


@dataclass(eq=False)
class Agent:
    """A declared agent: what it consumes and publishes, and how it runs."""

    name: str
    description: str = ""
    subscriptions: list[Subscription] = field(default_factory=list)
    outputs: list[OutputDecl] = field(default_factory=list)
    utilities: list[AgentComponent] = field(default_factory=list)
    engines: list[EngineComponent] = field(default_factory=list)
    best_of_n: int = 1
    best_of_score: Callable[[EvalResult], float] | None = None
    max_concurrency: int | None = None
    calls_func: Callable[..., Any] | None = None
    tools: list[Callable[..., Any]] = field(default_factory=list)
    mcp_tools: list[str] = field(default_factory=list)
    """MCP tools the agent may call: ``server.tool`` or ``server.*`` (``Flock.mcp_server``)."""
    labels: frozenset[str] = frozenset()
    tenant_id: str | None = None
    prevent_self_trigger: bool = True
    retry_policy: RetryPolicy = NO_RETRY
    budget: Budget | None = None

    _identity: AgentIdentity | None = field(default=None, init=False, repr=False)
    _identity_of: tuple[frozenset[str], str | None] = field(
        default=(frozenset(), None), init=False, repr=False
    )

    @property
    def identity(self) -> AgentIdentity:
        """The identity visibility rules are checked against (rebuilt when labels or tenant change)."""
        ident = self._identity
        # Asked several times a run: the same objects (labels are a frozenset, so only a new
        # value changes them) are a cheaper test than set equality; an equal copy only rebuilds.
        if (
            ident is None
            or self._identity_of[0] is not self.labels
            or self._identity_of[1] is not self.tenant_id
        ):
            ident = self._identity = AgentIdentity(
                name=self.name, labels=self.labels, tenant_id=self.tenant_id
            )
            self._identity_of = (self.labels, self.tenant_id)
        return ident

    def output_for(self, type_name: str) -> OutputDecl | None:
        """The declaration for ``type_name`` if the agent publishes it."""
        for decl in self.outputs:
            if decl.type_name == type_name:
                return decl
        return None


class AgentComponent(Options):
    """A utility component: override any hook to observe or transform a run.

    Hooks run in ascending ``priority`` order. Every hook is async and may return a replacement
    for its input (inputs, eval inputs, result). Options are the declared fields, of this class
    and of subclasses: an unknown one raises InvalidDeclarationError naming it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str | None = None
    priority: int = 0

    async def on_initialize(self, agent: Agent, ctx: Context) -> None:
        """Stage 2: before anything else in a run."""

    async def on_pre_consume(self, agent: Agent, ctx: Context, inputs: list[Artifact]) -> list[Artifact]:
        """Stage 3: transform or filter the input artifacts."""
        return inputs

    async def on_pre_evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalInputs:
        """Stage 4: prepare the evaluation inputs."""
        return inputs

    async def on_post_evaluate(
        self, agent: Agent, ctx: Context, inputs: EvalInputs, result: EvalResult
    ) -> EvalResult:
        """Stage 6: transform the engines' result."""
        return result

    async def on_post_publish(self, agent: Agent, ctx: Context, artifact: Artifact) -> None:
        """Stage 8: react to each published output."""

    async def on_error(self, agent: Agent, ctx: Context, error: BaseException) -> None:
        """Called when an attempt fails, before any retry."""

    async def on_terminate(self, agent: Agent, ctx: Context) -> None:
        """Always called at the end of an attempt."""


class EngineComponent(AgentComponent):
    """An engine turns evaluation inputs into a result. Engines of one agent run as a chain."""

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        """Produce the result for ``inputs``. Subclasses must implement this."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate is not implemented")
