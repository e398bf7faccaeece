"""Phase 5 of the loader: resolve every name in a validated recipe to a real object.

Imports are imported, declared types become Pydantic models, type and agent names are looked
up (with "did you mean"), expressions are compiled and their field names checked, functions
and components are imported and built. Problems are collected per item, so one run of the
loader reports as many independent mistakes as it can.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flock_cli.core.components import AgentComponent
from flock_cli.core.registry import canonical_name
from flock_cli.core.specs import RetryPolicy
from flock_cli.core.visibility import (
    AfterVisibility,
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    Visibility,
)
from flock_cli.errors import did_you_mean, suggest
from flock_cli.recipe.diagnostics import Problem
from flock_cli.recipe.expressions import ExpressionError, compile_expression
from flock_cli.recipe.imports import import_object
from flock_cli.recipe.model import AgentDef, ConsumeDef, EngineDef, FunctionEngineDef, RecipeDef
from flock_cli.recipe.typedefs import build_types

__all__ = ["ResolvedAgent", "ResolvedConsume", "ResolvedOutput", "ResolvedRecipe", "resolve"]

Loc = tuple[str | int, ...]


@dataclass
class ResolvedConsume:
    """One subscription with its types, compiled predicates and join key."""

    spec: ConsumeDef
    models: list[type[BaseModel]]
    where: list[Callable[[BaseModel], Any]]
    join_by: Callable[[BaseModel], Any] | None


@dataclass
class ResolvedOutput:
    """One output type, its visibility and per-run count."""

    model: type[BaseModel]
    visibility: Visibility | None
    count: int | None


@dataclass
class ResolvedAgent:
    """An agent whose every reference points at a real object."""

    name: str
    spec: AgentDef
    consumes: list[ResolvedConsume] = field(default_factory=list)
    outputs: list[ResolvedOutput] = field(default_factory=list)
    engines: list[tuple[EngineDef, Callable[..., Any] | None]] = field(default_factory=list)
    utilities: list[AgentComponent] = field(default_factory=list)
    tools: list[Callable[..., Any]] = field(default_factory=list)
    mcp_tools: list[str] = field(default_factory=list)
    """MCP tools as named (``server.tool``, ``server.*``): the server is declared, the tool is
    checked when the server runs (``flock check --connect``)."""
    calls: Callable[..., Any] | None = None
    best_of_score: Callable[..., float] | None = None
    retry: RetryPolicy | None = None

    def may_see(self, visibility: Visibility | None) -> bool:
        """Whether this agent can ever see an artifact with ``visibility`` (after any embargo)."""
        if isinstance(visibility, AfterVisibility):  # once the embargo lifts, `then` decides
            return self.may_see(visibility.then)
        if isinstance(visibility, PrivateVisibility):
            return self.name in visibility.agents
        if isinstance(visibility, LabelledVisibility):
            return visibility.required_labels <= set(self.spec.labels)
        if isinstance(visibility, TenantVisibility):
            return visibility.tenant_id == self.spec.tenant
        return True  # public


@dataclass
class ResolvedRecipe:
    """A recipe ready for the graph, the checks and the compiler."""

    definition: RecipeDef
    types: dict[str, type[BaseModel]]
    agents: dict[str, ResolvedAgent]


def resolve(recipe: RecipeDef, problems: list[Problem]) -> ResolvedRecipe:
    """Resolve ``recipe``; append every problem found to ``problems``."""
    imported: dict[str, type[BaseModel]] = {}
    models = _imports(recipe.imports.types, "types", _is_model, "a Pydantic model class", problems)
    for ref, obj in models:
        for name in (obj.__name__, canonical_name(obj)):
            other = imported.setdefault(name, obj)
            if other is not obj:
                hint = "give one of them another name with @flock_type(name=...)"
                problems.append(_clash("types", recipe.imports.types.index(ref), name, hint))
    tools: dict[str, Callable[..., Any]] = {}
    for ref, tool in _imports(recipe.imports.tools, "tools", callable, "callable", problems):
        name = ref.rsplit(":", 1)[1].rsplit(".", 1)[-1]  # a tool is named as its reference ends
        if name in tools:
            hint = "import one of them under another module or name"
            problems.append(_clash("tools", recipe.imports.tools.index(ref), name, hint))
        tools[name] = tool
    declared = build_types(recipe.types, imported, problems)
    types = {**imported, **declared}
    agents: dict[str, ResolvedAgent] = {}
    agent_names = set(recipe.agents)  # once: a set per agent made loading quadratic
    for name, spec in recipe.agents.items():
        agents[name] = _AgentResolver(
            name, spec, types, tools, agent_names, problems, set(recipe.mcp_servers)
        ).resolve()
    return ResolvedRecipe(definition=recipe, types=types, agents=agents)


def _clash(kind: str, index: int, name: str, hint: str) -> Problem:
    return Problem(
        ("imports", kind, index), f"two imported {kind} are both named '{name}'", hint=hint, code="import"
    )


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _imports(
    refs: list[str], kind: str, accept: Callable[[Any], bool], expected: str, problems: list[Problem]
) -> list[tuple[str, Any]]:
    """The objects ``imports.<kind>`` names; each that fails to import or is not ``expected`` is a problem."""
    found = []
    for i, ref in enumerate(refs):
        try:
            obj = import_object(ref, ("imports", kind, i), kind[:-1])
        except Problem as problem:
            problems.append(problem)
            continue
        if not accept(obj):
            problems.append(Problem(("imports", kind, i), f"'{ref}' is not {expected}", code="import"))
            continue
        found.append((ref, obj))
    return found


class _Reported(Exception):
    """Problems were added to the list already; the item they belong to is dropped."""


class _AgentResolver:
    def __init__(
        self,
        name: str,
        spec: AgentDef,
        types: dict[str, type[BaseModel]],
        tools: dict[str, Callable[..., Any]],
        agent_names: set[str],
        problems: list[Problem],
        mcp_servers: set[str] | None = None,
    ) -> None:
        self.mcp_servers = mcp_servers or set()
        self.name = name
        self.spec = spec
        self.types = types
        self.tools = tools
        self.agent_names = agent_names
        self.problems = problems
        self.base: Loc = ("agents", name)

    def attempt(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Problem as problem:
            self.problems.append(problem)
            return None
        except _Reported:
            return None

    def type_named(self, type_name: str, loc: Loc) -> type[BaseModel]:
        model = self.types.get(type_name)
        if model is None:
            raise Problem(
                loc,
                f"unknown type '{type_name}'",
                hint=did_you_mean(type_name, self.types).strip()
                or f"declare it under types: or import it (known: {', '.join(sorted(self.types)) or 'none'})",
                code="unknown-type",
            )
        return model

    def agent_named(self, agent: str, loc: Loc, allow_external: bool = False) -> str:
        if agent not in self.agent_names and not (allow_external and agent == "external"):
            known = self.agent_names | ({"external"} if allow_external else set())
            raise Problem(
                loc, f"unknown agent '{agent}'", hint=did_you_mean(agent, known).strip(), code="unknown-agent"
            )
        return agent

    def resolve(self) -> ResolvedAgent:
        spec, base = self.spec, self.base
        out = ResolvedAgent(self.name, spec)
        for i, consume in enumerate(spec.consumes):
            resolved = self.attempt(self.consume, i, consume)
            if resolved is not None:
                out.consumes.append(resolved)
        for i, publish in enumerate(spec.publishes):
            loc = (*base, "publishes", i)
            model = self.attempt(self.type_named, publish.type, (*loc, "type"))
            vis = self.attempt(self.visibility, publish.visibility, (*loc, "visibility"))
            if model is not None:
                out.outputs.append(ResolvedOutput(model, vis, publish.count))
        for i, engine in enumerate(spec.engine):
            fn = None
            if isinstance(engine, FunctionEngineDef):
                fn = self.attempt(
                    self.function, engine.function, (*base, "engine", i, "function"), "engine", (1, 2)
                )
            out.engines.append((engine, fn))
        for i, utility in enumerate(spec.utilities):
            component = self.attempt(self.utility, i, utility.use, utility.options)
            if component is not None:
                out.utilities.append(component)
        for i, tool_name in enumerate(spec.tools):
            server, dot, tool = tool_name.partition(".")
            if tool_name in self.tools:
                out.tools.append(self.tools[tool_name])
            elif dot and server in self.mcp_servers and tool:
                out.mcp_tools.append(tool_name)
            elif dot:
                known = ", ".join(sorted(self.mcp_servers)) or "none are declared"
                self.problems.append(
                    Problem(
                        (*base, "tools", i),
                        f"unknown MCP server '{server}' in tool '{tool_name}'",
                        hint=did_you_mean(server, self.mcp_servers).strip()
                        or f"declare it under mcp_servers (servers: {known})",
                        code="unknown-tool",
                    )
                )
            else:
                self.problems.append(
                    Problem(
                        (*base, "tools", i),
                        f"unknown tool '{tool_name}'",
                        hint=did_you_mean(tool_name, self.tools).strip() or "list it under imports.tools",
                        code="unknown-tool",
                    )
                )
        if spec.calls is not None:
            out.calls = self.attempt(self.function, spec.calls, (*base, "calls"), "calls function", (1,))
        if spec.best_of is not None:
            best = spec.best_of
            out.best_of_score = self.attempt(
                self.function, best.score, (*base, "best_of", "score"), "score", (1,)
            )
        if spec.retry is not None:
            out.retry = self.attempt(self.retry_policy)
        return out

    def consume(self, i: int, consume: ConsumeDef) -> ResolvedConsume:
        """One subscription; every independent mistake in it is reported, not just the first."""
        loc = (*self.base, "consumes", i)
        models = [self.type_named(t, (*loc, "types", j)) for j, t in enumerate(consume.types)]
        common = set.intersection(*(set(m.model_fields) for m in models))
        before = len(self.problems)
        where = [
            self.attempt(self.expression, text, common, (*loc, "where", j), "where")
            for j, text in enumerate(consume.where)
        ]
        join_by = None
        if consume.join is not None:
            if len(models) < 2:
                self.problems.append(
                    Problem(
                        (*loc, "join"),
                        "join correlates several artifacts; consume at least two types (or one type twice)",
                        code="join",
                        key=True,
                    )
                )
            elif consume.join.by not in ("correlation_id", "arrival"):
                join_by = self.attempt(
                    self.expression, consume.join.by, common, (*loc, "join", "by"), "join key"
                )
        for j, agent in enumerate(consume.from_agents or []):
            self.attempt(self.agent_named, agent, (*loc, "from", j), True)
        if consume.group is not None and consume.delivery != "exclusive":
            self.problems.append(
                Problem((*loc, "group"), "group only applies to delivery: exclusive", code="group", key=True)
            )
        if len(self.problems) > before:
            raise _Reported()
        return ResolvedConsume(consume, models, where, join_by)

    def expression(self, text: str, names: set[str], loc: Loc, purpose: str) -> Callable[[BaseModel], Any]:
        try:
            return compile_expression(text, names, purpose=purpose)
        except ExpressionError as exc:
            raise Problem(
                loc, exc.message, hint=exc.hint, code="expression", column=exc.column, token=exc.token
            ) from None

    def visibility(self, spec: Any, loc: Loc) -> Visibility | None:
        if spec is None:
            return None
        if spec.kind == "public":
            return PublicVisibility()
        if spec.kind == "private":
            for j, agent in enumerate(spec.agents):
                self.agent_named(agent, (*loc, "agents", j))
            return PrivateVisibility(agents=frozenset(spec.agents))
        if spec.kind == "labelled":
            return LabelledVisibility(required_labels=frozenset(spec.labels))
        if spec.kind == "tenant":
            return TenantVisibility(tenant_id=spec.tenant)
        from datetime import timedelta

        then = self.visibility(spec.then, (*loc, "then"))
        return AfterVisibility(ttl=timedelta(seconds=spec.ttl), then=then)

    def function(self, ref: str, loc: Loc, what: str, arities: tuple[int, ...]) -> Callable[..., Any]:
        """Import ``ref`` and check it can be called with one of ``arities`` positional arguments."""
        import inspect

        fn: Callable[..., Any] = import_object(ref, loc, what)
        if not callable(fn):
            raise Problem(loc, f"'{ref}' is not callable (the {what} must be a function)", code="import")
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return fn  # a builtin without a signature: trust it
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            return fn
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        if not any(len(required) <= n <= len(positional) for n in arities):
            takes = " or ".join(str(n) for n in arities)
            raise Problem(
                loc,
                f"'{ref}' takes {len(required)} argument(s); the {what} is called with {takes}",
                code="import",
            )
        return fn

    def utility(self, i: int, ref: str, options: dict[str, Any]) -> AgentComponent:
        loc = (*self.base, "utilities", i)
        cls = import_object(ref, (*loc, "use"), "utility")
        if not (isinstance(cls, type) and issubclass(cls, AgentComponent)):
            raise Problem((*loc, "use"), f"'{ref}' is not an AgentComponent class", code="utility")
        for key in options:
            if key not in cls.model_fields:  # the class would refuse it too; this names the line
                options_known = [k for k in cls.model_fields if not k.startswith("_")]
                raise Problem(
                    (*loc, "with", key),
                    f"'{ref}' has no option '{key}'",
                    hint=suggest(key, options_known, "valid options") or "it takes no options",
                    code="utility",
                    key=True,
                )
        try:
            return cls(**options)
        except Exception as exc:
            raise Problem(
                (*loc, "with"), f"cannot build '{ref}' with these options: {exc}", code="utility"
            ) from None

    def retry_policy(self) -> RetryPolicy:
        spec = self.spec.retry
        assert spec is not None
        errors: list[type[BaseException]] = []
        for j, name in enumerate(spec.retry_on):
            loc = (*self.base, "retry", "retry_on", j)
            if ":" in name:
                exc_type = import_object(name, loc, "exception")
            else:
                import flock_cli.errors as flock_errors

                exc_type = getattr(builtins, name, None) or getattr(flock_errors, name, None)
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                known = [n for n in dir(builtins) if n.endswith("Error")]
                raise Problem(
                    loc,
                    f"'{name}' is not an exception class",
                    hint=did_you_mean(name, known).strip(),
                    code="retry",
                )
            errors.append(exc_type)
        return RetryPolicy(
            max_attempts=spec.max_attempts,
            backoff=spec.backoff,
            initial_delay=spec.initial_delay,
            max_delay=spec.max_delay,
            jitter=spec.jitter,
            retry_on=tuple(errors) or (Exception,),
        )
