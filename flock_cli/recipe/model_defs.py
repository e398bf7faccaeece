"""The ``model:`` mapping of a recipe (at the top, or on a dspy engine): a model with its server,
its key's environment variable and its rate limit. The string form (``model: openai/gpt-4o``)
stays valid; ``flock_cli.engines.model_spec.Model`` is what a mapping compiles to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flock_cli.recipe.durations import Duration, parse_duration

__all__ = ["ModelDef", "ModelRateLimitDef"]


class _Raw(BaseModel):
    # as the other recipe models: unknown keys are errors, and no type is coerced
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class ModelRateLimitDef(_Raw):
    """How fast a model may be called, over every agent of the flock that uses it."""

    requests_per_minute: float | None = Field(
        default=None, gt=0, description="requests per minute (spaced evenly: one every 60/N seconds)"
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="input + output tokens per minute, counted from each answer's usage"
    )

    @model_validator(mode="after")
    def _something(self) -> ModelRateLimitDef:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("a rate_limit needs requests_per_minute, tokens_per_minute or both")
        return self


class ModelDef(_Raw):
    """A model given as a mapping: its name and how to reach it."""

    name: str = Field(min_length=1, pattern=r"\S", description="DSPy/LiteLLM model string (openai/NAME, ...)")
    api_base: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="base URL (http:// or https://) of an OpenAI-compatible (or other) server",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the API key (the key itself is never written here)",
    )
    rate_limit: ModelRateLimitDef | None = Field(default=None, description="requests/tokens per minute")
    max_rate_limit_wait: Duration | None = Field(
        default=None, description="how long one call may spend waiting out 429 answers (default 300 s)"
    )

    _seconds = field_validator("max_rate_limit_wait", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _enforceable(self) -> ModelDef:
        from flock_cli.engines.model_spec import local_settings_problem

        problem = local_settings_problem(self.name, self.model_dump(exclude_none=True))
        if problem is not None:
            raise ValueError(problem)
        return self
