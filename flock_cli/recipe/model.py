"""Phase 3 of the loader: the recipe format as Pydantic models (what the YAML may say).

Every model forbids unknown keys, so a misspelt key is an error and never silently dropped.
Short forms (``engine: test``, ``publishes: [Review]``, a field written as ``title: str``) are
expanded by ``before`` validators, so later phases see one shape. The JSON Schema in
``schemas/recipe.schema.json`` is generated from these models (``flock schema``).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from flock_cli.recipe.durations import MAX_SECONDS, Delay, Duration, parse_duration
from flock_cli.recipe.mcp_defs import McpServerDef
from flock_cli.recipe.model_defs import ModelDef, ModelRateLimitDef

__all__ = [
    "ENGINE_KINDS",
    "MAX_SECONDS",
    "VISIBILITY_KINDS",
    "AgentDef",
    "BatchDef",
    "BestOfDef",
    "BudgetDef",
    "ConsumeDef",
    "DSPyEngineDef",
    "DSPyOptionsDef",
    "Delay",
    "Duration",
    "EngineDef",
    "FieldDef",
    "FunctionEngineDef",
    "ImportsDef",
    "JoinDef",
    "McpServerDef",
    "ModelDef",
    "ModelRateLimitDef",
    "PublishDef",
    "RecipeDef",
    "RetryDef",
    "SettingsDef",
    "TestEngineDef",
    "TypeDef",
    "UtilityDef",
    "VisibilityDef",
    "parse_duration",
]

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
ImportRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"),
    Field(description="a Python object as 'package.module:Name'"),
]
TypeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]
AgentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")]
Scalar = str | int | float | bool


class _Raw(BaseModel):
    # strict: "3" is not a number and "yes" is not a bool, exactly as the JSON Schema says
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


def _kind_shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class FieldDef(_Raw):
    """One field of a declared type."""

    type: str = Field(
        description="str, int, float, bool, date, datetime, any, a declared or imported type,"
        " list[T] or dict[T] (string keys)"
    )
    description: str | None = None
    default: Any = None
    optional: bool = Field(default=False, description="the field may be null (default null)")
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: float | None = Field(default=None, gt=0)
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    pattern: str | None = Field(default=None, description="a regular expression the string must match")
    enum: list[Scalar] | None = Field(default=None, min_length=1)


def _field_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class TypeDef(_Raw):
    """An artifact type declared in the recipe."""

    description: str | None = None
    fields: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], FieldDef] = Field(
        min_length=1
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _field_shorthand(v) for k, v in value.items()}
        return value


class ImportsDef(_Raw):
    """Python-defined types and tools the recipe uses."""

    types: list[ImportRef] = Field(default_factory=list)
    tools: list[ImportRef] = Field(default_factory=list)


class JoinDef(_Raw):
    """Correlate the artifacts of an AND gate into groups."""

    by: str = Field(
        default="correlation_id",
        description="correlation_id (one workflow per group), arrival (first in, first out across"
        " workflows), or an expression over the payload giving the key",
    )
    within: Duration | None = Field(
        default=None, description="a group expires this long after its first artifact"
    )
    count_window: int | None = Field(default=None, ge=1)

    _seconds = field_validator("within", mode="before")(parse_duration)


class BatchDef(_Raw):
    """Deliver artifacts in batches: at ``size`` items or ``within`` a time, whichever first."""

    size: int | None = Field(default=None, ge=1)
    within: Duration | None = None

    _seconds = field_validator("within", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> BatchDef:
        if self.size is None and self.within is None:
            raise ValueError("a batch needs size, within, or both")
        return self


class ConsumeDef(_Raw):
    """One subscription. Several types form an AND gate; several entries are alternatives (OR)."""

    types: list[TypeName] = Field(min_length=1)
    where: list[str] = Field(default_factory=list, description="expressions over the payload; all must hold")
    from_agents: list[AgentName] | None = Field(default=None, alias="from")
    channels: list[str] | None = None
    join: JoinDef | None = None
    batch: BatchDef | None = None
    delivery: Literal["exclusive", "shared"] = "exclusive"
    group: str | None = None
    mode: Literal["events", "direct", "both"] = "both"
    priority: Int32 = 0

    @field_validator("types", "where", "from_agents", "channels", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PrivateDef(_Raw):
    kind: Literal["private"]
    agents: list[AgentName] = Field(min_length=1)


class PublicDef(_Raw):
    kind: Literal["public"]


class LabelledDef(_Raw):
    kind: Literal["labelled"]
    labels: list[str] = Field(min_length=1)


class TenantDef(_Raw):
    kind: Literal["tenant"]
    tenant: str


class AfterDef(_Raw):
    kind: Literal["after"]
    ttl: Duration
    then: VisibilityDef | None = None

    _seconds = field_validator("ttl", mode="before")(parse_duration)
    _short = field_validator("then", mode="before")(_kind_shorthand)


VisibilityDef = Annotated[
    PublicDef | PrivateDef | LabelledDef | TenantDef | AfterDef, Field(discriminator="kind")
]


class PublishDef(_Raw):
    """One output type."""

    type: TypeName
    visibility: VisibilityDef | None = None
    count: int | None = Field(default=None, ge=0, description="artifacts of this type per run (any if unset)")

    _short = field_validator("visibility", mode="before")(_kind_shorthand)


class TestEngineDef(_Raw):
    """The offline test engine: schema-valid outputs from a seed."""

    __test__ = False
    kind: Literal["test"]
    seed: int = 0
    count: int | dict[str, int] | None = None
    latency: Delay = 0.0
    _latency = field_validator("latency", mode="before")(parse_duration)


class FunctionEngineDef(_Raw):
    """A Python function ``fn(inputs)`` or ``fn(inputs, ctx)``."""

    kind: Literal["function"]
    function: ImportRef


class DSPyOptionsDef(_Raw):
    """Options of dspy engines: each engine's own, or the recipe's defaults for all of them."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    adapter: Literal["chat", "json"] | None = None
    cache: bool | None = None
    retries: int | None = Field(default=None, ge=0)
    max_iters: int | None = Field(default=None, ge=1, description="tool-use steps of agents with tools")


class DSPyEngineDef(DSPyOptionsDef):
    """An LLM call through DSPy."""

    kind: Literal["dspy"]
    model: str | ModelDef | None = None


EngineDef = Annotated[TestEngineDef | FunctionEngineDef | DSPyEngineDef, Field(discriminator="kind")]


def _kinds(union: Any) -> tuple[str, ...]:
    """The ``kind`` tags of a discriminated union, in declaration order."""
    members = typing.get_args(typing.get_args(union)[0])
    return tuple(typing.get_args(m.model_fields["kind"].annotation)[0] for m in members)


ENGINE_KINDS = _kinds(EngineDef)
VISIBILITY_KINDS = _kinds(VisibilityDef)


class UtilityDef(_Raw):
    """An agent component (a class) and the options it is built with."""

    use: ImportRef
    options: dict[str, Any] = Field(default_factory=dict, alias="with")


class BestOfDef(_Raw):
    """Run the engine ``n`` times concurrently and keep the best result by ``score``."""

    n: int = Field(ge=1)
    score: ImportRef


class RetryDef(_Raw):
    """Retry a failed run."""

    max_attempts: int = Field(default=3, ge=1)
    backoff: Literal["exponential", "linear", "constant"] = "exponential"
    initial_delay: Delay = 1.0
    max_delay: Delay = 60.0
    jitter: bool = True
    retry_on: list[str] = Field(
        default_factory=list, description="exception names (builtins or 'module:Name'); default: any error"
    )

    _seconds = field_validator("initial_delay", "max_delay", mode="before")(parse_duration)


class BudgetDef(_Raw):
    """Limits on model usage; checked before each run starts (the run that crosses one finishes)."""

    tokens: int | None = Field(default=None, ge=1, description="input and output tokens")
    cost: float | None = Field(default=None, gt=0, description="cost as the model reports it")
    calls: int | None = Field(default=None, ge=1, description="model calls")
    on_exhausted: Literal["pause", "stop"] = Field(
        default="pause", description="pause: hold the runs it covers; stop: hold every run from then on"
    )


def _default_engine() -> list[EngineDef]:
    return [DSPyEngineDef(kind="dspy")]


class AgentDef(_Raw):
    """One agent."""

    description: str = ""
    consumes: list[ConsumeDef] = Field(default_factory=list)
    publishes: list[PublishDef] = Field(default_factory=list)
    engine: list[EngineDef] = Field(
        default_factory=_default_engine,
        description="one engine or a chain; a plain name is short for {kind: name}",
    )
    utilities: list[UtilityDef] = Field(default_factory=list)
    tools: list[str] = Field(
        default_factory=list, description="tools from imports.tools, and MCP tools: server.tool or server.*"
    )
    calls: ImportRef | None = Field(default=None, description="a function called with each run's outputs")
    labels: list[str] = Field(default_factory=list)
    tenant: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    budget: BudgetDef | None = None
    best_of: BestOfDef | None = None
    retry: RetryDef | None = None
    self_trigger: bool = Field(default=False, description="may consume its own outputs")

    @field_validator("consumes", mode="before")
    @classmethod
    def _consumes(cls, value: Any) -> Any:
        items = _one_or_many(value)
        return [{"types": [v]} if isinstance(v, str) else v for v in items]

    @field_validator("publishes", mode="before")
    @classmethod
    def _publishes(cls, value: Any) -> Any:
        return [{"type": v} if isinstance(v, str) else v for v in _one_or_many(value)]

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> Any:
        return [_kind_shorthand(v) for v in _one_or_many(value)]

    @field_validator("utilities", mode="before")
    @classmethod
    def _utilities(cls, value: Any) -> Any:
        return [{"use": v} if isinstance(v, str) else v for v in _one_or_many(value)]

    @field_validator("labels", "tools", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RateLimitDef(_Raw):
    """Requests one token may make to ``flock serve``."""

    requests_per_second: float = Field(
        default=50.0, gt=0, le=1_000_000, description="average requests per second"
    )
    burst: int = Field(
        default=100, ge=1, le=1_000_000, description="requests at once before the average applies"
    )


class ServeDef(_Raw):
    """Defaults of ``flock serve`` for this recipe (its command-line options override them)."""

    host: str | None = Field(default=None, description="address to listen on (default 127.0.0.1)")
    port: int | None = Field(default=None, ge=0, le=65535, description="port (default 8344)")
    tokens: str | None = Field(default=None, description="token file, relative to this recipe file")
    tokens_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the token file's text",
    )
    max_body_bytes: int | None = Field(
        default=None, ge=1024, description="largest request body (default 1 MiB)"
    )
    rate_limit: RateLimitDef | None = Field(default=None, description="requests per token")
    max_pending: int | None = Field(
        default=None, ge=1, description="open deliveries above which publishes answer 429 (default 10000)"
    )
    max_streams_per_token: int | None = Field(
        default=None, ge=1, le=100_000, description="event streams one token may hold open (default 32)"
    )
    shutdown_timeout: Duration | None = Field(
        default=None, description="how long a stopping service lets runs finish (default 30 s)"
    )

    _seconds = field_validator("shutdown_timeout", mode="before")(parse_duration)


class SettingsDef(_Raw):
    """Settings of the whole flock."""

    board: str | None = Field(
        default=None, description="the durable board: a SQLite file, a postgresql:// URL, or :memory:"
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="concurrent runs (unlimited if unset)"
    )
    max_agent_iterations: int = Field(
        default=1000, ge=1, description="circuit breaker: runs per agent per run"
    )
    lease_ttl: Duration | None = Field(
        default=None, description="how long a run holds its lease (default 300 s; 30 s on a shared board)"
    )
    serve: ServeDef = Field(default_factory=ServeDef, description="defaults of flock serve")

    _seconds = field_validator("lease_ttl", mode="before")(parse_duration)


McpServerName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]


class RecipeDef(_Raw):
    """A recipe file."""

    model_config = ConfigDict(title="Flock-Flow recipe")

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    include: list[str] = Field(default_factory=list, description="recipe files merged into this one")
    imports: ImportsDef = Field(default_factory=ImportsDef)
    model: str | ModelDef | None = Field(
        default=None, description="default model of dspy engines: a model string or a mapping"
    )
    dspy: DSPyOptionsDef = Field(
        default_factory=DSPyOptionsDef, description="defaults for every dspy engine's options"
    )
    budget: BudgetDef | None = Field(default=None, description="limits on the model usage of all agents")
    recording: str | None = Field(
        default=None,
        description="recorded model answers (JSON lines, relative to this file) that dspy engines"
        " replay when no model is configured",
    )
    settings: SettingsDef = Field(default_factory=SettingsDef)
    mcp_servers: dict[McpServerName, McpServerDef] = Field(
        default_factory=dict, description="MCP servers whose tools agents may use (server.tool)"
    )
    types: dict[TypeName, TypeDef] = Field(default_factory=dict)
    agents: dict[AgentName, AgentDef] = Field(default_factory=dict)

    @field_validator("include", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value
