"""Every YAML example in docs/recipes.md is real.

Blocks are classified by their first line:

- ``# recipe``: a complete recipe; it must load.
- ``# recipe-error``: a recipe that must fail to load with exactly the text of the ``text``
  block that follows it (the file's path shown as ``recipe.yaml``).
- ``# fragment``: a few keys; it must parse as YAML.
- ``# file: PATH``: a file the recipes use (an included recipe, or a Python module in a ``py``
  block); written next to every recipe before it loads.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flock_cli.recipe import Recipe, RecipeError, load_recipe

DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n(?:\n```text\n(.*?)^```$)?", re.S | re.M)
HEADERS = ("# recipe\n", "# recipe-error\n", "# fragment\n", "# file: ")


def _blocks() -> list[tuple[str, str, str | None]]:
    """(language, body, following text block) of every fenced block, in order."""
    return [(m[1], m[2], m[3]) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def _yaml_blocks(header: str) -> list[str]:
    return [body for lang, body, _ in _blocks() if lang == "yaml" and body.startswith(header)]


def _support_files() -> dict[str, str]:
    files = {}
    for lang, body, _ in _blocks():
        if lang in ("yaml", "py") and body.startswith("# file: "):
            name = body.split("\n", 1)[0].removeprefix("# file: ").strip()
            files[name] = body
    return files


def _name(body: str) -> str:
    match = re.search(r"^name: (\S+)$", body, re.M)
    return match[1] if match else "unnamed"


RECIPES = _yaml_blocks("# recipe\n")
ERRORS = [(body, text) for lang, body, text in _blocks() if body.startswith("# recipe-error\n")]
FRAGMENTS = _yaml_blocks("# fragment\n")


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding the support files; modules they define are forgotten afterwards."""
    for name, body in _support_files().items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    modules = [n.removesuffix(".py").replace("/", ".") for n in _support_files() if n.endswith(".py")]
    for module in modules:
        sys.modules.pop(module, None)
    yield tmp_path
    for module in modules:
        sys.modules.pop(module, None)


def _load(folder: Path, body: str) -> Recipe:
    path = folder / "recipe.yaml"
    path.write_text(body, encoding="utf-8")
    return load_recipe(path)


def _recipe(folder: Path, name: str) -> Recipe:
    matching = [body for body in RECIPES if _name(body) == name]
    assert len(matching) == 1, f"docs/recipes.md has {len(matching)} recipes named {name}"
    return _load(folder, matching[0])


def test_every_yaml_block_is_classified() -> None:
    yaml_blocks = [body for lang, body, _ in _blocks() if lang == "yaml"]
    unmarked = [body.split("\n", 1)[0] for body in yaml_blocks if not body.startswith(HEADERS)]
    assert not unmarked, f"YAML blocks without # recipe / # recipe-error / # fragment / # file: {unmarked}"
    assert len(RECIPES) >= 10 and ERRORS and FRAGMENTS
    assert all(text is not None for _, text in ERRORS), "a # recipe-error block needs a text block after it"


@pytest.mark.parametrize("body", RECIPES, ids=[_name(b) for b in RECIPES])
def test_recipe_loads(body: str, folder: Path) -> None:
    recipe = _load(folder, body)
    assert recipe.definition.agents
    warnings = [d.code for d in recipe.findings if d.severity == "warning"]
    assert not warnings or recipe.name == "visibility-example"  # its warning is documented


@pytest.mark.parametrize(("body", "expected"), ERRORS, ids=[f"error-{i}" for i in range(len(ERRORS))])
def test_recipe_error_renders_as_documented(body: str, expected: str, folder: Path) -> None:
    path = folder / "recipe.yaml"
    with pytest.raises(RecipeError) as caught:
        _load(folder, body)
    assert str(caught.value).replace(str(path), "recipe.yaml") == expected.rstrip("\n")


@pytest.mark.parametrize("body", FRAGMENTS, ids=[f"fragment-{i}" for i in range(len(FRAGMENTS))])
def test_fragment_is_yaml(body: str) -> None:
    yaml.safe_load(body)


def test_support_yaml_files_are_recipes(folder: Path) -> None:
    for name in _support_files():
        if name.endswith(".yaml"):
            assert load_recipe(folder / name).definition.types


def test_short_forms_expand_alike(folder: Path) -> None:
    agents = _recipe(folder, "short-forms").definition.agents
    assert agents["a"] == agents["b"] == agents["c"] == agents["d"]


async def test_pipeline_runs(folder: Path) -> None:
    recipe = _recipe(folder, "pipeline")
    flock = recipe.build(engine_override="test")
    await flock.publish(recipe.resolved.types["Idea"](topic="blackboards"))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert summary.runs_by_agent == {"writer": 1, "reviewer": 1}
    assert [d.code for d in recipe.findings] == ["final-output", "entry-point"]


async def test_ticket_routing_runs_with_the_function_engine(folder: Path) -> None:
    recipe = _recipe(folder, "ticket-routing")
    assert len(recipe.files) == 2
    flock = recipe.build(engine_override="test")
    request = recipe.resolved.types["Request"]
    await flock.publish(request(text="Where is my invoice?"))
    await flock.publish(request(text="API error, the site is down"))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert summary.runs_by_agent == {"triage": 2, "billing": 1, "technical": 1, "generalist": 1}


async def test_subscriptions_deliver_as_documented(folder: Path) -> None:
    recipe = _recipe(folder, "subscriptions-example")
    flock = recipe.build()
    ticket = recipe.resolved.types["Ticket"]
    await flock.publish(ticket(severity="critical", team="core"))
    await flock.publish(ticket(severity="low", team="finance"), tags={"billing"})
    summary = await flock.run_until_idle()
    runs = summary.runs_by_agent
    assert summary.ok
    assert runs["urgent"] == 1 and runs["billing"] == 1
    assert runs.get("worker_1", 0) + runs.get("worker_2", 0) == 2  # one worker per ticket
    assert runs["auditor"] == 4  # both tickets (shared) and the workers' two Handled


async def test_agent_options_run(folder: Path) -> None:
    recipe = _recipe(folder, "agent-options")
    flock = recipe.build()
    await flock.publish(recipe.resolved.types["Order"](customer="ada", amount=12.5))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert summary.runs_by_agent["billing"] == 1
    import helpers  # written by the fixture; imported by the loader

    assert len(helpers.sent) == 1 and type(helpers.sent[0]).__name__ == "Invoice"


def test_documented_check_findings(folder: Path) -> None:
    findings = _recipe(folder, "visibility-example").findings
    warnings = [d.message for d in findings if d.severity == "warning"]
    assert warnings == [
        "agent 'press' can never receive 'Escalation': the visibility it is published with"
        " (by acme_analyst) does not include this agent"
    ]


def test_the_recipe_model_reaches_its_dspy_engines(folder: Path) -> None:
    recipe = _recipe(folder, "settings-example")
    assert recipe.definition.settings.lease_ttl == 600
    flock = recipe.build()  # answerer has no engine: the default dspy engine, on the recipe's model
    [agent] = flock.agents
    assert flock.model == "openai/gpt-4o-mini"
    assert [type(e).__name__ for e in agent.engines] == ["DSPyEngine"]
    offline = recipe.build(engine_override="test")
    assert [type(e).__name__ for e in offline.agents[0].engines] == ["TestEngine"]


def test_the_budget_example_reaches_the_flock_and_its_agent(folder: Path) -> None:
    flock = _recipe(folder, "budget-example").build()
    [agent] = flock.agents
    assert (flock.budget.cost, flock.budget.on_exhausted) == (0.5, "stop")
    assert (agent.budget.tokens, agent.budget.calls, agent.budget.on_exhausted) == (20000, 50, "pause")
    [engine] = agent.engines
    assert (engine.temperature, engine.retries, engine.max_tokens, engine.adapter) == (0.2, 1, 300, "json")
