"""Gates that can never fill are reported, not "ok" (issue 14, item 3): `flock check` flags them
and agents that only serve direct calls; a run that goes idle explains every open gate."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from flock_cli import Flock, FunctionEngine
from flock_cli.cli.app import app
from flock_cli.core.liveness import AgentShape, Liveness
from flock_cli.recipe import load_recipe
from tests.models import Idea, Movie, Tagline

runner = CliRunner()

# The design document's feedback loop, written literally: consumes(Idea, Feedback) is one AND gate.
DESIGN_LOOP = """
    name: design-loop
    types:
      Idea: {fields: {topic: str}}
      Draft: {fields: {text: str}}
      Feedback: {fields: {score: int}}
    agents:
      writer:
        consumes: {types: [Idea, Feedback]}
        publishes: Draft
        engine: test
      reviewer:
        consumes: Draft
        publishes: Feedback
        engine: test
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_check_flags_the_gate_that_can_never_fill_once_at_its_cause(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "loop.yaml", DESIGN_LOOP))
    [finding] = [d for d in recipe.findings if d.code == "never-fills"]
    assert finding.severity == "warning" and finding.path == "agents.writer.consumes"
    assert "(writer -> Draft -> reviewer -> Feedback): this AND gate can never fill" in finding.message
    assert "consumes: [Idea, Feedback]" in (finding.hint or "")
    checked = runner.invoke(app, ["check", str(tmp_path / "loop.yaml")])
    assert checked.exit_code == 1 and "never fill" in checked.output


def test_the_or_form_and_the_example_loop_are_clean(tmp_path: Path) -> None:
    either = DESIGN_LOOP.replace("consumes: {types: [Idea, Feedback]}", "consumes: [Idea, Feedback]")
    recipe = load_recipe(write(tmp_path / "either.yaml", either))
    assert [d.code for d in recipe.findings if d.severity == "warning"] == ["unbounded-cycle"]


def test_check_flags_an_agent_that_only_serves_direct_calls(tmp_path: Path) -> None:
    path = write(
        tmp_path / "direct.yaml",
        """
        types:
          Ask: {fields: {q: str}}
          Reply: {fields: {a: str}}
        agents:
          oracle: {consumes: {types: Ask, mode: direct}, publishes: Reply, engine: test}
        """,
    )
    [finding] = [d for d in load_recipe(path).findings if d.code == "direct-only"]
    assert finding.severity == "warning" and "flock run never runs it" in finding.message


def test_a_run_of_the_design_loop_exits_1_and_says_the_gate_is_deadlocked(tmp_path: Path) -> None:
    recipe = write(tmp_path / "loop.yaml", DESIGN_LOOP)
    write(tmp_path / "idea.json", '{"topic": "boats"}')
    result = runner.invoke(
        app, ["run", str(recipe), "--board", ":memory:", "-i", f"Idea={tmp_path / 'idea.json'}", "--json"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    [group] = data["summary"]["pending_groups"]
    assert data["ok"] is False and group["status"] == "deadlock" and group["missing"] == ["Feedback"]
    assert "this gate can never fill" in group["reason"]


async def test_the_summary_explains_each_open_gate() -> None:
    """In the API: a gate missing an outside type is stuck (publish it), one missing what only
    its own outputs lead to is a deadlock (not ok), and while runs are in flight it is waiting."""
    flock = Flock()
    flock.agent("pair").consumes(Idea, Movie).publishes(Tagline).with_engines(FunctionEngine(lambda i: None))
    flock.agent("loop").consumes(Idea, Tagline).publishes(Movie).with_engines(FunctionEngine(lambda i: None))
    await flock.publish(Idea(topic="x"))
    summary = await flock.run_until_idle()
    states = {g.agent: (g.status, g.reason) for g in summary.pending_groups}
    assert states["pair"][0] == "deadlock" and states["loop"][0] == "deadlock"
    assert not summary.ok and len(summary.stuck_groups) == 2
    flock2 = Flock()
    flock2.agent("pair").consumes(Idea, Movie).with_engines(FunctionEngine(lambda i: None))
    await flock2.publish(Idea(topic="x"))
    summary = await flock2.run_until_idle()
    [group] = summary.pending_groups
    assert (
        group.status == "stuck"
        and "no agent publishes Movie: publish one with correlation id" in group.reason
    )
    assert summary.ok  # waiting for outside input is not a failure of the flock


def test_liveness_is_linear_and_follows_alternatives() -> None:
    """A chain of 20,000 agents declared in reverse order settles in one pass over the graph."""
    n = 20_000
    shapes = [
        AgentShape(f"a{i}", (frozenset({f"T{i}"}),), frozenset({f"T{i + 1}"})) for i in reversed(range(n))
    ]
    graph = Liveness(shapes)
    assert len(graph.live()) == n

    def gate(self_trigger: bool) -> AgentShape:
        subs = (frozenset({"T0", f"T{n + 5}"}), frozenset({"X"}))
        return AgentShape("g", subs, frozenset({f"T{n + 5}"}), self_trigger=self_trigger)

    graph = Liveness([*shapes, gate(self_trigger=True)])
    assert "g" in graph.live()  # through its second alternative (X comes from outside)
    assert not graph.deadlocked("g", 0, f"T{n + 5}")  # its other subscription publishes it first
    assert Liveness([*shapes, gate(self_trigger=False)]).deadlocked("g", 0, f"T{n + 5}")  # never its own


def _random_shapes(rng: random.Random, agents: int, types: int) -> list[AgentShape]:
    names = [f"T{i}" for i in range(types)]
    shapes = []
    for a in range(agents):
        subscriptions = tuple(
            None
            if rng.random() < 0.1
            else frozenset(rng.sample(names, min(len(names), rng.choice([1, 1, 2, 3]))))
            for _ in range(rng.choice([1, 1, 2]))
        )
        outputs = frozenset(rng.sample(names, rng.choice([0, 1, 1, 2])))
        shapes.append(AgentShape(f"a{a}", subscriptions, outputs, self_trigger=rng.random() < 0.2))
    return shapes


def _naive_live(shapes: list[AgentShape], drop: tuple[str, int] | None) -> set[str]:
    """The definition of live, applied until nothing changes."""
    makers = {t for s in shapes for t in s.outputs}
    live: set[str] = set()
    while True:
        more = {
            s.name
            for s in shapes
            for i, sub in enumerate(s.subscriptions)
            if sub is not None
            and (s.name, i) != drop
            and all(
                t not in makers
                or any(
                    o.name in live and (o.name != s.name or s.self_trigger) and t in o.outputs for o in shapes
                )
                for t in sub
            )
        }
        if more <= live:
            return live
        live |= more


def test_deadlock_answers_match_a_full_fixpoint_for_every_gate_of_random_graphs() -> None:
    """`deadlocked` answers most gates without a fixpoint of its own (what was found live before
    the agent stays live without it); each answer is the one a fixpoint without the gate gives."""
    rng = random.Random(19)
    checked = 0
    for _ in range(300):
        shapes = _random_shapes(rng, rng.randint(2, 12), rng.randint(2, 8))
        graph = Liveness(shapes)
        assert graph.live() == _naive_live(shapes, None)
        for shape in shapes:
            for index, sub in enumerate(shape.subscriptions):
                for type_name in sorted(sub or ()):
                    if graph.external(type_name):
                        continue
                    live = _naive_live(shapes, (shape.name, index))
                    assert graph.live(drop=(shape.name, index)) == live
                    expected = not any(
                        p in live and (p != shape.name or shape.self_trigger)
                        for p in graph.producers(type_name)
                    )
                    assert graph.deadlocked(shape.name, index, type_name) == expected, (shapes, shape)
                    checked += 1
    assert checked > 500
