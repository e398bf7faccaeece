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

from collections import deque
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
        self._base: set[str] | None = None  # the live agents, nothing left out (see deadlocked)
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
        so the cost is linear in the size of the graph. A type becomes available when its first
        maker is found live; later makers wake no one, since every consumer that could use a
        second maker (the first maker itself, whose own outputs do not count) is live already.
        Waking every consumer at every maker made a recipe of 1,000 agents, each type made by
        ten, take 12 s to check."""
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
                    makers = available.setdefault(type_name, set())
                    makers.add(name)
                    if len(makers) == 1:
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
        fired: that gate, waiting for it, can never fill from inside the flock.

        That is: no agent that makes it (``agent`` itself only when it consumes its own outputs)
        is live with that subscription left out. It is enough to ask the live agents with nothing
        left out, one fixpoint for every gate: if ``agent`` became live by another subscription,
        or not at all, leaving this one out changes nothing; and if it became live by this one,
        ``type_name`` was made before, by an agent that was live without it."""
        del index  # see above: the answer does not depend on which subscription it is
        if self.external(type_name):
            return False
        if self._base is None:
            self._base = self.live()
        own = self.shapes[agent].self_trigger
        return not any(p in self._base and (p != agent or own) for p in self._producers[type_name])

    def path(self, start: str, goal: str) -> list[str]:
        """The shortest chain ``start -> Type -> agent -> ... -> goal`` through published types
        (empty when ``goal`` is not downstream of ``start``)."""
        frontier: deque[list[str]] = deque([[start]])
        seen = {start}
        while frontier:
            chain = frontier.popleft()
            for type_name in sorted(self.shapes[chain[-1]].outputs):
                for consumer in self._consumers.get(type_name, ()):
                    if consumer == goal:
                        return [*chain, type_name, consumer]
                    if consumer not in seen:
                        seen.add(consumer)
                        frontier.append([*chain, type_name, consumer])
        return []

    def add_downstream(self, start: str, into: set[str]) -> None:
        """Add to ``into`` every agent a run of ``start`` can lead to (one step or more), taking
        ``into`` as closed already: an agent in it is not followed again, so adding the
        downstream of many agents one by one costs one pass over the graph in all."""
        frontier = [start]
        while frontier:
            for type_name in self.shapes[frontier.pop()].outputs:
                for consumer in self._consumers.get(type_name, ()):
                    if consumer not in into:
                        into.add(consumer)
                        frontier.append(consumer)

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
