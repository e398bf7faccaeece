"""Phase 7 of the loader: static checks over a resolved recipe and its subscription graph.

Each finding is a :class:`Problem` with a severity: ``error`` (the recipe cannot work as
written), ``warning`` (it will run, but probably not as meant) or ``info`` (worth knowing,
such as the final outputs and the entry points).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import BaseModel

from flock_cli.core.liveness import AgentShape, Liveness
from flock_cli.core.registry import canonical_name
from flock_cli.core.visibility import (
    Visibility,
)
from flock_cli.recipe.diagnostics import Problem
from flock_cli.recipe.graph import SubscriptionGraph
from flock_cli.recipe.model import FunctionEngineDef, TestEngineDef
from flock_cli.recipe.resolve import ResolvedAgent, ResolvedRecipe

__all__ = ["static_checks"]


def static_checks(recipe: ResolvedRecipe, graph: SubscriptionGraph) -> list[Problem]:
    """Every finding, in a stable order."""
    found: list[Problem] = []
    if not recipe.agents:
        found.append(
            Problem(
                (), "the recipe declares no agents, so nothing can run", severity="warning", code="no-agents"
            )
        )
    for t in graph.types:
        if graph.producers(t) and not graph.consumers(t):
            found.append(
                Problem(
                    (),
                    f"'{t}' is produced but no agent consumes it (a final output)",
                    severity="info",
                    code="final-output",
                )
            )
    for t in graph.entry_types():
        found.append(
            Problem(
                (),
                f"'{t}' is consumed but no agent publishes it: publish it to start",
                severity="info",
                code="entry-point",
            )
        )
    producers: dict[str, list[ResolvedAgent]] = {}  # by type: looked up per subscription
    for agent in recipe.agents.values():
        for name in dict.fromkeys(canonical_name(o.model) for o in agent.outputs):
            producers.setdefault(name, []).append(agent)
    for agent in recipe.agents.values():
        found.extend(_agent_checks(agent, producers))
    found.extend(_shared_group_checks(recipe))
    found.extend(_liveness_checks(recipe))
    stoppers = [name for name, a in recipe.agents.items() if any(c.where for c in a.consumes)]
    for cycle in graph.cycles(skip=stoppers):  # a cycle through an agent with a where can end
        limit = recipe.definition.settings.max_agent_iterations
        found.append(
            Problem(
                ("agents", cycle[0]),
                f"cycle {' -> '.join(cycle)} has no where condition that can end it",
                hint=f"only the circuit breaker stops it (settings.max_agent_iterations: {limit});"
                " add a where condition to one of its subscriptions",
                severity="warning",
                code="unbounded-cycle",
                key=True,
            )
        )
    return found


def _shared_group_checks(recipe: ResolvedRecipe) -> list[Problem]:
    """An exclusive group shared by several agents hands out single artifacts: a member that
    gathers (join, batch, several types) cannot take part (the runtime refuses it too)."""
    members: dict[str, list[tuple[str, int, Any]]] = {}
    for agent in recipe.agents.values():
        for i, consume in enumerate(agent.consumes):
            if consume.spec.group is not None:
                members.setdefault(consume.spec.group, []).append((agent.name, i, consume.spec))
    found: list[Problem] = []
    for group, subs in members.items():
        if len({name for name, _, _ in subs}) < 2:
            continue
        for name, i, spec in subs:
            if spec.join is not None or spec.batch is not None or len(spec.types) > 1:
                agents = ", ".join(sorted({n for n, _, _ in subs}))
                found.append(
                    Problem(
                        ("agents", name, "consumes", i, "group"),
                        f"group '{group}' is shared by {agents}; a shared group takes single-type"
                        " subscriptions without join or batch",
                        code="shared-group",
                    )
                )
    return found


def _agent_checks(agent: ResolvedAgent, producers: dict[str, list[ResolvedAgent]]) -> list[Problem]:
    base = ("agents", agent.name)
    found: list[Problem] = []
    if not agent.spec.consumes:
        found.append(
            Problem(
                base,
                f"agent '{agent.name}' consumes nothing, so it never runs",
                severity="warning",
                code="never-runs",
                key=True,
            )
        )
    if not agent.outputs and agent.calls is None:
        found.append(
            Problem(
                base,
                f"agent '{agent.name}' publishes nothing and has no calls function",
                severity="warning",
                code="no-output",
                key=True,
            )
        )
    for i, consume in enumerate(agent.consumes):
        for j, model in enumerate(consume.models):
            name = canonical_name(model)
            reason = _never_delivered(agent, name, consume.spec.from_agents, producers.get(name, []))
            if reason:
                found.append(
                    Problem(
                        (*base, "consumes", i, "types", j),
                        f"agent '{agent.name}' can never receive '{name}': {reason}",
                        severity="warning",
                        code="never-fires",
                    )
                )
    found.extend(_engine_checks(agent, base))
    return found


def _never_delivered(
    agent: ResolvedAgent, type_name: str, from_agents: list[str] | None, producers: list[ResolvedAgent]
) -> str:
    """Why ``agent`` can never receive ``type_name``, which ``producers`` publish ("" when it can)."""
    if from_agents is not None:
        allowed = set(from_agents)
        if "external" in allowed:
            return ""
        candidates = [p for p in producers if p.name in allowed]
        if not candidates:
            return f"none of {', '.join(sorted(allowed))} publishes it"
    else:
        if not producers:
            return ""  # published from outside: an entry point
        candidates = producers
    if not agent.spec.self_trigger:
        candidates = [p for p in candidates if p.name != agent.name]
        if not candidates and from_agents is None:
            return ""  # only itself: it still receives what is published from outside
        if not candidates:
            return "only the agent itself publishes it and self_trigger is off"
    visible = [p for p in candidates if agent.may_see(_visibility_of(p, type_name))]
    if not visible:
        names = ", ".join(p.name for p in candidates)
        return f"the visibility it is published with (by {names}) does not include this agent"
    return ""


def _visibility_of(producer: ResolvedAgent, type_name: str) -> Visibility | None:
    return next((o.visibility for o in producer.outputs if canonical_name(o.model) == type_name), None)


def _engine_checks(agent: ResolvedAgent, base: tuple[str | int, ...]) -> list[Problem]:
    found: list[Problem] = []
    declared = {canonical_name(o.model) for o in agent.outputs}
    short = {o.model.__name__: canonical_name(o.model) for o in agent.outputs}
    for i, (engine, fn) in enumerate(agent.engines):
        loc = (*base, "engine", i)
        if isinstance(engine, TestEngineDef) and isinstance(engine.count, dict):
            counted = {short.get(name, name) for name in engine.count}
            for name in engine.count:
                if short.get(name, name) not in declared:
                    found.append(
                        Problem(
                            (*loc, "count", name),
                            f"the test engine counts '{name}', which the agent does not publish",
                            severity="error",
                            code="engine-outputs",
                            key=True,
                        )
                    )
            for name in sorted(declared - counted):
                found.append(
                    Problem(
                        (*loc, "count"),
                        f"the test engine produces no '{name}' (missing from count)",
                        severity="warning",
                        code="engine-outputs",
                    )
                )
        if isinstance(engine, TestEngineDef) and engine.count is not None:
            found.extend(_count_conflicts(agent, engine, loc, short))
        if isinstance(engine, FunctionEngineDef) and fn is not None:
            returned = _returned_types(fn)
            if returned is not None:
                extra = sorted(returned - declared)
                if extra:
                    found.append(
                        Problem(
                            (*loc, "function"),
                            f"{engine.function} returns {', '.join(extra)}, which the agent does not publish",
                            severity="error",
                            code="engine-outputs",
                        )
                    )
                missing = sorted(declared - returned) if len(agent.engines) == 1 else []
                if missing:
                    found.append(
                        Problem(
                            (*loc, "function"),
                            f"{engine.function} never returns {', '.join(missing)}, which the agent"
                            " publishes",
                            severity="warning",
                            code="engine-outputs",
                        )
                    )
    return found


def _count_conflicts(
    agent: ResolvedAgent, engine: TestEngineDef, loc: tuple[str | int, ...], short: dict[str, str]
) -> list[Problem]:
    """A test engine count that differs from the count ``publishes`` fixes fails every run."""
    found = []
    counts = engine.count if isinstance(engine.count, dict) else None
    for output in agent.outputs:
        if output.count is None:
            continue
        name = canonical_name(output.model)
        if counts is None:
            made = engine.count
        else:
            made = next((n for key, n in counts.items() if short.get(key, key) == name), 0)
        if made != output.count:
            found.append(
                Problem(
                    (*loc, "count"),
                    f"the test engine makes {made} '{name}' per run,"
                    f" but publishes declares count {output.count}",
                    hint="every run would fail; make the two counts agree",
                    severity="error",
                    code="engine-outputs",
                )
            )
    return found


def _returned_types(fn: Any) -> set[str] | None:
    """Model types named in a function's return annotation, or None when it does not say."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    if "return" not in hints:
        return None
    models: set[str] = set()
    stack = [hints["return"]]
    while stack:
        hint = stack.pop()
        if inspect.isclass(hint) and issubclass(hint, BaseModel):
            models.add(canonical_name(hint))
        elif hint in (type(None), None):
            continue
        else:
            args = typing.get_args(hint)
            if not args:
                return None  # Any, EvalResult or something else we cannot read
            stack.extend(args)
    return models


def _liveness_checks(recipe: ResolvedRecipe) -> list[Problem]:
    """Subscriptions that can never fire under ``flock run``: a gate waiting for a type that only
    its own agent's outputs lead to (a deadlock), and agents that only serve direct calls."""
    graph = Liveness(
        AgentShape(
            name=agent.name,
            subscriptions=tuple(
                frozenset(canonical_name(m) for m in c.models) if c.spec.mode != "direct" else None
                for c in agent.consumes
            ),
            outputs=frozenset(canonical_name(o.model) for o in agent.outputs),
            self_trigger=agent.spec.self_trigger,
        )
        for agent in recipe.agents.values()
    )
    found: list[Problem] = []
    # agents downstream of one already reported: what only they lead to is not reported again
    shadowed: set[str] = set()
    ordered = sorted(recipe.agents.values(), key=lambda a: not any(len(c.models) > 1 for c in a.consumes))
    for agent in ordered:  # gates first: a deadlocked gate is the cause, what follows from it is not
        if agent.consumes and all(c.spec.mode == "direct" for c in agent.consumes):
            found.append(
                Problem(
                    ("agents", agent.name, "consumes"),
                    f"agent '{agent.name}' only serves direct calls (mode: direct), so flock run never"
                    " runs it",
                    hint="use mode: both (the default) or events to run it on published artifacts;"
                    " direct calls come from the Python API (Flock.arun)",
                    severity="warning",
                    code="direct-only",
                    key=True,
                )
            )
        for i, consume in enumerate(agent.consumes):
            if consume.spec.mode == "direct":
                continue
            names = list(dict.fromkeys(canonical_name(m) for m in consume.models))
            for name in names:
                if not graph.deadlocked(agent.name, i, name) or agent.name in shadowed:
                    continue
                graph.add_downstream(agent.name, shadowed)
                chain = next(
                    (
                        c
                        for p in graph.producers(name)
                        if p != agent.name and (c := graph.path(agent.name, p))
                    ),
                    [],
                )
                via = f" ({' -> '.join([*chain, name])})" if chain else ""
                gate = len(consume.models) > 1
                what = "this AND gate can never fill" if gate else "this subscription can never fire"
                hint = (
                    "an AND gate takes one artifact of each type per run; for an agent that runs on"
                    f" either type, list them as alternatives: consumes: [{', '.join(names)}]"
                    if gate
                    else "give the workflow an entry point: a type published from outside starts it"
                )
                found.append(
                    Problem(
                        ("agents", agent.name, "consumes", i),
                        f"agent '{agent.name}' waits for '{name}', which only comes after '{agent.name}'"
                        f" itself has run{via}: {what}",
                        hint=hint,
                        severity="warning",
                        code="never-fills",
                        key=True,
                    )
                )
    return found
