"""Why a gate still waits when a summary is taken, and whether anything left can complete it.

The summary lists every AND gate or join group still open. At idle nothing runs, so a group can
only complete from what is still scheduled (a delivery held by an embargo may lead to the
missing type) or from new input; a group whose missing type only ever comes from its own
agent's outputs can never fill (see :mod:`flock_cli.core.liveness`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from flock_cli.core.agent import Agent
from flock_cli.core.liveness import AgentShape, Liveness
from flock_cli.core.summary import PendingEmbargo, PendingGroup

__all__ = ["explain_pending", "liveness_of"]

Status = Literal["waiting", "stuck", "deadlock"]
_RANK: dict[Status, int] = {"waiting": 0, "stuck": 1, "deadlock": 2}


def liveness_of(agents: Iterable[Agent]) -> Liveness:
    """The reachability view of a flock's declared agents."""
    return Liveness(
        AgentShape(
            name=agent.name,
            subscriptions=tuple(
                frozenset(s.type_names) if s.accepts_events else None for s in agent.subscriptions
            ),
            outputs=frozenset(o.type_name for o in agent.outputs),
            self_trigger=not agent.prevent_self_trigger,
        )
        for agent in agents
    )


def explain_pending(
    groups: list[PendingGroup],
    agents: Mapping[str, Agent],
    embargoes: list[PendingEmbargo],
    *,
    in_flight: bool,
) -> list[PendingGroup]:
    """``groups`` with their ``status`` and ``reason`` filled in."""
    if not groups:
        return groups
    graph = liveness_of(agents.values())
    held = {name for e in embargoes for name in (e.agents or [e.agent])}
    explained = []
    for group in groups:
        status: Status = "waiting"
        reasons = []
        for type_name in dict.fromkeys(group.missing):
            why, verdict = _why(graph, group, type_name, held, in_flight)
            reasons.append(why)
            if _RANK[verdict] > _RANK[status]:
                status = verdict
        explained.append(group.model_copy(update={"status": status, "reason": "; ".join(reasons)}))
    return explained


def _why(
    graph: Liveness, group: PendingGroup, type_name: str, held: set[str], in_flight: bool
) -> tuple[str, Status]:
    agent = group.agent
    producers = graph.producers(type_name)
    if graph.external(type_name):
        where = f" with correlation id {group.key}" if group.key else ""
        return f"no agent publishes {type_name}: publish one{where} to complete it", "stuck"
    if graph.deadlocked(agent, group.subscription, type_name):
        chains = [graph.path(agent, p) for p in producers if p != agent]
        chain = min((c for c in chains if c), key=len, default=[])
        via = f" ({' -> '.join([*chain, type_name])})" if chain else ""
        return (
            f"{type_name} only comes from {', '.join(producers)} after '{agent}' itself has run{via}:"
            " this gate can never fill",
            "deadlock",
        )
    if in_flight:
        return f"runs still in flight may publish {type_name}", "waiting"
    if held and graph.reaches(held, type_name):
        return f"a delivery waiting for its embargo may still lead to {type_name}", "waiting"
    return (
        f"{', '.join(producers)} {'publishes' if len(producers) == 1 else 'publish'} {type_name},"
        " but no run is left that could (nothing is queued, running or embargoed)",
        "stuck",
    )
