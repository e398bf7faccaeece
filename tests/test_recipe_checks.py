"""Static checks (`flock check`) and the load-time refusals found by reviewing the loader."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from flock_cli.recipe import RecipeError, load_recipe


@pytest.fixture(autouse=True)
def forget_test_modules() -> Iterator[None]:
    yield
    for name in ("mytypes", "othertypes", "sharedlib"):
        sys.modules.pop(name, None)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def findings(path: Path) -> list[tuple[str, str]]:
    return [(d.code, d.severity) for d in load_recipe(path).findings]


def error_codes(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    return [d.code for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    "name", ["payload", "_x", "model_dump", "model_config", "json", "schema", "none", "self"]
)
def test_reserved_field_names_are_refused_at_their_key(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "r.yaml", f"types:\n  A:\n    fields:\n      {name}: str\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    [d] = caught.value.diagnostics
    assert (d.code, d.mark.line if d.mark else 0, d.path) == ("reserved-name", 4, f"types.A.fields.{name}")


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ('{type: str, pattern: "^(?!x).*$"}', "this field cannot be built"),
        ("{type: int, ge: 0.5}", "'ge' of an int field must be a whole number"),
    ],
)
def test_constraints_pydantic_cannot_build_are_located(tmp_path: Path, field: str, message: str) -> None:
    path = write(tmp_path / "r.yaml", f"types:\n  A:\n    fields:\n      n: {field}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert message in str(caught.value) and ":4:" in str(caught.value)


def test_an_empty_batch_is_refused_at_load_time(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}}
        agents:
          a: {consumes: [{types: A, batch: {}}], publishes: A, engine: test}
        """,
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert "a batch needs size, within, or both" in str(caught.value)


def test_a_shared_group_with_a_join_is_refused_at_load_time(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}, B: {fields: {n: int}}}
        agents:
          one: {consumes: [{types: A, group: g}], publishes: B, engine: test}
          two: {consumes: [{types: [A, B], join: {}, group: g}], publishes: B, engine: test}
        """,
    )
    assert error_codes(path) == ["shared-group"]


def test_test_engine_count_may_name_an_imported_class(tmp_path: Path) -> None:
    write(
        tmp_path / "mytypes.py", "from pydantic import BaseModel\n\nclass Movie(BaseModel):\n    title: str\n"
    )
    path = write(
        tmp_path / "r.yaml",
        """
        imports: {types: ["mytypes:Movie"]}
        types: {Idea: {fields: {topic: str}}}
        agents:
          a: {consumes: Idea, publishes: Movie, engine: {kind: test, count: {Movie: 2}}}
        """,
    )
    assert ("engine-outputs", "warning") not in findings(path)


def test_two_imported_classes_with_one_name_are_refused(tmp_path: Path) -> None:
    for module in ("mytypes", "othertypes"):
        write(
            tmp_path / f"{module}.py",
            "from pydantic import BaseModel\n\nclass Movie(BaseModel):\n    t: str\n",
        )
    path = write(tmp_path / "r.yaml", 'imports: {types: ["mytypes:Movie", "othertypes:Movie"]}\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert "two imported types are both named 'Movie'" in str(caught.value)


def test_a_self_loop_without_self_trigger_is_no_cycle(tmp_path: Path) -> None:
    text = "types: {A: {fields: {n: int}}}\nagents:\n  a: {consumes: A, publishes: A, engine: test%s}\n"
    assert ("unbounded-cycle", "warning") not in findings(write(tmp_path / "off.yaml", text % ""))
    on = write(tmp_path / "on.yaml", text % ", self_trigger: true")
    assert ("unbounded-cycle", "warning") in findings(on)


def test_a_cycle_with_a_where_condition_is_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}, B: {fields: {n: int}}}
        agents:
          ping: {consumes: A, publishes: B, engine: test}
          pong: {consumes: [{types: B, where: n < 3}], publishes: A, engine: test}
        """,
    )
    assert ("unbounded-cycle", "warning") not in findings(path)


@pytest.mark.parametrize(
    ("visibility", "fires"),
    [
        ("{kind: private, agents: [other]}", False),
        ("{kind: labelled, labels: [ops]}", False),
        ("{kind: tenant, tenant: acme}", False),
        ("{kind: after, ttl: 1m, then: {kind: private, agents: [other]}}", False),
        ("{kind: after, ttl: 1m}", True),
        ("{kind: private, agents: [reader]}", True),
    ],
)
def test_visibility_that_hides_a_type_from_its_consumer(tmp_path: Path, visibility: str, fires: bool) -> None:
    path = write(
        tmp_path / "r.yaml",
        f"""
        types: {{A: {{fields: {{n: int}}}}, B: {{fields: {{n: int}}}}}}
        agents:
          writer: {{consumes: A, publishes: [{{type: B, visibility: {visibility}}}], engine: test}}
          reader: {{consumes: B, publishes: A, engine: test}}
          other: {{consumes: B, publishes: A, engine: test}}
        """,
    )
    never = [d for d in load_recipe(path).findings if d.code == "never-fires" and "'reader'" in d.message]
    assert bool(never) != fires


def test_from_agents_that_never_publish_the_type(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}, B: {fields: {n: int}}}
        agents:
          maker: {consumes: A, publishes: B, engine: test}
          taker: {consumes: [{types: B, from: [taker]}], publishes: A, engine: test}
        """,
    )
    assert ("never-fires", "warning") in findings(path)


def test_function_engine_outputs_are_checked_against_publishes(tmp_path: Path) -> None:
    write(
        tmp_path / "mytypes.py",
        """
        from pydantic import BaseModel
        from flock_cli import flock_type

        @flock_type(name="Movie")
        class Movie(BaseModel):
            title: str

        @flock_type(name="Poster")
        class Poster(BaseModel):
            url: str

        def make(inputs) -> list[Poster]:
            return []
        """,
    )
    path = write(
        tmp_path / "r.yaml",
        """
        imports: {types: ["mytypes:Movie", "mytypes:Poster"]}
        agents:
          a: {consumes: Movie, publishes: Movie, engine: {kind: function, function: "mytypes:make"}}
        """,
    )
    assert error_codes(path) == ["engine-outputs"]


def test_imports_resolve_next_to_an_included_file(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "sharedlib.py", "def double(inputs):\n    return []\n")
    write(
        tmp_path / "shared" / "agents.yaml",
        """
        types: {A: {fields: {n: int}}}
        agents:
          a: {consumes: A, publishes: A, engine: {kind: function, function: "sharedlib:double"}}
        """,
    )
    path = write(tmp_path / "r.yaml", "include: shared/agents.yaml\n")
    assert load_recipe(path).resolved.agents["a"].engines[0][1] is not None


BASE = """
types: {A: {fields: {n: int}}}
imports: {tools: ["mytypes:three", "os.path:join", "posixpath:join"]}
agents:
  a:
    consumes: A
    publishes: A
"""


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ('    engine: {kind: function, function: "mytypes:VALUE"}', "'mytypes:VALUE' is not callable"),
        ('    engine: {kind: function, function: "mytypes:three"}', "'mytypes:three' takes 3 argument(s)"),
        ("    engine: test\n    calls: mytypes:three", "the calls function is called with 1"),
        ('    engine: test\n    best_of: {n: 2, score: "mytypes:VALUE"}', "'mytypes:VALUE' is not callable"),
        (
            '    engine: test\n    utilities: [{use: "mytypes:Audit", with: {lable: x}}]',
            "has no option 'lable'",
        ),
    ],
)
def test_functions_must_be_callable_with_the_right_arguments(tmp_path: Path, tail: str, message: str) -> None:
    write(
        tmp_path / "mytypes.py",
        """
        from flock_cli import AgentComponent

        VALUE = 42

        def three(a, b, c):
            return None

        class Audit(AgentComponent):
            label: str = "x"
        """,
    )
    path = tmp_path / "r.yaml"
    path.write_text(BASE.lstrip() + tail + "\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    text = str(caught.value)
    assert message in text, text
    assert "two imported tools are both named 'join'" in text


def test_contradictory_counts_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}, B: {fields: {n: int}}}
        agents:
          a: {consumes: A, publishes: [{type: B, count: 1}], engine: {kind: test, count: 2}}
        """,
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert "the test engine makes 2 'B' per run, but publishes declares count 1" in str(caught.value)


def test_an_agent_fed_only_from_outside_is_no_never_fires_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        "types: {A: {fields: {n: int}}}\nagents:\n  a: {consumes: A, publishes: A, engine: test}\n",
    )
    assert ("never-fires", "warning") not in findings(path)
    only_self = write(
        tmp_path / "s.yaml",
        "types: {A: {fields: {n: int}}}\n"
        "agents:\n  a: {consumes: [{types: A, from: [a]}], publishes: A, engine: test}\n",
    )
    assert ("never-fires", "warning") in findings(only_self)


def test_type_names_are_ascii(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", "types: {Café: {fields: {n: int}}}\n")
    with pytest.raises(RecipeError):
        load_recipe(path)


def test_agents_that_all_feed_each_other_are_one_cycle_finding(tmp_path: Path) -> None:
    """Seven agents that consume and publish one type form thousands of simple cycles; the check
    reports the group once, as a shortest cycle through its first agent (listing every cycle
    took exponential time)."""
    agents = "".join(f"  a{i}: {{consumes: A, publishes: A, engine: test}}\n" for i in range(7))
    path = write(tmp_path / "r.yaml", "types: {A: {fields: {n: int}}}\nagents:\n" + agents)
    cycles = [d for d in load_recipe(path).findings if d.code == "unbounded-cycle"]
    assert [d.message for d in cycles] == ["cycle a0 -> a1 -> a0 has no where condition that can end it"]


def test_each_group_of_cycling_agents_gets_its_own_finding(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml",
        """
        types: {A: {fields: {n: int}}, B: {fields: {n: int}}, C: {fields: {n: int}}, D: {fields: {n: int}}}
        agents:
          p: {consumes: A, publishes: B, engine: test}
          q: {consumes: B, publishes: C, engine: test}
          r: {consumes: C, publishes: A, engine: test}
          s: {consumes: D, publishes: D, engine: test, self_trigger: true}
          t: {consumes: {types: A, where: "n < 3"}, publishes: D, engine: test}
        """,
    )
    cycles = [d.message for d in load_recipe(path).findings if d.code == "unbounded-cycle"]
    assert cycles == [
        "cycle p -> q -> r -> p has no where condition that can end it",
        "cycle s -> s has no where condition that can end it",
    ]


def test_a_deep_workflow_with_very_many_paths_loads(tmp_path: Path) -> None:
    """40 layers of 3 agents, each layer consuming everything the one before publishes: 3**40
    paths and no cycle. The check walked every path (it never finished); the timeout only
    stops a hang, it measures nothing."""
    import subprocess

    lines = ["types:"] + [f"  L{i}: {{fields: {{n: int}}}}" for i in range(41)] + ["agents:"]
    lines += [
        f"  a{i}_{j}: {{consumes: L{i}, publishes: L{i + 1}, engine: test}}"
        for i in range(40)
        for j in range(3)
    ]
    path = write(tmp_path / "deep.yaml", "\n".join(lines) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "120 agents" in done.stdout
