"""Phase 6 of the loader: the subscription graph, type -> agent -> type.

Agents never call each other, so this graph is the only place a workflow's shape is visible.
``flock graph`` prints it as a tree and as Mermaid; the static checks walk it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flock_cli.core.registry import canonical_name
from flock_cli.recipe.resolve import ResolvedRecipe

__all__ = ["Edge", "SubscriptionGraph", "build_graph"]


@dataclass(frozen=True)
class Edge:
    """A type consumed by an agent (``consumes``) or an agent publishing a type (``publishes``)."""

    kind: str  # "consumes" | "publishes"
    agent: str
    type_name: str
    label: str = ""


@dataclass
class SubscriptionGraph:
    """Which agents consume and publish which types."""

    types: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    self_triggering: set[str] = field(default_factory=set)  # agents that may consume their own outputs
    hidden: set[tuple[str, str, str]] = field(default_factory=set)  # (producer, type, consumer) it cannot see

    def consumers(self, type_name: str) -> list[str]:
        """Agents subscribed to ``type_name``, in declaration order, without repeats."""
        return _unique(e.agent for e in self.edges if e.kind == "consumes" and e.type_name == type_name)

    def producers(self, type_name: str) -> list[str]:
        """Agents that publish ``type_name``."""
        return _unique(e.agent for e in self.edges if e.kind == "publishes" and e.type_name == type_name)

    def outputs(self, agent: str) -> list[str]:
        """Types ``agent`` publishes."""
        return _unique(e.type_name for e in self.edges if e.kind == "publishes" and e.agent == agent)

    def inputs(self, agent: str) -> list[str]:
        """Types ``agent`` consumes."""
        return _unique(e.type_name for e in self.edges if e.kind == "consumes" and e.agent == agent)

    def visibility_of(self, agent: str, type_name: str) -> str:
        """How ``agent`` restricts who sees its ``type_name`` artifacts ("" when public)."""
        return next(
            (
                e.label
                for e in self.edges
                if e.kind == "publishes" and e.agent == agent and e.type_name == type_name
            ),
            "",
        )

    def entry_types(self) -> list[str]:
        """Consumed types no agent publishes: what a user publishes to start the workflow."""
        return [t for t in self.types if self.consumers(t) and not self.producers(t)]

    def cycles(self) -> list[list[str]]:
        """Agent cycles (a -> b -> a through the types they exchange), each listed once."""
        successors = {
            a: _unique(
                c for t in self.outputs(a) for c in self.consumers(t) if c != a or a in self.self_triggering
            )
            for a in self.agents
        }
        found: list[list[str]] = []
        seen: set[frozenset[str]] = set()

        def walk(start: str, node: str, path: list[str]) -> None:
            for nxt in successors[node]:
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append([*path, start])
                elif nxt not in path and nxt > start:  # each cycle is found from its smallest agent
                    walk(start, nxt, [*path, nxt])

        for agent in sorted(self.agents):
            walk(agent, agent, [agent])
        return found

    def tree(self) -> str:
        """An indented text tree from the entry types (or every type when there are none)."""
        lines: list[str] = []
        roots = self.entry_types() or [t for t in self.types if not self.producers(t)] or self.types[:1]

        def type_line(
            type_name: str, depth: int, seen: frozenset[str], note: str = "", producer: str | None = None
        ) -> None:
            lines.append(f"{'    ' * depth}{type_name}{f'  ({note})' if note else ''}")
            for agent in self.consumers(type_name):
                label = next(
                    (
                        e.label
                        for e in self.edges
                        if e.kind == "consumes" and e.agent == agent and e.type_name == type_name
                    ),
                    "",
                )
                suffix = f"  [{label}]" if label else ""
                if producer is not None and (producer, type_name, agent) in self.hidden:
                    lines.append(f"{'    ' * (depth + 1)}└─x {agent}  (cannot see it)")
                    continue
                if agent in seen:
                    lines.append(f"{'    ' * (depth + 1)}└─> {agent}{suffix}  (cycle)")
                    continue
                lines.append(f"{'    ' * (depth + 1)}└─> {agent}{suffix}")
                for out in self.outputs(agent):
                    type_line(out, depth + 2, seen | {agent}, self.visibility_of(agent, out), agent)

        for root in roots:
            type_line(root, 0, frozenset())
        orphans = [a for a in self.agents if not self.inputs(a)]
        for agent in orphans:
            lines.append(f"{agent}  (consumes nothing: never runs)")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """A Mermaid flowchart: types as rounded boxes, agents as rectangles."""
        type_ids = {t: f"T{i}" for i, t in enumerate(self.types)}
        agent_ids = {a: f"A{i}" for i, a in enumerate(self.agents)}
        lines = ["flowchart LR"]
        lines += [f'    {type_ids[t]}(["{_text(t)}"])' for t in self.types]
        lines += [f'    {agent_ids[a]}["{_text(a)}"]' for a in self.agents]
        for e in self.edges:
            label = f'|"{_text(e.label)}"|' if e.label else ""
            if e.kind == "consumes":
                lines.append(f"    {type_ids[e.type_name]} -->{label} {agent_ids[e.agent]}")
            else:
                label = f'|"{_text(e.label)}"|' if e.label else ""
                lines.append(f"    {agent_ids[e.agent]} -->{label} {type_ids[e.type_name]}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        """Nodes and edges as plain data."""
        return {
            "types": self.types,
            "agents": self.agents,
            "edges": [
                {"kind": e.kind, "agent": e.agent, "type": e.type_name, "label": e.label} for e in self.edges
            ],
        }


def build_graph(recipe: ResolvedRecipe) -> SubscriptionGraph:
    """The graph of a resolved recipe."""
    graph = SubscriptionGraph(
        agents=list(recipe.agents),
        self_triggering={a.name for a in recipe.agents.values() if a.spec.self_trigger},
    )
    names: list[str] = []
    for agent in recipe.agents.values():
        for consume in agent.consumes:
            label = _consume_label(consume.spec)
            for model in consume.models:
                names.append(canonical_name(model))
                graph.edges.append(Edge("consumes", agent.name, canonical_name(model), label))
        for output in agent.outputs:
            names.append(canonical_name(output.model))
            vis = output.visibility
            label = "" if vis is None or vis.kind == "Public" else vis.describe()  # who may see it
            graph.edges.append(Edge("publishes", agent.name, canonical_name(output.model), label))
    for producer in recipe.agents.values():
        for output in producer.outputs:
            for consumer in recipe.agents.values():
                if not consumer.may_see(output.visibility):
                    graph.hidden.add((producer.name, canonical_name(output.model), consumer.name))
    declared = [canonical_name(m) for m in recipe.types.values()]
    graph.types = _unique([*names, *declared])
    graph.edges = list(dict.fromkeys(graph.edges))
    return graph


def _consume_label(spec: object) -> str:
    parts = []
    where = getattr(spec, "where", [])
    if where:
        parts.append("where " + " and ".join(where))
    if getattr(spec, "join", None) is not None:
        parts.append("join")
    batch = getattr(spec, "batch", None)
    if batch is not None:
        parts.append(f"batch {batch.size}" if batch.size else "batch")
    return "; ".join(parts)


def _unique(items: object) -> list[str]:
    return list(dict.fromkeys(items))  # type: ignore[call-overload]


def _text(text: str) -> str:
    """Text inside a Mermaid label: one line, quotes as entities."""
    return " ".join(text.split()).replace('"', "#quot;")
