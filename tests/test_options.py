"""Every public option-taking class refuses an unknown option, by name, with a suggestion.

A misspelt option that is silently dropped (``TestEngine(sede=1)``, ``AgentIdentity(tenant="acme")``)
changes what a flock does without a word. The Python API refuses it the way a recipe refuses an
unknown key: a :class:`~flock_cli.UserError` naming the class and the option, with "Did you mean"
from the same helper the recipe loader uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from flock_cli import (
    AfterVisibility,
    AgentComponent,
    AgentIdentity,
    Artifact,
    BatchSpec,
    Budget,
    DSPyEngine,
    EngineComponent,
    EvalInputs,
    EvalResult,
    Flock,
    FunctionEngine,
    InvalidDeclarationError,
    JoinSpec,
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    RetryPolicy,
    TenantVisibility,
    TestEngine,
    UserError,
)
from flock_cli.recipe import RecipeError, load_recipe
from tests.models import Result, Task


def refused(build: Callable[[], Any]) -> str:
    with pytest.raises(InvalidDeclarationError) as caught:
        build()
    assert isinstance(caught.value, UserError)
    return str(caught.value)


# -- the classes of the public API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: DSPyEngine(theme="cyberpunk"),
            "DSPyEngine has no option 'theme'. Valid options: name, priority, model, temperature,"
            " max_tokens, adapter, cache, stream, retries, max_iters, lm, replay.",
            id="DSPyEngine",
        ),
        pytest.param(
            lambda: DSPyEngine(temprature=0.2),
            "DSPyEngine has no option 'temprature'. Did you mean 'temperature'?",
            id="DSPyEngine-typo",
        ),
        pytest.param(
            lambda: TestEngine(bogus=1),
            "TestEngine has no option 'bogus'."
            " Valid options: name, priority, seed, count, attempts, latency.",
            id="TestEngine",
        ),
        pytest.param(
            lambda: TestEngine(sede=1),
            "TestEngine has no option 'sede'. Did you mean 'seed'?",
            id="TestEngine-typo",
        ),
        pytest.param(
            lambda: FunctionEngine(lambda inputs: None, prority=3),
            "FunctionEngine has no option 'prority'. Did you mean 'priority'?",
            id="FunctionEngine",
        ),
        pytest.param(
            lambda: AgentComponent(nme="x"),
            "AgentComponent has no option 'nme'. Did you mean 'name'?",
            id="AgentComponent",
        ),
        pytest.param(
            lambda: EngineComponent(priorty=1),
            "EngineComponent has no option 'priorty'. Did you mean 'priority'?",
            id="EngineComponent",
        ),
        pytest.param(
            lambda: RetryPolicy(max_atempts=2),
            "RetryPolicy has no option 'max_atempts'. Did you mean 'max_attempts'?",
            id="RetryPolicy",
        ),
        pytest.param(
            lambda: Budget(token=3), "Budget has no option 'token'. Did you mean 'tokens'?", id="Budget"
        ),
        pytest.param(
            lambda: BatchSpec(size=2, withn=1),
            "BatchSpec has no option 'withn'. Did you mean 'within'?",
            id="BatchSpec",
        ),
        pytest.param(
            lambda: JoinSpec(windw=1), "JoinSpec has no option 'windw'. Did you mean 'window'?", id="JoinSpec"
        ),
        pytest.param(
            lambda: AgentIdentity(name="a", tenant="acme"),
            "AgentIdentity has no option 'tenant'. Did you mean 'tenant_id'?",
            id="AgentIdentity",
        ),
        pytest.param(
            lambda: PublicVisibility(agents=["a"]),
            "PublicVisibility has no option 'agents'. Valid options: kind.",
            id="PublicVisibility",
        ),
        pytest.param(
            lambda: PrivateVisibility(agent=["a"]),
            "PrivateVisibility has no option 'agent'. Did you mean 'agents'?"
            " Invalid PrivateVisibility: agents: Field required",
            id="PrivateVisibility",
        ),
        pytest.param(
            lambda: LabelledVisibility(labels={"x"}),
            "LabelledVisibility has no option 'labels'. Valid options: kind, required_labels."
            " Invalid LabelledVisibility: required_labels: Field required",
            id="LabelledVisibility",
        ),
        pytest.param(
            lambda: TenantVisibility(tenant_id="acme", labels=["x"]),
            "TenantVisibility has no option 'labels'. Valid options: kind, tenant_id.",
            id="TenantVisibility",
        ),
        pytest.param(
            lambda: AfterVisibility(ttl=timedelta(hours=1), than=PublicVisibility()),
            "AfterVisibility has no option 'than'. Did you mean 'then'?",
            id="AfterVisibility",
        ),
        pytest.param(
            lambda: Artifact(type="Task", payload={}, visiblity=PublicVisibility()),
            "Artifact has no option 'visiblity'. Did you mean 'visibility'?",
            id="Artifact",
        ),
    ],
)
def test_unknown_options_are_refused_with_a_suggestion(build: Callable[[], Any], message: str) -> None:
    assert refused(build) == message


def test_wrong_values_are_user_errors_naming_the_class_and_option() -> None:
    assert refused(lambda: TestEngine(seed="x")) == (
        "Invalid TestEngine: seed: Input should be a valid integer, unable to parse string as an integer"
    )
    assert refused(lambda: DSPyEngine(temperature=5)) == (
        "Invalid DSPyEngine: temperature: Input should be less than or equal to 2"
    )


def test_several_unknown_options_are_all_named() -> None:
    assert refused(lambda: TestEngine(sede=1, bogus=2)) == (
        "TestEngine has no option 'sede'. Did you mean 'seed'?"
        " TestEngine has no option 'bogus'. Valid options: name, priority, seed, count, attempts, latency."
    )


def test_dict_specs_given_to_the_builder_name_the_option() -> None:
    flock = Flock()
    message = refused(lambda: flock.agent("a").consumes(Task, batch={"size": 3, "whithin": 1}))
    assert message == "Invalid batch= option: BatchSpec has no option 'whithin'. Did you mean 'within'?"
    assert refused(lambda: flock.agent("b").budget({"token": 2})) == (
        "Invalid budget= option: Budget has no option 'token'. Did you mean 'tokens'?"
    )


# -- user-defined components --------------------------------------------------------------------


class VectorStore:
    """Stands in for a client object a custom engine holds (not a Pydantic type)."""

    def __init__(self, documents: list[str]) -> None:
        self.documents = documents

    def search(self, text: str, top_k: int) -> list[str]:
        return [d for d in self.documents if text in d][:top_k]


class VectorSearchEngine(EngineComponent):
    """The design's custom engine: declared fields, one of them an arbitrary object."""

    vector_store: VectorStore
    top_k: int = 5

    async def evaluate(self, agent: Any, ctx: Any, inputs: EvalInputs) -> EvalResult:
        found = [
            hit for task in inputs.all_as(Task) for hit in self.vector_store.search(str(task.n), self.top_k)
        ]
        return EvalResult(artifacts=[Result(n=len(found), by=agent.name)])


def test_custom_engine_keeps_its_declared_fields_and_works() -> None:
    engine = VectorSearchEngine(vector_store=VectorStore(["1a", "1b", "2"]), top_k=1)
    assert engine.top_k == 1
    flock = Flock()
    search = flock.agent("search").consumes(Task).publishes(Result).with_engines(engine)
    [output] = flock.run(search, Task(n=1))
    assert output.as_model(Result) == Result(n=1, by="search")


def test_custom_engine_refuses_an_unknown_option_like_the_shipped_ones() -> None:
    store = VectorStore([])
    assert refused(lambda: VectorSearchEngine(vector_store=store, topk=3)) == (
        "VectorSearchEngine has no option 'topk'. Did you mean 'top_k'?"
    )
    assert refused(lambda: VectorSearchEngine(top_k=3)) == (
        "Invalid VectorSearchEngine: vector_store: Field required"
    )


# -- the recipe path says the same --------------------------------------------------------------


def test_recipe_utility_option_and_python_say_the_same(tmp_path: Path) -> None:
    (tmp_path / "recipe_options_audit.py").write_text(
        dedent(
            """\
            from flock_cli import AgentComponent

            class Audit(AgentComponent):
                label: str = "x"
            """
        )
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(
        dedent(
            """\
            types:
              A:
                fields: {x: str}
            agents:
              a:
                consumes: A
                engine: test
                utilities: [{use: "recipe_options_audit:Audit", with: {lable: x}}]
            """
        )
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.message == "'recipe_options_audit:Audit' has no option 'lable'"
    assert diagnostic.hint == "Did you mean 'label'?"
    audit = sys.modules.pop("recipe_options_audit").Audit  # the class the recipe imported
    assert refused(lambda: audit(lable="x")) == "Audit has no option 'lable'. Did you mean 'label'?"


def test_function_engine_refuses_a_takes_ctx_that_could_contradict_the_function() -> None:
    assert refused(lambda: FunctionEngine(lambda inputs: None, takes_ctx=True)) == (
        "FunctionEngine works out takes_ctx from the function's parameters; do not pass it"
    )
