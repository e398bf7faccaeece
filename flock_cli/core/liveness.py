"""Which agents can ever run, and why a gate waits: reachability over the subscription graph.

Agents never call each other, so whether an agent can run depends only on which types can
appear: types no agent publishes come from outside (they are what a user publishes), and a
type an agent publishes appears once that agent can run. An agent can run when one of its event
subscriptions can get every type it needs. The fixpoint below answers that without running
anything; ``flock check`` uses it on a recipe, and the run summary uses it to explain a gate
still waiting when the flock goes idle (a gate whose missing type only its own agent's outputs
lead to can never fill: a deadlock, such as ``consumes(Idea, Feedback)`` where Feedback is the
reviewer's answer to the agent's own draft).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AgentShape", "Liveness"]


@dataclass(frozen=True)
class AgentShape:
    """What reachability needs of an agent: the type set of each subscription, in declaration
    order (each one an alternative; several types in one set form a gate; None for a
    subscription that never fires on published artifacts, ``mode="direct"``), what it
    publishes, and whether it may consume its own outputs."""

    name: str
    subscriptions: tuple[frozenset[str] | None, ...]
    outputs: frozenset[str]
    self_trigger: bool = False


class Liveness:
    """Reachability questions over a set of agent shapes (built once, asked many times)."""

    def __init__(self, shapes: Iterable[AgentShape]) -> None:
        self.shapes: dict[str, AgentShape] = {s.name: s for s in shapes}
        self._producers: dict[str, list[str]] = {}
        self._consumers: dict[str, list[str]] = {}
        self._deadlocks: dict[tuple[str, int, str], bool] = {}
        for shape in self.shapes.values():
            for type_name in shape.outputs:
                self._producers.setdefault(type_name, []).append(shape.name)
            for type_name in {t for sub in shape.subscriptions if sub is not None for t in sub}:
                self._consumers.setdefault(type_name, []).append(shape.name)

    def producers(self, type_name: str) -> list[str]:
        """Agents that publish ``type_name``, in declaration order."""
        return list(self._producers.get(type_name, ()))

    def external(self, type_name: str) -> bool:
        """True when no agent publishes ``type_name``: it can only come from outside."""
        return type_name not in self._producers

    def live(self, *, drop: tuple[str, int] | None = None) -> set[str]:
        """Agents that can run when only external types are published; ``drop`` leaves one
        subscription out (``(agent, index)``, as if that gate never fired).

        A worklist: an agent is looked at again only when a type it consumes becomes available,
        so the cost is linear in the size of the graph."""
        live: set[str] = set()
        available: dict[str, set[str]] = {}  # agent-published type -> live agents publishing it
        todo = [name for name, shape in self.shapes.items() if shape.subscriptions]
        while todo:
            name = todo.pop()
            if name in live:
                continue
            shape = self.shapes[name]
            if any(
                sub is not None
                and (drop is None or (name, i) != drop)
                and all(self._can_get(shape, t, available) for t in sub)
                for i, sub in enumerate(shape.subscriptions)
            ):
                live.add(name)
                for type_name in shape.outputs:
                    available.setdefault(type_name, set()).add(name)
                    todo.extend(self._consumers.get(type_name, ()))
        return live

    def _can_get(self, shape: AgentShape, type_name: str, available: dict[str, set[str]]) -> bool:
        if self.external(type_name):
            return True
        # Its own outputs only count when it may consume them (self_trigger).
        makers = available.get(type_name, ())
        return any(m != shape.name or shape.self_trigger for m in makers)

    def deadlocked(self, agent: str, index: int, type_name: str) -> bool:
        """True when ``type_name`` can only appear after subscription ``index`` of ``agent`` has
        fired: that gate, waiting for it, can never fill from inside the flock."""
        if self.external(type_name):
            return False
        known = self._deadlocks.get((agent, index, type_name))
        if known is None:  # the graph never changes: many open groups of one gate ask once
            live = self.live(drop=(agent, index))
            own = self.shapes[agent].self_trigger
            known = not any(p in live and (p != agent or own) for p in self._producers[type_name])
            self._deadlocks[(agent, index, type_name)] = known
        return known

    def path(self, start: str, goal: str) -> list[str]:
        """The shortest chain ``start -> Type -> agent -> ... -> goal`` through published types
        (empty when ``goal`` is not downstream of ``start``)."""
        frontier: list[list[str]] = [[start]]
        seen = {start}
        while frontier:
            chain = frontier.pop(0)
            for type_name in sorted(self.shapes[chain[-1]].outputs):
                for consumer in self._consumers.get(type_name, ()):
                    if consumer == goal:
                        return [*chain, type_name, consumer]
                    if consumer not in seen:
                        seen.add(consumer)
                        frontier.append([*chain, type_name, consumer])
        return []

    def reaches(self, starts: Iterable[str], type_name: str) -> bool:
        """True when a run of one of ``starts`` can lead to an artifact of ``type_name``."""
        seen: set[str] = set()
        frontier = list(starts)
        while frontier:
            name = frontier.pop()
            if name in seen or name not in self.shapes:
                continue
            seen.add(name)
            outputs = self.shapes[name].outputs
            if type_name in outputs:
                return True
            frontier.extend(c for t in outputs for c in self._consumers.get(t, ()))
        return False
