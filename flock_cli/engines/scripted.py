"""TestEngine: deterministic, schema-valid outputs with no model at all."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

from flock_cli.core.agent import Agent, OutputDecl
from flock_cli.core.components import Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.engines.sampling import SampleError, sample
from flock_cli.errors import OutputError

__all__ = ["TestEngine"]


class TestEngine(EngineComponent):
    """Produces instances of every type the agent publishes, valid against its schema.

    Values depend only on ``seed``, the agent's name, the output type and the input payloads, so
    the same inputs give the same outputs in every run. ``count`` is one number for every type or
    a mapping from type name (canonical or bare class name) to a number; when it is None (the
    default) each type gets the ``count`` its ``publishes`` declared, or one. ``latency`` makes
    each evaluation take that many seconds, so offline runs pace like real ones (to watch with
    ``flock top``, or to exercise timeouts and concurrency limits).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    seed: int = 0
    count: int | dict[str, int] | None = None
    attempts: int = Field(default=20, ge=1)
    latency: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def _count_for(self, decl: OutputDecl) -> int:
        if self.count is None:
            return 1 if decl.count is None else decl.count
        if isinstance(self.count, int):
            return self.count
        short = decl.type_name.rsplit(".", 1)[-1]
        return self.count.get(decl.type_name, self.count.get(short, 0))

    async def evaluate(self, agent: Agent, ctx: Context, inputs: EvalInputs) -> EvalResult:
        """Sample each declared output type (after ``latency`` seconds)."""
        if self.latency:
            await asyncio.sleep(self.latency)
        fingerprint = json.dumps([a.payload for a in inputs.artifacts], sort_keys=True, default=str)
        outputs: list[BaseModel] = []
        for decl in agent.outputs:
            for index in range(self._count_for(decl)):
                key = f"{self.seed}|{agent.name}|{decl.type_name}|{index}|{fingerprint}"
                outputs.append(self._one(decl.model, key))
        return EvalResult(artifacts=outputs, metrics={"test_engine_outputs": len(outputs)})

    def _one(self, model: type[BaseModel], key: str) -> BaseModel:
        schema = _schema(model)
        last: Exception | None = None
        for retry in range(self.attempts):
            digest = hashlib.sha256(f"{key}|{retry}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            try:
                return model.model_validate(sample(schema, rng))
            except (SampleError, ValidationError) as exc:
                last = exc
        raise OutputError(
            f"TestEngine could not produce a valid {model.__name__} in {self.attempts} tries: {last}"
        )


@functools.lru_cache(maxsize=512)
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    # Generating a JSON Schema costs more than sampling from it; types do not change at run time.
    return model.model_json_schema()
