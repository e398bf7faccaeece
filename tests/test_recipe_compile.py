"""Every recipe key reaches the runtime: the compiled Flock holds what the YAML declared."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flock_cli import (
    AfterVisibility,
    FunctionEngine,
    LabelledVisibility,
    ManualClock,
    PrivateVisibility,
    TenantVisibility,
    TestEngine,
)
from flock_cli.recipe import load_recipe

HELPERS = """
from pydantic import BaseModel
from flock_cli import AgentComponent, flock_type


@flock_type(name="Imported")
class Imported(BaseModel):
    value: int


class Stamp(AgentComponent):
    label: str = "x"


def double(inputs):
    return [{"n": a.payload["n"] * 2} for a in inputs.artifacts]


def score(result):
    return 1.0


def search(query: str) -> str:
    return query


SEEN = []


def remember(outputs):
    SEEN.extend(outputs)
"""

RECIPE = """
name: everything
description: uses every key
model: openai/gpt-4.1-mini
imports:
  types: ["compile_helpers:Imported"]
  tools: ["compile_helpers:search"]
settings:
  board: custom.db
  max_concurrency: 3
  max_agent_iterations: 7
  lease_ttl: 2m
types:
  Job:
    description: a job
    fields:
      n: {type: int, ge: 0, description: the number}
      key: {type: str, default: k}
      tags: {type: "list[str]", optional: true}
  Result:
    fields:
      n: int
agents:
  worker:
    description: doubles
    consumes:
      - types: Job
        where: ["n >= 0", "key == 'k'"]
        from: [external]
        channels: [fast]
        delivery: exclusive
        group: pool
        mode: events
        priority: 5
      - types: [Job, Job]
        join: {by: key, within: 30s, count_window: 4}
      - types: Imported
        batch: {size: 3, within: 1m}
        mode: direct
    publishes:
      - type: Result
        visibility: {kind: private, agents: [auditor, worker]}
        count: 1
    engine:
      - {kind: function, function: "compile_helpers:double"}
      - {kind: test, seed: 9, count: {Result: 1}}
    utilities:
      - use: compile_helpers:Stamp
        with: {label: hello}
    tools: [search]
    calls: compile_helpers:remember
    labels: [ops, eu]
    tenant: acme
    max_concurrency: 2
    best_of: {n: 3, score: "compile_helpers:score"}
    retry:
      max_attempts: 4
      backoff: linear
      initial_delay: 250ms
      max_delay: 10s
      jitter: false
      retry_on: [TimeoutError, "compile_helpers:Imported"]
    self_trigger: true
  auditor:
    consumes: Result
    publishes:
      - type: Imported
        visibility: {kind: after, ttl: 1h, then: {kind: labelled, labels: [ops]}}
      - type: Job
        visibility: {kind: tenant, tenant: acme}
    engine:
      kind: dspy
      model: ollama/llama3
      temperature: 0.2
      max_tokens: 200
      adapter: json
      cache: false
      retries: 1
"""


@pytest.fixture
def recipe_path(tmp_path: Path) -> Any:
    (tmp_path / "compile_helpers.py").write_text(HELPERS)
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    yield path
    sys.modules.pop("compile_helpers", None)


def test_an_imported_type_that_is_not_an_exception_is_refused(recipe_path: Path) -> None:
    from flock_cli.recipe import RecipeError

    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path)
    assert "'compile_helpers:Imported' is not an exception class" in str(caught.value)


def test_every_key_reaches_the_runtime(recipe_path: Path) -> None:
    text = recipe_path.read_text()
    recipe_path.write_text(
        text.replace('[TimeoutError, "compile_helpers:Imported"]', "[TimeoutError, ValueError]")
    )
    recipe = load_recipe(recipe_path)
    assert recipe.name == "everything"
    assert recipe.definition.settings.board == "custom.db"
    flock = recipe.build(engine_override="test", clock=ManualClock())
    assert flock.model == "openai/gpt-4.1-mini"
    assert (flock.max_agent_iterations, flock.max_concurrency, flock._lease_ttl) == (7, 3, 120.0)
    worker = flock.get_agent("worker")
    first, joined, batched = worker.subscriptions
    assert first.type_names == ("Job",)
    assert len(first.where) == 2
    assert first.from_agents == frozenset({"external"}) and first.channels == frozenset({"fast"})
    assert (first.delivery, first.group, first.mode, first.priority) == ("exclusive", "pool", "events", 5)
    assert joined.join is not None and joined.join.window == 30.0 and joined.join.count_window == 4
    assert joined.join.by is not None
    assert batched.batch is not None and (batched.batch.size, batched.batch.within) == (3, 60.0)
    assert batched.mode == "direct"
    [output] = worker.outputs
    assert output.type_name == "Result" and output.count == 1
    assert output.visibility == PrivateVisibility(agents=frozenset({"auditor", "worker"}))
    assert isinstance(worker.engines[0], FunctionEngine)
    assert isinstance(worker.engines[1], TestEngine) and worker.engines[1].seed == 9
    [stamp] = worker.utilities
    assert type(stamp).__name__ == "Stamp" and stamp.label == "hello"  # type: ignore[attr-defined]
    assert [t.__name__ for t in worker.tools] == ["search"]
    assert worker.calls_func is not None and worker.calls_func.__name__ == "remember"
    assert worker.labels == frozenset({"ops", "eu"}) and worker.tenant_id == "acme"
    assert worker.max_concurrency == 2
    assert worker.best_of_n == 3 and worker.best_of_score is not None
    policy = worker.retry_policy
    assert (policy.max_attempts, policy.backoff, policy.initial_delay, policy.max_delay, policy.jitter) == (
        4, "linear", 0.25, 10.0, False,
    )  # fmt: skip
    assert policy.retry_on == (TimeoutError, ValueError)
    assert worker.prevent_self_trigger is False
    auditor = flock.get_agent("auditor")
    embargo, tenant = (o.visibility for o in auditor.outputs)
    assert isinstance(embargo, AfterVisibility) and embargo.ttl == timedelta(hours=1)
    assert embargo.then == LabelledVisibility(required_labels=frozenset({"ops"}))
    assert tenant == TenantVisibility(tenant_id="acme")
    assert isinstance(auditor.engines[0], TestEngine)  # --engine test replaced the dspy engine
    assert auditor.prevent_self_trigger is True


async def test_compiled_where_and_join_key_work_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        textwrap.dedent(
            """
            types:
              Order: {fields: {order_id: str, amount: float}}
              Payment: {fields: {order_id: str, paid: float}}
              Receipt: {fields: {note: str}}
            agents:
              big_orders:
                consumes:
                  - types: Order
                    where: amount > 100
                publishes: Receipt
                engine: test
              matcher:
                consumes:
                  - types: [Order, Payment]
                    join: {by: order_id}
                publishes: Receipt
                engine: test
            """
        )
    )
    recipe = load_recipe(path)
    flock = recipe.build()
    order, payment = recipe.resolved.types["Order"], recipe.resolved.types["Payment"]
    await flock.publish(order(order_id="a", amount=50))
    await flock.publish(order(order_id="b", amount=500))
    await flock.publish(payment(order_id="b", paid=500))  # another correlation id: joined by order_id
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"big_orders": 1, "matcher": 1}
    assert summary.filtered == {"where": 1}
    assert [g.missing for g in summary.pending_groups] == [["Payment"]]  # order "a" waits for its payment
