"""What a run hands its hooks and what engines return: ``Context``, ``EvalInputs``, ``EvalResult``.

Plain data, below the agent and its components (:mod:`flock_cli.core.agent`), whose hooks take and
return it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel

from flock_cli.core.artifact import Artifact
from flock_cli.core.registry import canonical_name
from flock_cli.core.visibility import AgentIdentity
from flock_cli.tracing.run_trace import NO_TRACE, RunTrace

if TYPE_CHECKING:
    from flock_cli.core.board import BoardView

__all__ = ["BatchTrigger", "Context", "EvalInputs", "EvalResult"]

M = TypeVar("M", bound=BaseModel)

BatchTrigger = Literal["size", "timeout", "idle", "shutdown"]


@dataclass
class EvalInputs:
    """The artifacts an engine evaluates, plus state handed down an engine chain.

    For a join, ``groups`` holds each completed group; for a batch of joins, one group per member.
    """

    artifacts: list[Artifact]
    state: dict[str, Any] = field(default_factory=dict)
    groups: list[list[Artifact]] = field(default_factory=list)

    def all_as(self, model: type[M]) -> list[M]:
        """Every input artifact of type ``model``, validated into the model."""
        name = canonical_name(model)
        return [a.as_model(model) for a in self.artifacts if a.type == name]

    def first_as(self, model: type[M]) -> M:
        """The first input of type ``model``; raises LookupError if there is none."""
        found = self.all_as(model)
        if not found:
            raise LookupError(f"No input artifact of type {canonical_name(model)}")
        return found[0]


@dataclass
class EvalResult:
    """What an engine returns: output artifacts (or bare registered models), state, metrics, logs."""

    artifacts: Sequence[Artifact | BaseModel] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Per-run information given to every hook: who runs, on what, which attempt, and a board view.

    ``board`` only returns artifacts the agent's identity may see.
    """

    agent: str
    identity: AgentIdentity
    board: BoardView
    task_id: str
    correlation_id: UUID | None
    attempt: int = 1
    is_batch: bool = False
    batch_trigger: BatchTrigger | None = None
    trigger: Literal["event", "direct"] = "event"
    state: dict[str, Any] = field(default_factory=dict)
    trace: RunTrace = NO_TRACE
    """Tracing for this run: ``usage`` (model, tokens, cost), ``stream`` (live text), ``event``."""
    model: Any = None
    """The flock's default model (a string or a ``flock_cli.Model``), for engines that call one
    and were given none of their own."""
    tool_servers: Any = None
    """The flock's MCP servers (``flock_cli.mcp_tools.McpServers``), for engines that offer an
    agent's MCP tools (``Agent.mcp_tools``)."""
