"""Every example recipe in recipes/ is valid, clean under `flock check`, and runs offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flock_cli import ManualClock, SequentialIds
from flock_cli.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
INPUTS: dict[str, list[tuple[str, str]]] = {
    "pipeline.yaml": [("Idea", "idea.json")],
    "code_review.yaml": [("CodeSubmission", "code_submission.json")],
    "news_agency.yaml": [("BreakingNews", "breaking_news.json")],
    "ticket_routing.yaml": [("SupportRequest", "support_requests.json")],
    "feedback_loop.yaml": [("Brief", "brief.json")],
    "multi_tenant.yaml": [("SupportRequest", "tenant_requests.json")],
    "batch_summary.yaml": [("LogEvent", "log_events.json")],
    "live_demo.yaml": [("Topic", "topics.json")],
    "notes_qa.yaml": [("Question", "question.json")],
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(INPUTS)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_example_is_valid_and_has_no_warnings(name: str) -> None:
    recipe = load_recipe(RECIPES / name)
    assert [d.render() for d in recipe.findings if d.severity != "info"] == []
    assert (
        (RECIPES / name)
        .read_text()
        .startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json")
    )


async def run_example(name: str) -> tuple[Any, Any, list[Any]]:
    recipe = load_recipe(RECIPES / name)
    flock = recipe.build(
        engine_override="test", clock=ManualClock(auto_advance=True), id_factory=SequentialIds()
    )
    for type_name, file in INPUTS[name]:
        data = json.loads((RECIPES / "inputs" / file).read_text())
        model = recipe.resolved.types[type_name]
        for payload in data if isinstance(data, list) else [data]:
            await flock.publish(model(**payload))
    summary = await flock.run_until_idle(timeout=30)
    summary_at_shutdown = await flock.shutdown()
    from flock_cli.store.contract import UNRESTRICTED

    artifacts = await flock.store.list(viewer=UNRESTRICTED)
    assert summary_at_shutdown.agent_runs == 0
    return recipe, summary, artifacts


def by_type(artifacts: list[Any], type_name: str) -> list[Any]:
    return [a for a in artifacts if a.type == type_name]


async def test_live_demo_paces_runs_with_latency_and_concurrency() -> None:
    import time

    started = time.monotonic()
    _, summary, artifacts = await run_example("live_demo.yaml")
    assert summary.ok
    assert (summary.runs_by_agent["researcher"], summary.runs_by_agent["critic"]) == (8, 8)
    # every note reaches the editor in some batch (the test clock may flush a batch early)
    assert summary.runs_by_agent["editor"] == len(by_type(artifacts, "Digest")) >= 2
    # eight 1 s researcher runs, two at a time, then a critic and an editor after the last
    assert time.monotonic() - started >= 4.5


async def test_pipeline_runs_each_step_once() -> None:
    _, summary, artifacts = await run_example("pipeline.yaml")
    assert summary.ok
    assert summary.runs_by_agent == {"planner": 1, "writer": 1, "editor": 1}
    assert len(by_type(artifacts, "Article")) == 1


async def test_code_review_joins_both_analyses() -> None:
    _, summary, artifacts = await run_example("code_review.yaml")
    assert summary.ok
    [review] = by_type(artifacts, "CodeReview")
    analyses = by_type(artifacts, "BugAnalysis") + by_type(artifacts, "SecurityAnalysis")
    assert {a.correlation_id for a in analyses} == {review.correlation_id}


async def test_news_agency_gives_each_assignment_to_one_journalist() -> None:
    _, summary, artifacts = await run_example("news_agency.yaml")
    assert summary.ok
    assert len(by_type(artifacts, "StoryAssignment")) == 8
    assert len(by_type(artifacts, "Article")) == 8  # exclusive group: one article per assignment
    assert sum(n for agent, n in summary.runs_by_agent.items() if agent.startswith("journalist_")) == 8
    assert summary.runs_by_agent["chief_editor"] == 1  # one batch of eight
    assert len(by_type(artifacts, "Edition")) == 1


async def test_ticket_routing_sends_each_ticket_to_its_specialist() -> None:
    _, summary, artifacts = await run_example("ticket_routing.yaml")
    assert summary.ok
    tickets = {a.payload["subject"]: a.payload["category"] for a in by_type(artifacts, "Ticket")}
    assert tickets == {
        "Refund for a double charge": "billing",
        "API timeout": "technical",
        "Password reset": "account",
        "Feature idea": "other",
    }
    assert {a.produced_by for a in by_type(artifacts, "Resolution")} == {
        "billing_specialist",
        "technical_specialist",
        "account_specialist",
        "generalist",
    }
    assert summary.filtered  # the where conditions turned the other tickets away


async def test_feedback_loop_is_stopped_by_the_breaker() -> None:
    recipe, summary, _ = await run_example("feedback_loop.yaml")
    assert not summary.ok
    assert [t.agent for t in summary.breaker_trips] == ["writer"]
    assert summary.runs_by_agent["writer"] == recipe.definition.settings.max_agent_iterations
    assert [d.reason for d in summary.dead_letters] == ["breaker"]


async def test_multi_tenant_keeps_cases_apart() -> None:
    _, summary, artifacts = await run_example("multi_tenant.yaml")
    assert summary.ok
    assert summary.runs_by_agent["acme_analyst"] == 1 and summary.runs_by_agent["globex_analyst"] == 1
    assert summary.visibility_denials == 2  # each analyst was denied the other tenant's case
    assert summary.runs_by_agent["compliance_officer"] == 2
    resolutions = by_type(artifacts, "Resolution")
    assert all(r.visibility.describe() == "Private(compliance_officer)" for r in resolutions)


async def test_batch_summary_runs_once_per_batch() -> None:
    _, summary, artifacts = await run_example("batch_summary.yaml")
    assert summary.ok
    assert summary.runs_by_agent["summariser"] == 3  # 25 events: 10 + 10 + the last 5 at idle
    digests = by_type(artifacts, "Digest")
    alerts = by_type(artifacts, "Alert")
    assert len(alerts) == sum(1 for d in digests if d.payload["errors"] > 0)


MODEL_RECIPES = sorted(name for name in INPUTS if load_recipe(RECIPES / name).uses_dspy)


@pytest.mark.parametrize("name", MODEL_RECIPES)
def test_model_recipes_replay_their_recording_offline_and_identically(name: str) -> None:
    """With no model configured (and real model calls blocked), each recipe with dspy agents
    replays the answers recorded from the local model: every artifact validates into its type on
    publish, and two runs give the same artifacts."""
    from typer.testing import CliRunner

    from flock_cli.cli.app import app

    recipe = load_recipe(RECIPES / name)
    assert recipe.recording_path is not None and recipe.recording_path.is_file()
    args = ["run", str(RECIPES / name), "--board", ":memory:", "--json", "-q"]
    for type_name, file in INPUTS[name]:
        args += ["-i", f"{type_name}={RECIPES / 'inputs' / file}"]
    runs = []
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["ok"] and data["summary"]["agent_runs"] > 0
        runs.append(sorted(json.dumps(a["payload"], sort_keys=True) for a in data["artifacts"]))
    assert runs[0] == runs[1]
