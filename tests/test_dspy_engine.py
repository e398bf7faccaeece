"""The DSPy engine through the public API, with DSPy's own DummyLM injected as the model.

DummyLM answers from a script and keeps every prompt it was sent (``lm.history``), so these tests
check what the model is asked (signature fields, descriptions, constraints, inputs, the problem
with a previous answer) and what the flock publishes from the answers.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import dspy
import pytest
from dspy.utils import DummyLM
from pydantic import BaseModel, Field

from flock_cli import (
    DSPyEngine,
    Flock,
    ModelCallsBlockedError,
    ModelNotConfiguredError,
    block_model_calls,
    flock_type,
)
from tests.models import BugReport, FinalReview, Idea, Movie, SecurityReport, Tagline


@flock_type(name="Pitch")
class Pitch(BaseModel):
    """A movie pitch for a studio."""

    title: str = Field(min_length=3, description="the working title")
    runtime: int = Field(ge=60, le=400, description="length in minutes")


def scripted(*answers: dict[str, Any]) -> DummyLM:
    """A model that gives ``answers`` in order, as JSON objects."""
    return DummyLM(list(answers), adapter=dspy.JSONAdapter())


def prompt(lm: DummyLM, call: int = 0) -> str:
    """Everything the model was sent in one call (system and user messages), with the JSON
    schemas DSPy embeds as escaped strings unescaped."""
    return "\n".join(m["content"] for m in lm.history[call]["messages"]).replace('\\"', '"')


async def payloads(flock: Flock, type_name: str) -> list[dict[str, Any]]:
    return [a.payload for a in await flock.store.list() if a.type == type_name]


async def test_a_single_input_run_asks_with_description_types_and_constraints() -> None:
    lm = scripted({"pitch": {"title": "Good Dogs", "runtime": 101}})
    flock = Flock()
    flock.agent("writer").description("Pitch a movie for the idea.").consumes(Idea).publishes(
        Pitch
    ).with_engines(DSPyEngine(lm=lm))
    await flock.publish(Idea(topic="dogs"))
    summary = await flock.run_until_idle()
    assert summary.ok and summary.agent_runs == 1
    assert await payloads(flock, "Pitch") == [{"title": "Good Dogs", "runtime": 101}]
    sent = prompt(lm)
    assert "Pitch a movie for the idea." in sent
    assert "`idea` (Idea)" in sent and "`pitch` (Pitch): A movie pitch for a studio." in sent
    assert '"minimum": 60' in sent and '"maximum": 400' in sent and '"minLength": 3' in sent
    assert "length in minutes" in sent and '{"topic": "dogs"}' in sent


async def test_a_joined_run_sees_each_consumed_artifact_as_a_field() -> None:
    lm = scripted({"final_review": {"decision": "Approve", "summary": "fine"}})
    flock = Flock()
    flock.agent("reviewer").consumes(BugReport, SecurityReport).publishes(FinalReview).with_engines(
        DSPyEngine(lm=lm)
    )
    one = uuid4()  # one submission's two reports
    await flock.publish(BugReport(bugs=["off by one"], severity="Low"), correlation_id=one)
    await flock.publish(SecurityReport(vulnerabilities=["none"], risk="Low"), correlation_id=one)
    summary = await flock.run_until_idle()
    assert summary.ok and summary.agent_runs == 1
    sent = prompt(lm)
    assert "`bug_report` (BugReport)" in sent and "`security_report` (SecurityReport)" in sent
    assert "off by one" in sent and '"risk": "Low"' in sent
    assert "Given BugReport, SecurityReport, produce FinalReview." in sent  # no description: a default
    assert await payloads(flock, "FinalReview") == [{"decision": "Approve", "summary": "fine"}]


async def test_a_batch_arrives_as_one_list_field() -> None:
    lm = scripted({"tagline": {"line": "three ideas, one line"}})
    flock = Flock()
    flock.agent("summariser").consumes(Idea, batch={"size": 3}).publishes(Tagline).with_engines(
        DSPyEngine(lm=lm)
    )
    for topic in ("cats", "dogs", "owls"):
        await flock.publish(Idea(topic=topic))
    summary = await flock.run_until_idle()
    assert summary.ok and summary.agent_runs == 1
    sent = prompt(lm)
    assert "`ideas` (list[Idea]): 3 Idea artifacts." in sent
    assert '[{"topic": "cats"}, {"topic": "dogs"}, {"topic": "owls"}]' in sent


async def test_several_output_types_and_several_of_one_type() -> None:
    lm = scripted(
        {"movie": {"title": "Owls", "runtime": 90}, "taglines": [{"line": "only one"}]},  # one short
        {"movie": {"title": "Owls", "runtime": 90}, "taglines": [{"line": "hoot"}, {"line": "who?"}]},
    )
    flock = Flock()
    flock.agent("studio").consumes(Idea).publishes(Movie).publishes(Tagline, count=2).with_engines(
        DSPyEngine(lm=lm)
    )
    await flock.publish(Idea(topic="owls"))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert await payloads(flock, "Movie") == [{"title": "Owls", "runtime": 90}]
    assert await payloads(flock, "Tagline") == [{"line": "hoot"}, {"line": "who?"}]
    assert "`taglines` (list[Tagline]): exactly 2 Tagline objects." in prompt(lm, 0)
    assert "must be a list of exactly 2 Tagline objects, got 1" in prompt(lm, 1)


async def test_an_invalid_answer_is_asked_again_with_the_problem_shown() -> None:
    lm = scripted({"pitch": {"title": "X", "runtime": 10}}, {"pitch": {"title": "Better", "runtime": 95}})
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Pitch).with_engines(DSPyEngine(lm=lm))
    await flock.publish(Idea(topic="dogs"))
    summary = await flock.run_until_idle()
    assert summary.ok and summary.agent_runs == 1 and summary.retries == 0  # one run, two model calls
    assert await payloads(flock, "Pitch") == [{"title": "Better", "runtime": 95}]
    again = prompt(lm, 1)
    assert "previous_attempt_problem" in again
    assert "Input should be greater than or equal to 60" in again and '"runtime": 10' in again
    assert "previous_attempt_problem" not in prompt(lm, 0)


async def test_an_answer_that_never_validates_fails_the_run_after_its_retries() -> None:
    bad = {"pitch": {"title": "X", "runtime": 10}}
    lm = scripted(bad, bad, {"pitch": {"title": "Never asked", "runtime": 90}})
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Pitch).with_engines(DSPyEngine(lm=lm, retries=1))
    await flock.publish(Idea(topic="dogs"))
    summary = await flock.run_until_idle()
    [failure] = summary.failures
    assert failure.error_type == "OutputError"
    assert "the model's answer did not validate in 2 attempts" in failure.error
    assert "greater than or equal to 60" in failure.error
    assert len(lm.history) == 2 and len(summary.dead_letters) == 1
    assert await payloads(flock, "Pitch") == []


async def test_an_agent_with_tools_runs_a_react_loop() -> None:
    asked: list[str] = []

    def runtime_for(topic: str) -> int:
        """The right runtime in minutes for a movie about the topic."""
        asked.append(topic)
        return 111

    lm = scripted(
        {
            "next_thought": "ask the tool",
            "next_tool_name": "runtime_for",
            "next_tool_args": {"topic": "dogs"},
        },
        {"next_thought": "I know it", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "the tool said 111", "pitch": {"title": "Dogs", "runtime": 111}},
    )
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Pitch).with_tools([runtime_for]).with_engines(
        DSPyEngine(lm=lm)
    )
    await flock.publish(Idea(topic="dogs"))
    summary = await flock.run_until_idle()
    assert summary.ok
    assert asked == ["dogs"]
    assert await payloads(flock, "Pitch") == [{"title": "Dogs", "runtime": 111}]
    assert "The right runtime in minutes for a movie about the topic." in prompt(lm, 0)
    assert "[[ ## observation_0 ## ]]\n111" in prompt(lm, 2)


@pytest.mark.parametrize(
    ("engine_model", "flock_model", "env", "chosen"),
    [
        ("a/engine", "b/flock", {"FLOCK_MODEL": "c/env", "DEFAULT_MODEL": "d/env"}, "a/engine"),
        (None, "b/flock", {"FLOCK_MODEL": "c/env", "DEFAULT_MODEL": "d/env"}, "b/flock"),
        (None, None, {"FLOCK_MODEL": "c/env", "DEFAULT_MODEL": "d/env"}, "c/env"),
        (None, None, {"DEFAULT_MODEL": "d/env"}, "d/env"),
    ],
)
async def test_the_model_is_resolved_in_order_and_real_calls_are_blocked_in_tests(
    monkeypatch: pytest.MonkeyPatch,
    engine_model: str | None,
    flock_model: str | None,
    env: dict[str, str],
    chosen: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    flock = Flock(flock_model)
    flock.agent("writer").consumes(Idea).publishes(Pitch).with_engines(DSPyEngine(model=engine_model))
    await flock.publish(Idea(topic="dogs"))
    [failure] = (await flock.run_until_idle()).failures
    assert failure.error_type == ModelCallsBlockedError.__name__
    assert f"a real call to model '{chosen}' was blocked" in failure.error


async def test_no_model_anywhere_is_a_clear_error_listing_every_way_to_give_one() -> None:
    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Pitch).with_engines(DSPyEngine())
    await flock.publish(Idea(topic="dogs"))
    [failure] = (await flock.run_until_idle()).failures
    assert failure.error_type == ModelNotConfiguredError.__name__
    for way in ("--model", "model:", "Flock(model=...)", "FLOCK_MODEL", "DEFAULT_MODEL", "--engine test"):
        assert way in failure.error


async def test_block_model_calls_blocks_within_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOCK_BLOCK_MODEL_CALLS")
    engine = DSPyEngine(model="openai/gpt-4o-mini", temperature=0.3, max_tokens=50)
    lm = engine.language_model(agent="writer")  # building a client is not a call
    assert (lm.model, lm.kwargs["temperature"], lm.kwargs["max_tokens"]) == ("openai/gpt-4o-mini", 0.3, 50)
    with block_model_calls(), pytest.raises(ModelCallsBlockedError, match="'openai/gpt-4o-mini' was blocked"):
        engine.language_model(agent="writer")


async def test_types_that_share_a_short_name_each_get_a_field() -> None:
    @flock_type(name="review.Note")
    class ReviewNote(BaseModel):
        text: str

    @flock_type(name="audit.Note")
    class AuditNote(BaseModel):
        text: str

    lm = scripted({"tagline": {"line": "both seen"}})
    flock = Flock()
    flock.agent("merger").consumes(ReviewNote, AuditNote).publishes(Tagline).with_engines(DSPyEngine(lm=lm))
    await flock.publish_many([ReviewNote(text="REVIEW"), AuditNote(text="AUDIT")], correlation_id=uuid4())
    assert (await flock.run_until_idle()).ok
    sent = prompt(lm)
    assert "`note` (ReviewNote)" in sent and "`note_2` (AuditNote)" in sent
    assert "REVIEW" in sent and "AUDIT" in sent


async def test_a_failed_call_still_ends_its_stream() -> None:
    from flock_cli.engines.lm_engine import LMEngine, language_model, text_response
    from flock_cli.engines.streaming import emit

    class Streaming(LMEngine):
        def complete(self, request: Any) -> Any:
            emit('{"tagline": "not an object"}')
            return text_response("r", "m", '{"tagline": "not an object"}')

    flock = Flock()
    flock.agent("writer").consumes(Idea).publishes(Tagline).with_engines(
        DSPyEngine(lm=language_model("streaming", Streaming(), cache=False), retries=0)
    )
    chunks: list[Any] = []
    flock.on_stream(chunks.append)
    await flock.publish(Idea(topic="a"))
    summary = await flock.run_until_idle()
    assert [f.error_type for f in summary.failures] == ["OutputError"]
    assert [(c.text, c.done) for c in chunks] == [('{"tagline": "not an object"}', False), ("", True)]
