"""Phase 6 of the loader: the subscription graph, type -> agent -> type.

Agents never call each other, so this graph is the only place a workflow's shape is visible.
``flock graph`` prints it as a tree and as Mermaid; the static checks walk it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

from flock_cli.core.registry import canonical_name
from flock_cli.recipe.resolve import ResolvedRecipe

__all__ = ["Edge", "SubscriptionGraph", "build_graph"]

# consumers, producers (by type), outputs, inputs (by agent), publish labels (by agent and type)
_Index = tuple[
    dict[str, list[str]],
    dict[str, list[str]],
    dict[str, list[str]],
    dict[str, list[str]],
    dict[tuple[str, str], str],
]


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
    _indexed: tuple[tuple[int, int], _Index] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def consumers(self, type_name: str) -> list[str]:
        """Agents subscribed to ``type_name``, in declaration order, without repeats."""
        return list(self._index()[0].get(type_name, ()))

    def producers(self, type_name: str) -> list[str]:
        """Agents that publish ``type_name``."""
        return list(self._index()[1].get(type_name, ()))

    def outputs(self, agent: str) -> list[str]:
        """Types ``agent`` publishes."""
        return list(self._index()[2].get(agent, ()))

    def inputs(self, agent: str) -> list[str]:
        """Types ``agent`` consumes."""
        return list(self._index()[3].get(agent, ()))

    def visibility_of(self, agent: str, type_name: str) -> str:
        """How ``agent`` restricts who sees its ``type_name`` artifacts ("" when public)."""
        return self._index()[4].get((agent, type_name), "")

    def _index(self) -> _Index:
        """The edges grouped for the queries above, rebuilt when ``edges`` changes. Scanning every
        edge per query made loading quadratic in the number of agents (bench/recipe_scale.py)."""
        key = (id(self.edges), len(self.edges))
        if self._indexed is None or self._indexed[0] != key:
            # ordered sets (dicts), so each lookup and insert is constant time
            consumers: dict[str, dict[str, None]] = {}
            producers: dict[str, dict[str, None]] = {}
            outputs: dict[str, dict[str, None]] = {}
            inputs: dict[str, dict[str, None]] = {}
            labels: dict[tuple[str, str], str] = {}
            for e in self.edges:
                if e.kind == "consumes":
                    consumers.setdefault(e.type_name, {})[e.agent] = None
                    inputs.setdefault(e.agent, {})[e.type_name] = None
                else:
                    producers.setdefault(e.type_name, {})[e.agent] = None
                    outputs.setdefault(e.agent, {})[e.type_name] = None
                    labels.setdefault((e.agent, e.type_name), e.label)
            c, p, o, i = ({k: list(v) for k, v in d.items()} for d in (consumers, producers, outputs, inputs))
            self._indexed = (key, (c, p, o, i, labels))
            return self._indexed[1]
        return self._indexed[1]

    def entry_types(self) -> list[str]:
        """Consumed types no agent publishes: what a user publishes to start the workflow."""
        return [t for t in self.types if self.consumers(t) and not self.producers(t)]

    def cycles(self, skip: Collection[str] = ()) -> list[list[str]]:
        """Agent cycles (a -> b -> a through the types they exchange) that avoid the agents in
        ``skip``: one per group of agents that reach each other, as a shortest cycle through the
        group's first agent by name, ``[a, b, a]``.

        Listing every cycle would take exponential time (a workflow of a few hundred agents has
        more paths than can be walked); whether a group has a cycle at all is what matters.
        """
        skipped = set(skip)
        allowed = [a for a in self.agents if a not in skipped]
        inside = set(allowed)
        successors = {
            a: [
                c
                for t in self.outputs(a)
                for c in self.consumers(t)
                if c in inside and (c != a or a in self.self_triggering)
            ]
            for a in allowed
        }
        found: list[list[str]] = []
        for group in _strong_components(allowed, successors):
            start = min(group)
            if len(group) == 1 and start not in successors[start]:
                continue  # a lone agent that does not feed itself
            found.append(_shortest_cycle(start, successors, set(group)))
        return sorted(found)

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
    declared = [canonical_name(m) for m in recipe.types.values()]
    graph.types = _unique([*names, *declared])
    graph.edges = list(dict.fromkeys(graph.edges))
    for producer in recipe.agents.values():  # only actual consumers: every pair would be quadratic
        for output in producer.outputs:
            if output.visibility is None:
                continue  # public: everyone sees it
            type_name = canonical_name(output.model)
            for consumer in graph.consumers(type_name):
                if not recipe.agents[consumer].may_see(output.visibility):
                    graph.hidden.add((producer.name, type_name, consumer))
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


def _strong_components(nodes: list[str], successors: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, without recursion (a chain of thousands of
    agents would exceed Python's recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            nexts = successors[node]
            while i < len(nexts) and nexts[i] in index:
                if nexts[i] in on_stack:
                    low[node] = min(low[node], index[nexts[i]])
                i += 1
            if i < len(nexts):
                work.append((node, i + 1))
                work.append((nexts[i], 0))
                continue
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return groups


def _shortest_cycle(start: str, successors: dict[str, list[str]], group: set[str]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in successors[node]:
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt in group and nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a strongly connected group but on no cycle")


def _unique(items: object) -> list[str]:
    return list(dict.fromkeys(items))  # type: ignore[call-overload]


def _text(text: str) -> str:
    """Text inside a Mermaid label: one line, quotes as entities."""
    return " ".join(text.split()).replace('"', "#quot;")
