"""The examples of the two design documents, written as tests."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from flock_cli import EvalResult, Flock, FunctionEngine, TestEngine, flock_type
from tests.models import BugReport, CodeSubmission, FinalReview, SecurityReport


async def test_code_review_parallel_then_join() -> None:
    flock = Flock()
    started: list[str] = []

    def analyst(name: str, output: type[BaseModel]) -> TestEngine:
        class Tracked(TestEngine):
            async def evaluate(self, agent, ctx, inputs):
                started.append(name)
                await asyncio.sleep(0.01)
                return await super().evaluate(agent, ctx, inputs)

        return Tracked()

    flock.agent("bugs").consumes(CodeSubmission).publishes(BugReport).with_engines(analyst("bugs", BugReport))
    flock.agent("security").consumes(CodeSubmission).publishes(SecurityReport).with_engines(
        analyst("security", SecurityReport)
    )
    flock.agent("reviewer").consumes(BugReport, SecurityReport).publishes(FinalReview).with_engines(
        TestEngine()
    )
    await flock.publish(CodeSubmission(code="def unsafe(): exec(user_input)", language="python"))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"bugs": 1, "security": 1, "reviewer": 1} and summary.ok
    reviews = await flock.store.get_by_type(FinalReview)
    assert len(reviews) == 1 and reviews[0].decision in ("Approve", "Reject", "Needs Work")


async def test_three_submissions_at_once_give_three_correct_reviews() -> None:
    """The headline AND gate with no join, three submissions published together, the analyses
    finishing in opposite orders: each review pairs its own submission's two reports, and the
    code that calls exec() is rejected (first-in-first-out pairing approved it)."""
    flock = Flock()
    codes = [
        "def unsafe(user_input): exec(user_input)",
        "def add(a, b): return a + b",
        "def mean(xs): return sum(xs) / len(xs)",
    ]

    async def bugs(inputs):
        code = inputs.first_as(CodeSubmission).code
        await asyncio.sleep(0.01 * (3 - codes.index(code)))  # the last submission's report first
        return BugReport(bugs=[code], severity="High" if "len(xs)" in code else "Low")

    async def security(inputs):
        code = inputs.first_as(CodeSubmission).code
        await asyncio.sleep(0.01 * codes.index(code))  # the first submission's report first
        return SecurityReport(vulnerabilities=[code], risk="Critical" if "exec(" in code else "Low")

    def review(inputs):
        bug, sec = inputs.first_as(BugReport), inputs.first_as(SecurityReport)
        decision = (
            "Reject" if sec.risk == "Critical" else "Needs Work" if bug.severity == "High" else "Approve"
        )
        return FinalReview(decision=decision, summary=f"{bug.bugs[0]} | {sec.vulnerabilities[0]}")

    flock.agent("bugs").consumes(CodeSubmission).publishes(BugReport).with_engines(FunctionEngine(bugs))
    flock.agent("security").consumes(CodeSubmission).publishes(SecurityReport).with_engines(
        FunctionEngine(security)
    )
    flock.agent("reviewer").consumes(BugReport, SecurityReport).publishes(FinalReview).with_engines(
        FunctionEngine(review)
    )
    await flock.publish_many([CodeSubmission(code=code, language="python") for code in codes])
    summary = await flock.run_until_idle()
    assert summary.ok and summary.runs_by_agent == {"bugs": 3, "security": 3, "reviewer": 3}
    reviews = {r.summary.split(" | ")[0]: r for r in await flock.store.get_by_type(FinalReview)}
    assert all(r.summary == f"{code} | {code}" for code, r in reviews.items())  # never mixed
    assert {code: r.decision for code, r in reviews.items()} == {
        codes[0]: "Reject",
        codes[1]: "Approve",
        codes[2]: "Needs Work",
    }


@flock_type(name="Topic")
class Topic(BaseModel):
    name: str


@flock_type(name="StoryIdea")
class StoryIdea(BaseModel):
    angle: str


@flock_type(name="Article")
class Article(BaseModel):
    text: str
    journalist: str


async def test_fan_out_to_eight_journalists_in_parallel() -> None:
    flock = Flock()
    flock.agent("editor").consumes(Topic).publishes(StoryIdea).with_engines(TestEngine(count=8))
    active = {"now": 0, "max": 0}

    def journalist(name: str) -> FunctionEngine:
        async def write(inputs):
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            await asyncio.sleep(0.02)
            active["now"] -= 1
            return Article(text=inputs.first_as(StoryIdea).angle, journalist=name)

        return FunctionEngine(write)

    for i in range(8):
        flock.agent(f"journalist_{i}").consumes(StoryIdea).publishes(Article).with_engines(
            journalist(f"j{i}")
        )
    await flock.publish(Topic(name="AI"))
    summary = await flock.run_until_idle()
    assert summary.agent_runs == 1 + 8 * 8
    assert len(await flock.store.get_by_type(Article)) == 64
    assert active["max"] == 64  # every journalist on every idea at once


@flock_type(name="Ticket")
class Ticket(BaseModel):
    severity: str


@flock_type(name="Handled")
class Handled(BaseModel):
    by: str


async def test_conditional_routing() -> None:
    flock = Flock()
    (
        flock.agent("urgent")
        .consumes(Ticket, where=lambda b: b.severity in ["Critical", "High"])
        .publishes(Handled)
        .with_engines(FunctionEngine(lambda i: Handled(by="urgent")))
    )
    (
        flock.agent("backlog")
        .consumes(Ticket, where=lambda b: b.severity in ["Low", "Medium"])
        .publishes(Handled)
        .with_engines(FunctionEngine(lambda i: Handled(by="backlog")))
    )
    for severity in ["Critical", "Low", "High", "Medium", "Low"]:
        await flock.publish(Ticket(severity=severity))
    summary = await flock.run_until_idle()
    assert summary.runs_by_agent == {"urgent": 2, "backlog": 3}


@flock_type(name="Idea2")
class Draftable(BaseModel):
    text: str


@flock_type(name="Draft")
class Draft(BaseModel):
    text: str


@flock_type(name="Feedback")
class Feedback(BaseModel):
    score: int


async def test_feedback_loop_is_stopped_by_the_circuit_breaker() -> None:
    flock = Flock(max_agent_iterations=5)
    flock.agent("writer").consumes(Draftable).consumes(Feedback).publishes(Draft).with_engines(
        FunctionEngine(lambda i: Draft(text="again"))
    )
    flock.agent("reviewer").consumes(Draft).publishes(Feedback).with_engines(
        FunctionEngine(lambda i: Feedback(score=1))
    )
    await flock.publish(Draftable(text="start"))
    summary = await flock.run_until_idle(timeout=10)
    assert [t.agent for t in summary.breaker_trips] == ["writer"]
    assert summary.breaker_trips[0].held == 1
    assert summary.runs_by_agent == {"writer": 5, "reviewer": 5}
    held = [d for d in summary.dead_letters if d.reason == "breaker"]
    assert len(held) == 1 and held[0].agent == "writer"  # the work is kept, not dropped
    assert not summary.ok


async def test_blackboard_complete_example_with_string_results() -> None:
    flock = Flock("openai/gpt-4.1")
    flock.agent("bugs").consumes(CodeSubmission).publishes(BugReport).with_engines(
        FunctionEngine(lambda i: BugReport(bugs=["exec on input"], severity="Critical"))
    )
    flock.agent("security").consumes(CodeSubmission).publishes(SecurityReport).with_engines(
        FunctionEngine(lambda i: SecurityReport(vulnerabilities=["RCE"], risk="Critical"))
    )

    def decide(inputs):
        bug, sec = inputs.first_as(BugReport), inputs.first_as(SecurityReport)
        return EvalResult(
            artifacts=[FinalReview(decision="Reject", summary=f"{bug.bugs[0]}; {sec.vulnerabilities[0]}")]
        )

    flock.agent("reviewer").consumes(BugReport, SecurityReport).publishes(FinalReview).with_engines(
        FunctionEngine(decide)
    )
    await flock.publish(CodeSubmission(code="def unsafe(): exec(user_input)", language="python"))
    await flock.run_until_idle()
    reviews = await flock.store.get_by_type(FinalReview)
    assert reviews[0].decision == "Reject" and reviews[0].summary == "exec on input; RCE"
