"""The `flock` command line, through Typer's runner (in process) and as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
runner = CliRunner()


def flock(*args: str | Path, input: str | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


SLOW_RECIPE = """
    name: slow
    types:
      Job:
        fields: {n: int}
      Done:
        fields: {n: int}
    agents:
      worker:
        consumes: Job
        publishes: Done
        engine: {kind: function, function: "slow_lib:work"}
"""
SLOW_LIB = """
    import asyncio, os

    async def work(inputs):
        await asyncio.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        return [{"n": a.payload["n"] * 10} for a in inputs.artifacts]
"""


@pytest.fixture
def slow_recipe(tmp_path: Path) -> Path:
    write(tmp_path / "slow_lib.py", SLOW_LIB)
    return write(tmp_path / "slow.yaml", SLOW_RECIPE)


# -- validate, check, graph, schema, init --------------------------------------------------------


def test_validate_reports_a_summary_and_json() -> None:
    result = flock("validate", RECIPES / "code_review.yaml")
    assert result.exit_code == 0
    assert "valid" in result.stdout and "4 types, 3 agents" in result.stdout
    data = json.loads(flock("validate", RECIPES / "ticket_routing.yaml", "--json").stdout)
    assert data["valid"] is True and len(data["files"]) == 2  # the root and its include


def test_validate_errors_exit_2_with_positions(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "agents:\n  a:\n    consumes: Movie\n")
    result = flock("validate", bad)
    assert result.exit_code == 2
    assert f"{bad}:3:15: error: unknown type 'Movie' at agents.a.consumes\n" in result.stderr
    assert "Traceback" not in result.output
    data = json.loads(flock("validate", bad, "--json").stdout)
    assert data["valid"] is False and data["diagnostics"][0]["line"] == 3


def test_check_exits_1_on_warnings(tmp_path: Path) -> None:
    assert flock("check", RECIPES / "pipeline.yaml").exit_code == 0
    loop = write(
        tmp_path / "loop.yaml",
        """
        types:
          A: {fields: {x: int}}
          B: {fields: {x: int}}
        agents:
          ping: {consumes: A, publishes: B, engine: test}
          pong: {consumes: B, publishes: A, engine: test}
          idle: {publishes: A, engine: test}
        """,
    )
    result = flock("check", loop, "--json")
    assert result.exit_code == 1
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert {"unbounded-cycle", "never-runs"} <= codes


def test_graph_as_tree_mermaid_and_json() -> None:
    tree = flock("graph", RECIPES / "code_review.yaml").stdout
    assert tree.splitlines()[0] == "CodeSubmission"
    assert "└─> lead_reviewer  [join]" in tree
    mermaid = flock("graph", RECIPES / "code_review.yaml", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and 'A0["bug_detector"]' in mermaid and "A0 --> T1" in mermaid
    data = json.loads(flock("graph", RECIPES / "code_review.yaml", "--json").stdout)
    assert {"kind": "publishes", "agent": "lead_reviewer", "type": "CodeReview", "label": ""} in data["edges"]


def test_schema_of_recipes_and_of_a_type(tmp_path: Path) -> None:
    from flock_cli.recipe.schema import schema_text

    assert flock("schema").stdout == schema_text()
    data = json.loads(flock("schema", "Idea", "--recipe", RECIPES / "pipeline.yaml").stdout)
    assert data["properties"]["topic"]["minLength"] == 3
    assert flock("schema", "Idea").exit_code == 2
    result = flock("schema", "Idae", "--recipe", RECIPES / "pipeline.yaml")
    assert result.exit_code == 2 and "Did you mean 'Idea'?" in result.stderr


def test_init_scaffolds_a_recipe_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert flock("init").exit_code == 0
    assert (
        Path("recipe.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=schemas/recipe.schema.json")
    )
    assert Path("schemas/recipe.schema.json").exists()
    assert flock("check", "recipe.yaml", "-q").exit_code == 0
    result = flock("run", "recipe.yaml", "--input", "Idea=-", "--json", input='{"topic": "blackboards"}')
    assert result.exit_code == 0, result.output
    assert [a["type"] for a in json.loads(result.stdout)["final_artifacts"]] == ["Review"]
    again = flock("init")
    assert again.exit_code == 2 and "already exists" in again.stderr


# -- run -----------------------------------------------------------------------------------------


def test_run_prints_final_artifacts_and_summary(tmp_path: Path) -> None:
    result = flock(
        "run",
        RECIPES / "code_review.yaml",
        "--engine",
        "test",
        "--board",
        tmp_path / "board.db",
        "--input",
        f"CodeSubmission={RECIPES / 'inputs' / 'code_submission.json'}",
    )
    assert result.exit_code == 0, result.output
    assert "final artifacts (1)" in result.stdout and "CodeReview" in result.stdout
    assert "summary: 3 runs" in result.stdout
    listed = json.loads(flock("board", "list", "--board", tmp_path / "board.db", "--json").stdout)
    assert listed["total"] == 4


@pytest.mark.parametrize("engine", [["--engine", "test"], []], ids=["test-engine", "recorded-model"])
def test_three_submissions_in_one_run_give_three_reviews_each_from_its_own_analyses(
    tmp_path: Path, engine: list[str]
) -> None:
    """The reported mix-up: one `flock run` with a file of three submissions paired one
    submission's bug analysis with another's security analysis. Each review now derives, through
    its two analyses, from exactly one submission (checked on the board's lineage), on the test
    engine and on the local model's recorded answers."""
    board = tmp_path / "board.db"
    inputs = f"CodeSubmission={RECIPES / 'inputs' / 'code_submissions.json'}"
    result = flock("run", RECIPES / "code_review.yaml", *engine, "--board", board, "-i", inputs)
    assert result.exit_code == 0, result.output
    assert "final artifacts (3)" in result.stdout
    listed = json.loads(flock("board", "list", "--board", board, "--type", "CodeReview", "--json").stdout)
    assert listed["total"] == 3
    sources = []
    for review in listed["artifacts"]:
        shown = flock("board", "lineage", review["id"], "--board", board, "--json")
        parents = json.loads(shown.stdout)["parents"]
        assert sorted(p["type"] for p in parents) == ["BugAnalysis", "CodeSubmission", "SecurityAnalysis"]
        assert {p["correlation_id"] for p in parents} == {review["correlation_id"]}
        sources += [p["id"] for p in parents if p["type"] == "CodeSubmission"]
    assert len(set(sources)) == 3  # one review per submission


def test_run_exits_1_when_the_breaker_trips() -> None:
    result = flock(
        "run",
        RECIPES / "feedback_loop.yaml",
        "--engine=test",
        "--board=:memory:",
        f"--input=Brief={RECIPES / 'inputs' / 'brief.json'}",
        "--json",
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["summary"]["breaker_trips"][0]["agent"] == "writer"


def test_run_refuses_dspy_agents_without_a_model_or_recording(tmp_path: Path) -> None:
    recipe = tmp_path / "pipeline.yaml"  # the example without its recording
    recipe.write_text(
        (RECIPES / "pipeline.yaml").read_text().replace("recording: recordings/pipeline.jsonl", "")
    )
    result = flock("run", recipe, "--board=:memory:", "-i", f"Idea={RECIPES / 'inputs/idea.json'}")
    assert result.exit_code == 2
    assert "agent 'planner' uses the dspy engine but no model is configured" in result.stderr
    for way in ("--model MODEL", "FLOCK_MODEL", "--engine test"):
        assert way in result.stderr


def test_a_blocked_model_call_fails_the_run_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOCK_MODEL", "openai/gpt-4o-mini")  # a model is configured, calls are blocked
    result = flock(
        "run", RECIPES / "pipeline.yaml", "--board=:memory:", "-i", f"Idea={RECIPES / 'inputs/idea.json'}"
    )
    assert result.exit_code == 1
    assert "a real call to model 'openai/gpt-4o-mini' was blocked" in result.output


def test_model_flag_says_when_it_has_no_effect() -> None:
    result = flock(
        "run", RECIPES / "pipeline.yaml", "--engine", "test", "--model", "openai/x", "--board=:memory:",
        "-i", f"Idea={RECIPES / 'inputs/idea.json'}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: --model has no effect on this run: --engine test replaces the dspy engines" in result.stderr


def test_invalid_input_names_type_and_field_and_writes_nothing(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    payload = write(tmp_path / "idea.json", '[{"topic": "fine topic"}, {"topic": "x"}]')
    result = flock(
        "run", RECIPES / "pipeline.yaml", "--engine=test", f"--board={board}", "-i", f"Idea={payload}"
    )
    assert result.exit_code == 2
    assert "Invalid payload for type 'Idea': topic:" in result.stderr
    assert not board.exists()  # nothing was published, not even the valid first item


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "Idea"], "--input takes TYPE=FILE"),
        (["-i", "Idae=x.json"], "Did you mean 'Idea'?"),
        (["-i", "Idea=missing.json"], "no such file: missing.json"),
        (["--engine", "bogus", "-i", "Idea=-"], "Invalid value for '--engine'"),
        ([], "nothing to run: pass --input TYPE=FILE (the recipe starts from Idea)"),
    ],
)
def test_run_misuse_exits_2_with_one_message(args: list[str], message: str) -> None:
    result = flock("run", RECIPES / "pipeline.yaml", "--board=:memory:", "--engine=test", *args, input="{}")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


# -- publish and board ---------------------------------------------------------------------------


def test_publish_validates_and_writes_to_the_board(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    recipe = RECIPES / "pipeline.yaml"
    result = flock(
        "publish", "Idea", "-", "--recipe", recipe, "--board", board, "--tag", "demo", "--json",
        "--visibility", "labelled:editors", input='{"topic": "queues"}',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [stored] = json.loads(result.stdout)
    assert stored["tags"] == ["demo"] and stored["visibility"]["kind"] == "Labelled"
    bad = flock("publish", "Idea", "-", "--recipe", recipe, "--board", board, input='{"topic": 3}')
    assert bad.exit_code == 2 and "Invalid payload for type 'Idea': topic" in bad.stderr
    assert json.loads(flock("board", "list", "--board", board, "--json").stdout)["total"] == 1
    shown = flock("board", "show", stored["id"][:8], "--board", board)
    assert shown.exit_code == 0 and "queues" in shown.stdout and "Labelled(editors)" in shown.stdout


def test_board_list_of_a_type_the_board_does_not_hold_names_the_types_it_does(tmp_path: Path) -> None:
    board, recipe = tmp_path / "board.db", RECIPES / "pipeline.yaml"
    assert (
        flock(
            "publish", "Idea", "-", "--recipe", recipe, "--board", board, input='{"topic": "queues"}'
        ).exit_code
        == 0
    )
    listed = flock("board", "list", "--board", board, "--type", "Ideas")
    assert listed.exit_code == 0 and "0 of 0 artifacts" in listed.stdout
    assert "note: the board holds no Ideas; its types: Idea" in listed.stderr
    found = flock("board", "list", "--board", board, "--type", "Idea")
    assert "1 of 1 artifacts" in found.stdout and "note:" not in found.stderr


def test_one_publish_of_a_list_is_one_traced_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    traces = tmp_path / "traces.duckdb"
    monkeypatch.setenv("FLOCK_TRACES", str(traces))
    ideas = json.dumps([{"topic": "queues"}, {"topic": "locks"}, {"topic": "leases"}])
    board = tmp_path / "board.db"
    done = flock("publish", "Idea", "-", "--recipe", RECIPES / "pipeline.yaml", "--board", board, input=ideas)
    assert done.exit_code == 0, done.output
    listed = flock("trace", "list", "--traces", traces, "--json")
    runs = json.loads(listed.stdout)
    assert isinstance(runs, list), listed.output
    assert [(r["name"], r["artifacts"]) for r in runs] == [("publish Idea", 3)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--visibility", "secret"], "unknown visibility 'secret'"),
        (["--visibility", "private"], "needs a value"),
        (["--correlation-id", "nope"], "--correlation-id must be a UUID"),
        (["--board", ":memory:"], "would lose the artifact"),
    ],
)
def test_publish_misuse_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    base = ["publish", "Idea", "-", "--recipe", RECIPES / "pipeline.yaml"]
    if "--board" not in args:
        base += ["--board", tmp_path / "b.db"]
    result = flock(*base, *args, input='{"topic": "queues"}')
    assert result.exit_code == 2 and message in result.stderr


def test_publish_needs_a_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOCK_RECIPE", raising=False)
    result = flock("publish", "Idea", "-", input="{}")
    assert result.exit_code == 2 and "pass --recipe FILE (no recipe.yaml here)" in result.stderr


def test_board_lineage_and_missing_board(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    run = flock(
        "run", RECIPES / "pipeline.yaml", "--engine=test", f"--board={board}",
        "-i", f"Idea={RECIPES / 'inputs/idea.json'}", "--json",
    )  # fmt: skip
    assert run.exit_code == 0
    [article] = json.loads(run.stdout)["final_artifacts"]
    lineage = json.loads(flock("board", "lineage", article["id"], "--board", board, "--json").stdout)
    assert [a["type"] for a in lineage["parents"]] == ["Draft", "Outline", "Idea"]
    assert lineage["children"] == []
    tree = flock("board", "lineage", article["id"][:6], "--board", board).stdout
    assert "derived from (3)" in tree
    missing = flock("board", "list", "--board", tmp_path / "nope.db")
    assert missing.exit_code == 2 and "no board at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    assert flock("board", "show", "zz", "--board", board).exit_code == 2


# -- real processes: watch + publish, Ctrl-C ------------------------------------------------------


def spawn(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flock_cli", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli(*args: str | Path, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
    )


def wait_for(condition: Any, timeout: float = 20.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


def board_types(cwd: Path) -> list[str]:
    done = cli("board", "list", "--json", cwd=cwd)
    return [a["type"] for a in json.loads(done.stdout)["artifacts"]] if done.returncode == 0 else []


def test_watching_run_picks_up_what_publish_writes(slow_recipe: Path) -> None:
    cwd = slow_recipe.parent
    watcher = spawn("run", slow_recipe, "--watch", cwd=cwd)
    try:
        wait_for(lambda: (cwd / ".flock" / "slow.db").exists())
        done = cli("publish", "Job", "-", "--recipe", slow_recipe, cwd=cwd, input='{"n": 4}')
        assert done.returncode == 0, done.stderr
        wait_for(lambda: "Done" in board_types(cwd))
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    assert '"n": 40' in out and "summary: 1 run (worker 1)" in out and "stopped ok" in out


def limited(recipe: Path, concurrency: int) -> Path:
    text = recipe.read_text().replace(
        "name: slow\n", f"name: slow\nsettings: {{max_concurrency: {concurrency}}}\n"
    )
    recipe.write_text(text)
    return recipe


def test_first_ctrl_c_lets_runs_in_flight_finish_and_starts_nothing_new(slow_recipe: Path) -> None:
    cwd = slow_recipe.parent
    write(cwd / "jobs.json", json.dumps([{"n": n} for n in range(5)]))
    limited(slow_recipe, 2)
    proc = spawn("run", slow_recipe, "-i", "Job=jobs.json", cwd=cwd, env={"SLOW_SECONDS": "1.5"})
    try:
        wait_for(lambda: (cwd / ".flock" / "slow.db").exists())
        time.sleep(1.0)  # two runs in flight, three queued
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopping: no new runs start" in err
    assert "summary: 2 runs (worker 2)" in out
    assert "3 queued runs not started (left on the board)" in out and "stopped ok" in out
    resumed = cli("run", slow_recipe, cwd=cwd)  # the next run takes the three left on the board
    assert resumed.returncode == 0, resumed.stderr
    assert "summary: 3 runs (worker 3)" in resumed.stdout


def test_second_ctrl_c_aborts_and_the_next_run_resumes(slow_recipe: Path) -> None:
    cwd = slow_recipe.parent
    write(cwd / "jobs.json", '[{"n": 7}, {"n": 8}, {"n": 9}]')
    limited(slow_recipe, 1)  # one run in flight, two waiting for the slot
    proc = spawn("run", slow_recipe, "-i", "Job=jobs.json", cwd=cwd, env={"SLOW_SECONDS": "30"})
    try:
        wait_for(lambda: (cwd / ".flock" / "slow.db").exists())
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "1 interrupted run returned to the board" in out and "aborted" in out
    assert "2 queued runs not started (left on the board)" in out
    assert "Traceback" not in err and "never awaited" not in err and "destroyed" not in err
    resumed = cli("run", slow_recipe, cwd=cwd)  # no input: the deliveries left on the board run
    assert resumed.returncode == 0, resumed.stderr
    assert '"n": 70' in resumed.stdout and "summary: 3 runs (worker 3)" in resumed.stdout


def test_console_script_on_path_runs_an_example(tmp_path: Path) -> None:
    exe = shutil.which("flock", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run(
        [exe, "run", RECIPES / "ticket_routing.yaml", "--engine", "test", "-i",
         f"SupportRequest={RECIPES / 'inputs/support_requests.json'}"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "final artifacts (4)" in done.stdout
    assert (tmp_path / ".flock" / "ticket-routing.db").exists()


def test_each_recipe_has_its_own_board_and_board_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, type_name, file in [
        ("pipeline.yaml", "Idea", "idea.json"),
        ("feedback_loop.yaml", "Brief", "brief.json"),
    ]:
        flock("run", RECIPES / name, "--engine=test", "-i", f"{type_name}={RECIPES / 'inputs' / file}")
        if name == "pipeline.yaml":  # one board so far: `flock board` finds it without options
            assert json.loads(flock("board", "list", "--json").stdout)["total"] == 4
    assert sorted(p.name for p in (tmp_path / ".flock").glob("*.db")) == ["feedback-loop.db", "pipeline.db"]
    several = flock("board", "list")
    assert several.exit_code == 2 and "several boards in .flock/" in several.stderr
    listed = flock("board", "list", "--recipe", RECIPES / "pipeline.yaml", "--type", "Article", "--json")
    assert [a["type"] for a in json.loads(listed.stdout)["artifacts"]] == ["Article"]
    # the pipeline's board is untouched by the feedback loop's unfinished work
    again = flock(
        "run", RECIPES / "pipeline.yaml", "--engine=test", "-i", f"Idea={RECIPES / 'inputs/idea.json'}"
    )
    assert again.exit_code == 0, again.output


def test_shell_completion_offers_commands_and_subcommands() -> None:
    exe = shutil.which("flock", path=str(Path(sys.executable).parent))
    assert exe is not None

    def complete(words: str, index: int) -> list[str]:
        env = {
            **os.environ,
            "COMP_WORDS": words,
            "COMP_CWORD": str(index),
            "_FLOCK_COMPLETE": "complete_bash",
        }
        return subprocess.run([exe], env=env, capture_output=True, text=True, check=True).stdout.split()

    assert complete("flock bo", 1) == ["board"]
    assert complete("flock board ", 2) == ["list", "show", "lineage", "dead"]
    script = subprocess.run(
        [exe],
        env={**os.environ, "_FLOCK_COMPLETE": "source_bash"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "_flock_completion" in script.stdout


def test_board_dead_lists_what_the_breaker_held(tmp_path: Path) -> None:
    board = tmp_path / "loop.db"
    run = flock(
        "run", RECIPES / "feedback_loop.yaml", "--engine=test", f"--board={board}",
        "-i", f"Brief={RECIPES / 'inputs/brief.json'}",
    )  # fmt: skip
    assert run.exit_code == 1 and "(flock board dead)" in run.stdout
    letters = json.loads(flock("board", "dead", "--board", board, "--json").stdout)
    assert [(d["agent"], d["reason"]) for d in letters] == [("writer", "breaker")]
    text = flock("board", "dead", "--board", board).stdout
    assert "1 dead letter(s)" in text and "breaker writer" in text


def test_ctrl_c_flushes_a_partial_batch_onto_the_board(tmp_path: Path) -> None:
    recipe = RECIPES / "batch_summary.yaml"
    events = write(
        tmp_path / "events.json", json.dumps([{"service": "api", "level": "error", "message": "x"}] * 3)
    )
    watcher = spawn("run", recipe, "--engine", "test", "--watch", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".flock" / "batch-summary.db").exists())
        done = cli("publish", "LogEvent", events, "--recipe", recipe, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        time.sleep(1.5)  # routed into the batch (size 10, within 30 s): nothing runs yet
        assert "Digest" not in board_types(tmp_path)
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err  # Ctrl-C is how a watching run ends
    # the partial batch of 3 became a run, which waits on the board: no new work after Ctrl-C
    assert "1 queued run not started (left on the board)" in out and "stopped ok" in out
    resumed = cli("run", recipe, "--engine", "test", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "summariser 1" in resumed.stdout


def test_a_misspelt_payload_key_is_an_error_not_lost(tmp_path: Path) -> None:
    result = flock(
        "publish", "Idea", "-", "--recipe", RECIPES / "pipeline.yaml", "--board", tmp_path / "b.db",
        input='{"topic": "queues", "audiance": "managers"}',
    )  # fmt: skip
    assert result.exit_code == 2
    assert "Invalid payload for type 'Idea': audiance: Extra inputs are not permitted" in result.stderr


def test_publish_checks_private_agent_names(tmp_path: Path) -> None:
    result = flock(
        "publish", "Idea", "-", "--recipe", RECIPES / "pipeline.yaml", "--board", tmp_path / "b.db",
        "--visibility", "private:writr", input='{"topic": "queues"}',
    )  # fmt: skip
    assert result.exit_code == 2
    assert "the recipe has no agent 'writr'. Did you mean 'writer'?" in result.stderr
    assert not (tmp_path / "b.db").exists()


def test_run_with_nothing_to_do_on_a_board_says_so(tmp_path: Path) -> None:
    result = flock("run", RECIPES / "pipeline.yaml", "--engine=test", "--board", tmp_path / "b.db")
    assert result.exit_code == 2
    assert "nothing to run: pass --input TYPE=FILE (the recipe starts from Idea)" in result.stderr


def test_unknown_types_are_named_in_command_line_terms() -> None:
    result = flock(
        "run", RECIPES / "pipeline.yaml", "--engine=test", "--board=:memory:", "-i", "Idae=-", input="{}"
    )
    assert result.exit_code == 2
    assert (
        "has no type 'Idae'. Did you mean 'Idea'? Its types: Article, Draft, Idea, Outline." in result.stderr
    )
    assert "flock_type" not in result.stderr


def test_each_input_is_its_own_workflow_unless_the_run_shares_one(tmp_path: Path) -> None:
    """Inputs of one run are separate workflows by default (a join never pairs one input's
    artifacts with another's); --shared-correlation makes them one; --correlation-id continues
    an existing one. A gate left waiting for what nothing can still produce fails the run."""
    recipe = write(
        tmp_path / "join.yaml",
        """
        types:
          Payment: {fields: {amount: float}}
          Shipment: {fields: {carrier: str}}
          Match: {fields: {note: str}}
        agents:
          matcher:
            consumes: [{types: [Payment, Shipment], join: {within: 1m}}]
            publishes: Match
            engine: test
        """,
    )
    write(tmp_path / "p.json", '{"amount": 9.5}')
    write(tmp_path / "s.json", '{"carrier": "dhl"}')
    inputs = ["-i", f"Payment={tmp_path / 'p.json'}", "-i", f"Shipment={tmp_path / 's.json'}"]
    apart = flock("run", recipe, "--board=:memory:", *inputs, "--json")
    assert apart.exit_code == 1, apart.output
    data = json.loads(apart.stdout)
    assert data["ok"] is False and data["summary"]["runs_by_agent"] == {}
    assert len({a["correlation_id"] for a in data["artifacts"]}) == 2
    waiting = data["summary"]["pending_groups"]
    assert sorted(g["missing"][0] for g in waiting) == ["Payment", "Shipment"]
    assert {g["status"] for g in waiting} == {"stuck"}
    assert "no agent publishes Shipment: publish one with correlation id" in str(waiting)
    text = flock("run", recipe, "--board=:memory:", *inputs)
    assert "stuck matcher's gate" in text.stdout and text.stdout.rstrip().endswith("failed")

    together = flock("run", recipe, "--board=:memory:", *inputs, "--shared-correlation", "--json")
    assert together.exit_code == 0, together.output
    data = json.loads(together.stdout)
    assert data["summary"]["runs_by_agent"] == {"matcher": 1}
    assert len({a["correlation_id"] for a in data["artifacts"]}) == 1

    given = "5b8e6a52-41d4-4f7a-9a8e-000000000001"
    again = flock(
        "run", recipe, "--board=:memory:", inputs[0], inputs[1], "--correlation-id", given, "--json"
    )
    waiting = json.loads(again.stdout)
    assert {a["correlation_id"] for a in waiting["artifacts"]} == {given}
    assert [g["missing"] for g in waiting["summary"]["pending_groups"]] == [["Shipment"]]
    both = flock(
        "run", recipe, "--board=:memory:", *inputs, "--correlation-id", given, "--shared-correlation"
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_ctrl_c_while_publishing_inputs_stops_cleanly_and_says_what_was_not_published(tmp_path: Path) -> None:
    write(tmp_path / "ideas.json", json.dumps([{"topic": f"topic {n}"} for n in range(3000)]))
    proc = spawn("run", RECIPES / "pipeline.yaml", "--engine", "test", "-i", "Idea=ideas.json", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".flock" / "pipeline.db").exists())
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "summary:" in out
    listed = json.loads(cli("board", "list", "--type", "Idea", "--json", "-n", "1", cwd=tmp_path).stdout)
    unpublished = 3000 - listed["total"]
    if unpublished:  # the usual case: the run was still publishing
        assert f"{unpublished} inputs not published" in out


def test_ctrl_c_the_moment_the_board_is_opened_still_stops_with_a_summary(tmp_path: Path) -> None:
    # The board file appears before the flock is built and its event loop takes the signals: a
    # Ctrl-C then is counted and replayed, not a silent exit.
    write(tmp_path / "ideas.json", json.dumps([{"topic": f"topic {n}"} for n in range(3000)]))
    proc = spawn("run", RECIPES / "pipeline.yaml", "--engine", "test", "-i", "Idea=ideas.json", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".flock" / "pipeline.db").exists(), interval=0.001)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopping: no new runs start" in err and "Traceback" not in err
    assert "summary:" in out and "stopped ok" in out
    assert " inputs not published" in out


def test_watch_with_a_timeout_serves_that_long(slow_recipe: Path) -> None:
    start = time.monotonic()
    done = cli("run", slow_recipe, "--watch", "--timeout", "1", cwd=slow_recipe.parent)
    assert done.returncode == 0, done.stderr
    assert 1.0 <= time.monotonic() - start < 15
    assert "summary: 0 runs" in done.stdout


def test_graph_shows_visibility_and_who_cannot_see() -> None:
    tree = flock("graph", RECIPES / "multi_tenant.yaml").stdout
    assert "        Case  (Tenant(acme))\n            └─> acme_analyst\n" in tree
    assert "            └─x globex_analyst  (cannot see it)\n" in tree
    edges = json.loads(flock("graph", RECIPES / "multi_tenant.yaml", "--json").stdout)["edges"]
    assert {"kind": "publishes", "agent": "acme_support", "type": "Case", "label": "Tenant(acme)"} in edges


def test_json_commands_answer_errors_in_json_too(tmp_path: Path) -> None:
    missing = flock("board", "list", "--board", tmp_path / "nope.db", "--json")
    assert missing.exit_code == 2
    assert json.loads(missing.stdout) == {
        "ok": False,
        "error": f"no board at {tmp_path / 'nope.db'} (run a recipe first, or pass --board PATH)",
        "exit_code": 2,
    }
    assert "error: no board at" in missing.stderr


def test_a_damaged_board_file_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    # SQLite opens a board with a damaged page and reports the damage only when a query reaches
    # it: that is not a bug of ours, and the user needs what to do, not a traceback.
    ideas = tmp_path / "ideas.json"
    ideas.write_text(json.dumps([{"topic": f"topic {n} " + "x" * 400} for n in range(300)]))
    board = tmp_path / "b.db"
    made = flock(
        "run", RECIPES / "pipeline.yaml", "--engine", "test", "-i", f"Idea={ideas}", "--board", board, "-q"
    )
    assert made.exit_code == 0, made.output
    data = bytearray(board.read_bytes())
    page = data.index(b"topic 150 ") // 4096  # a page of the artifacts table, which opening never reads
    data[page * 4096 : (page + 1) * 4096] = bytes(4096)
    board.write_bytes(bytes(data))
    said = f"the board {board} is damaged (database disk image is malformed)"
    for args in (["board", "list", "--board", board], ["board", "list", "--board", board, "--json"]):
        done = flock(*args)
        assert done.exit_code == 1, done.output
        assert said in done.output and f"sqlite3 {board} .recover" in done.output, done.output
        assert isinstance(done.exception, SystemExit), done.exception  # no traceback
    data[: 100 * 4096] = bytes(100 * 4096)  # the schema too: refused when opened
    board.write_bytes(bytes(data))
    done = flock("run", RECIPES / "pipeline.yaml", "--engine", "test", "--board", board)
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit), done.output
    assert "cannot open the board" in done.output or said in done.output, done.output


def test_a_closed_stdin_or_a_full_disk_is_one_message(tmp_path: Path) -> None:
    closed = subprocess.run(
        [
            sys.executable,
            "-m",
            "flock_cli",
            "run",
            RECIPES / "pipeline.yaml",
            "--engine",
            "test",
            "-i",
            "Idea=-",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.close(0),  # started with `<&-`
    )
    assert closed.returncode == 2, closed.stderr
    assert closed.stderr.strip() == "error: --input Idea: standard input is closed; nothing to read from '-'"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "flock_cli", "validate", RECIPES / "pipeline.yaml"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: cannot write the output: No space left on device"


def test_ctrl_c_while_a_command_starts_prints_no_traceback(tmp_path: Path) -> None:
    # Before a command takes Ctrl-C over, Python is still importing it: the interruption is all
    # there is to say. (Any moment must do; these cover the import.)
    for delay in (0.02, 0.06, 0.1, 0.15, 0.25):
        proc = spawn("validate", RECIPES / "pipeline.yaml", cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if "Fatal Python error: init_import_site" in err or (proc.returncode == -signal.SIGINT and not err):
            continue  # Python itself was still starting, before any code of ours ran
        if "Traceback" in err and "flock_cli/cli/__init__.py" not in err:
            continue  # still importing the package (runpy), before the command's entry point ran
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        assert proc.returncode in (0, 1, 130), (delay, proc.returncode, err)


def test_an_interrupted_publish_of_a_list_leaves_all_or_none_of_it(tmp_path: Path) -> None:
    # Publishing the file again must not duplicate a part that went in before the Ctrl-C.
    import sqlite3

    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps([{"title": f"T{n}"} for n in range(20000)]))
    for n, delay in enumerate((0.5, 1.0, 1.5, 2.5)):
        board = tmp_path / f"b{n}.db"
        proc = spawn(
            "publish", "Topic", topics, "--recipe", RECIPES / "live_demo.yaml", "--board", board, cwd=tmp_path
        )
        wait_for(lambda: board.exists() or proc.poll() is not None, interval=0.01)  # noqa: B023
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        with sqlite3.connect(board) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM artifacts").fetchone()
        assert count in (0, 20000), (delay, count, err)
        assert "Traceback" not in err
        # 130 when the Ctrl-C was taken; once in many runs the process ended by the signal itself
        # (-2, nothing printed), a window this test does not pin down: the board held all of it.
        assert proc.returncode in (0, 130, -signal.SIGINT), (delay, proc.returncode, err)
        if count == 0:  # what it says must be what happened
            assert proc.returncode == 130 and "interrupted: none of the 20000 payloads was published" in err
        else:  # all written; interrupted while the board closed, or while listing what it published
            assert "none of" not in err, err


def test_standard_input_is_given_to_one_input_only() -> None:
    done = flock(
        "run", RECIPES / "pipeline.yaml", "--engine", "test", "-i", "Idea=-", "-i", "Idea=-", input="{}"
    )
    assert done.exit_code == 2
    assert "standard input can be read once: give '-' to one --input only" in done.output
