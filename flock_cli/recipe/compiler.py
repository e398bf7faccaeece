"""Phase 8 of the loader: a checked recipe -> a :class:`~flock_cli.Flock`, through the Python API.

The compiler only calls the public builder, so a recipe can do nothing the Python API cannot. It
reads a loaded recipe through :class:`CompilableRecipe` (the loader's ``Recipe`` provides it), so
the loader may call the compiler without the two importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flock_cli.core.components import EngineComponent
from flock_cli.core.specs import BatchSpec, JoinSpec
from flock_cli.engines import FunctionEngine, TestEngine
from flock_cli.engines.dspy_engine import DSPyEngine
from flock_cli.engines.local import local_model_installed
from flock_cli.engines.model_spec import Model, model_name
from flock_cli.engines.models import MODEL_ENVS, named_model
from flock_cli.engines.recording import Recording
from flock_cli.recipe.diagnostics import Diagnostic, Problem, RecipeError
from flock_cli.recipe.mcp_defs import McpServerDef
from flock_cli.recipe.model import (
    DSPyEngineDef,
    DSPyOptionsDef,
    FunctionEngineDef,
    RecipeDef,
    TestEngineDef,
)
from flock_cli.recipe.model_checks import conflict
from flock_cli.recipe.model_defs import ModelDef
from flock_cli.recipe.resolve import ResolvedAgent, ResolvedRecipe

if TYPE_CHECKING:
    from flock_cli.core.orchestrator import Flock
    from flock_cli.store.contract import BlackboardStore

__all__ = ["ENGINE_OVERRIDES", "CompilableRecipe", "check_compilable", "compile_recipe", "register_types"]

ENGINE_OVERRIDES = ("test",)


class CompilableRecipe(Protocol):
    """What the compiler reads of a loaded, checked recipe (the loader's ``Recipe``)."""

    @property
    def definition(self) -> RecipeDef:
        """The merged recipe model."""
        ...

    @property
    def resolved(self) -> ResolvedRecipe:
        """Every name of the recipe resolved to an object."""
        ...

    @property
    def path(self) -> Path:
        """The root recipe file (relative paths in it are relative to its folder)."""
        ...

    @property
    def recording_path(self) -> Path | None:
        """The file of the recipe's ``recording:``, if it names one."""
        ...

    def diagnostic(self, problem: Problem) -> Diagnostic:
        """Place a problem found while compiling in the recipe's files."""
        ...


def compile_recipe(
    recipe: CompilableRecipe,
    *,
    store: BlackboardStore | None = None,
    model: str | None = None,
    engine_override: str | None = None,
    replay: Recording | None = None,
    **flock_options: Any,
) -> Flock:
    """Build the flock a recipe declares.

    Args:
        store: the blackboard (default: in memory; the CLI opens ``settings.board``).
        model: overrides the recipe's ``model:`` (the CLI's ``--model``).
        engine_override: ``"test"`` runs every model-backed (dspy) engine on the offline test
            engine instead; function and test engines are kept.
        replay: recorded answers every dspy engine gives instead of calling a model (the CLI's
            ``--replay``/``--replay-from``). Without it, a dspy engine with no model configured
            replays the recipe's own ``recording:``.
        flock_options: passed to :class:`~flock_cli.Flock` (``clock``, ``id_factory``, ...).
    """
    from flock_cli.core.orchestrator import Flock

    check_compilable(recipe, engine_override, model, replay)
    settings = recipe.definition.settings
    options: dict[str, Any] = {
        "max_agent_iterations": settings.max_agent_iterations,
        "max_concurrency": settings.max_concurrency,
        "lease_ttl": settings.lease_ttl,
        **flock_options,
    }
    budget = recipe.definition.budget
    if budget is not None:
        options.setdefault("budget", budget.model_dump())
    models = _Models(recipe)
    flock = Flock(model or models.get(recipe.definition.model, ("model",)), store=store, **options)
    register_types(flock, recipe)
    for name, server in recipe.definition.mcp_servers.items():
        flock.mcp_server(name, **mcp_server_options(server, recipe.path.parent))
    recordings = _Recordings(recipe, replay)
    for agent in recipe.resolved.agents.values():
        _compile_agent(
            flock, agent, model_override=model, engine_override=engine_override, recordings=recordings,
            models=models,
        )  # fmt: skip
    return flock


class _Models:
    """One :class:`Model` per distinct model mapping (name and ``api_base``) of a recipe, so the
    agents that use a model share its rate limiter. Two mappings of one model that differ
    (another rate limit, another key) are an error: which one would hold?"""

    def __init__(self, recipe: CompilableRecipe) -> None:
        self.recipe = recipe
        self._seen: dict[tuple[str, str | None], tuple[Model, ModelDef]] = {}

    def get(self, value: str | ModelDef | None, path: tuple[str | int, ...]) -> str | Model | None:
        if not isinstance(value, ModelDef):
            return value
        key = (value.name.strip(), value.api_base)
        found = self._seen.get(key)
        if found is None:
            spec = Model(**value.model_dump(exclude_none=True))
            self._seen[key] = (spec, value)
            return spec
        if found[1] != value:  # load_recipe says so first; a recipe built otherwise, here
            raise RecipeError([self.recipe.diagnostic(conflict(path, value))])
        return found[0]


def _dspy_options(engine: DSPyEngineDef, defaults: DSPyOptionsDef) -> dict[str, Any]:
    """The engine's options: its own, else the recipe's ``dspy:`` defaults, else DSPyEngine's."""
    options = {}
    for name in DSPyOptionsDef.model_fields:
        value = getattr(engine, name)
        if value is None:
            value = getattr(defaults, name)
        if value is not None:
            options[name] = value
    return options


def _model_named(recipe: CompilableRecipe, model: str | None, engine: DSPyEngineDef) -> bool:
    """True when a model is named for a dspy engine (--model first). A named model wins over the
    recipe's recording; the recording wins over the local model."""
    return (
        named_model(model or model_name(_spec(engine.model)), model_name(_spec(recipe.definition.model)))
        is not None
    )


def _spec(value: str | ModelDef | None) -> str | None:
    return value.name if isinstance(value, ModelDef) else value


class _Recordings:
    """The recording each dspy engine replays: the one given, else the recipe's own for engines
    with no model (read once, when the first of them needs it)."""

    def __init__(self, recipe: CompilableRecipe, replay: Recording | None) -> None:
        self.recipe, self.replay = recipe, replay
        self._own: Recording | None = None

    def for_engine(self, model: str | None, engine: DSPyEngineDef) -> Recording | None:
        if self.replay is not None:
            return self.replay
        path = self.recipe.recording_path
        if path is None or _model_named(self.recipe, model, engine):
            return None
        if self._own is None:
            self._own = Recording.from_file(path)
        return self._own


def register_types(flock: Flock, recipe: CompilableRecipe) -> None:
    """Make every type of the recipe (declared and imported) known to ``flock``."""
    for type_model in dict.fromkeys(recipe.resolved.types.values()):
        flock.register_type(type_model)


def check_compilable(
    recipe: CompilableRecipe,
    engine_override: str | None,
    model: str | None = None,
    replay: Recording | None = None,
) -> None:
    """Raise what :func:`compile_recipe` would refuse, without building anything: an unknown
    override, a missing ``recording:`` file, or a dspy engine with neither a model to call nor a
    recording to replay (``model`` is the CLI's ``--model``)."""
    if engine_override is not None and engine_override not in ENGINE_OVERRIDES:
        from flock_cli.errors import UsageError

        raise UsageError(
            f"unknown engine override '{engine_override}'; choose from: {', '.join(ENGINE_OVERRIDES)}"
        )
    if engine_override == "test" or replay is not None:
        return
    problems: list[Problem] = []
    recording = recipe.recording_path
    unnamed = [  # dspy engines with no model named: they replay the recording (or need a model)
        (agent, i, engine)
        for agent in recipe.resolved.agents.values()
        for i, (engine, _) in enumerate(agent.engines)
        if isinstance(engine, DSPyEngineDef) and not _model_named(recipe, model, engine)
    ]
    if not unnamed:
        return
    if recording is not None and not recording.is_file():
        problems.append(
            Problem(
                ("recording",),
                f"recording '{recipe.definition.recording}' not found (looked for {recording})",
                hint="record one with `flock run --model MODEL`, then"
                " `flock trace export RUN --format recording -o FILE`",
                code="recording-missing",
            )
        )
        raise RecipeError([recipe.diagnostic(p) for p in problems])  # the agents' model errors would be noise
    if recording is not None or local_model_installed():
        return
    for agent, i, _engine in unnamed:
        declared = "engine" in agent.spec.model_fields_set  # else the default: point at the agent
        problems.append(
            Problem(
                ("agents", agent.name, "engine", i) if declared else ("agents", agent.name),
                f"agent '{agent.name}' uses the dspy engine but no model is configured",
                hint="give one with --model MODEL, `model:` on the engine or at the top of the"
                f" recipe, or {' / '.join(MODEL_ENVS)}; or replay recorded answers (`recording:`,"
                " --replay RUN); or run offline with --engine test",
                code="model-missing",
                key=not declared,
            )
        )
    if problems:
        raise RecipeError([recipe.diagnostic(p) for p in problems])


def _compile_agent(
    flock: Flock,
    agent: ResolvedAgent,
    *,
    model_override: str | None,
    engine_override: str | None,
    recordings: _Recordings,
    models: _Models,
) -> None:
    spec = agent.spec
    builder = flock.agent(agent.name).description(spec.description)
    for consume in agent.consumes:
        c = consume.spec
        join = None
        if c.join is not None:
            by = "arrival" if c.join.by == "arrival" else consume.join_by
            join = JoinSpec(window=c.join.within, count_window=c.join.count_window, by=by)
        batch = BatchSpec(size=c.batch.size, within=c.batch.within) if c.batch is not None else None
        builder.consumes(
            *consume.models,
            where=consume.where or None,
            from_agents=c.from_agents,
            channels=c.channels,
            join=join,
            batch=batch,
            delivery=c.delivery,
            group=c.group,
            mode=c.mode,
            priority=c.priority,
        )
    for output in agent.outputs:
        builder.publishes(output.model, visibility=output.visibility, count=output.count)
    engines: list[EngineComponent] = []
    for i, (engine, fn) in enumerate(agent.engines):
        if isinstance(engine, FunctionEngineDef):
            assert fn is not None  # resolve() reported a failed import already
            engines.append(FunctionEngine(fn))
        elif isinstance(engine, TestEngineDef):
            engines.append(TestEngine(seed=engine.seed, count=engine.count, latency=engine.latency))
        elif engine_override == "test":
            engines.append(TestEngine())
        else:
            options = _dspy_options(engine, recordings.recipe.definition.dspy)
            engines.append(
                DSPyEngine(
                    # --model wins over the agent's own
                    model=model_override
                    or models.get(engine.model, ("agents", agent.name, "engine", i, "model")),
                    replay=recordings.for_engine(model_override, engine),
                    **options,
                )
            )
    builder.with_engines(*engines)
    if agent.utilities:
        # a fresh copy per flock: components may keep state, and two builds must not share it
        builder.with_utilities(*(u.model_copy(deep=True) for u in agent.utilities))
    if agent.tools or agent.mcp_tools:
        builder.with_tools([*agent.tools, *agent.mcp_tools])
    if agent.calls is not None:
        builder.calls(agent.calls)
    if spec.labels:
        builder.labels(*spec.labels)
    if spec.tenant is not None:
        builder.tenant(spec.tenant)
    if spec.max_concurrency is not None:
        builder.max_concurrency(spec.max_concurrency)
    if spec.budget is not None:
        builder.budget(spec.budget.model_dump())
    if spec.best_of is not None and agent.best_of_score is not None:
        builder.best_of(spec.best_of.n, agent.best_of_score)
    if agent.retry is not None:
        builder.with_retry_policy(agent.retry)
    builder.prevent_self_trigger(not spec.self_trigger)


def mcp_server_options(server: McpServerDef, folder: Path) -> dict[str, Any]:
    """The ``Flock.mcp_server`` options of a recipe's server; a relative ``cwd`` is taken from
    the recipe's folder, and a command's working directory defaults to that folder."""
    options = server.model_dump(exclude_none=True)
    if server.command is not None:
        options["cwd"] = str((folder / server.cwd) if server.cwd is not None else folder)
    return options
