"""MCP servers declared in a recipe: the ``mcp_servers`` key, ``server.tool`` names in agents'
``tools``, ``flock check --connect``, and a recorded run replayed with the server gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from typer.testing import CliRunner

from flock_cli import DSPyEngine
from flock_cli.cli.app import app
from flock_cli.recipe import RecipeError, load_recipe
from tests.openai_server import openai_server

SERVER = str(Path(__file__).with_name("mcp_servers.py"))
runner = CliRunner()

RECIPE = """\
mcp_servers:
  notes:
    command: {python}
    args: [{server}, stdio]
    env: {{FLOCK_TEST_PIDFILE: {pidfile}}}
    timeout: 5
    max_restarts: 1
types:
  Question:
    fields: {{text: str}}
  Reply:
    fields: {{text: str}}
agents:
  reader:
    description: Answer the question from the notes.
    consumes: Question
    publishes: Reply
    engine: dspy
    tools: [{tools}]
"""


def write_recipe(folder: Path, tools: str = "notes.read_note, notes.add", **extra: str) -> Path:
    recipe = folder / "notes.yaml"
    text = RECIPE.format(python=sys.executable, server=SERVER, pidfile=folder / "server.pid", tools=tools)
    recipe.write_text(text + "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return recipe


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_an_unknown_server_in_a_tool_name_is_a_load_error_with_its_place(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, tools="notes.read_note, nots.add")
    try:
        load_recipe(recipe)
    except RecipeError as exc:
        [diagnostic] = exc.diagnostics
    else:
        raise AssertionError("loaded")
    rendered = diagnostic.render()
    assert f"{recipe}:19:30: error" in rendered  # the name in `tools:`
    assert "unknown MCP server 'nots' in tool 'nots.add'" in rendered
    assert "did you mean 'notes'" in rendered.lower()


def test_server_declarations_are_checked_when_loading(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("mcp_servers:\n  x:\n    command: a\n    url: http://127.0.0.1:1/mcp\n    tmeout: 3\n")
    result = flock("validate", recipe)
    assert result.exit_code == 2
    assert f"{recipe}:5:5: error: unknown key 'tmeout'" in result.output
    assert "Did you mean 'timeout'?" in result.output
    recipe.write_text("mcp_servers:\n  x:\n    command: a\n    url: http://127.0.0.1:1/mcp\n")
    result = flock("validate", recipe)
    assert result.exit_code == 2 and "exactly one of 'command' and 'url'" in result.output
    # timeouts are durations, as everywhere in a recipe
    recipe.write_text("mcp_servers:\n  x:\n    url: http://127.0.0.1:1/mcp\n    timeout: 90s\n"
                      "    startup_timeout: 1m\n")  # fmt: skip
    server = load_recipe(recipe).definition.mcp_servers["x"]
    assert (server.timeout, server.startup_timeout) == (90.0, 60.0)
    recipe.write_text("mcp_servers:\n  x:\n    url: http://127.0.0.1:1/mcp\n    timeout: soon\n")
    result = flock("validate", recipe)
    assert result.exit_code == 2 and f"{recipe}:4:14: error" in result.output, result.output


def test_validate_and_check_stay_offline_and_check_connect_finds_a_misnamed_tool(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, tools="notes.read_note, notes.ad")
    assert flock("validate", recipe).exit_code == 0
    assert flock("check", recipe).exit_code == 0
    assert not (tmp_path / "server.pid").exists()  # nothing was started
    result = flock("check", "--connect", recipe)
    assert result.exit_code == 2, result.output
    assert f"{recipe}:19:30: error" in result.output
    assert "MCP server 'notes' offers no tool 'ad'" in result.output
    assert "Did you mean 'notes.add'?" in result.output
    pid = int((tmp_path / "server.pid").read_text())
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    )


def test_check_connect_lists_the_tools_of_a_good_recipe_and_reports_a_server_that_cannot_start(
    tmp_path: Path,
) -> None:
    recipe = write_recipe(tmp_path)
    result = flock("check", "--connect", recipe)
    assert result.exit_code == 0, result.output
    assert "MCP server notes: 6 tool(s): add, crash, env_value, hang, read_note, working_dir" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        recipe.read_text().replace(f"command: {sys.executable}", "command: /nonexistent/server")
    )
    result = flock("check", "--connect", broken)
    assert result.exit_code == 2
    assert (
        f"{broken}:2:" in result.output
        and "MCP server 'notes' (/nonexistent/server) could not start" in result.output
    )


ANSWERS = [
    {"next_thought": "read it", "next_tool_name": "notes.read_note", "next_tool_args": {"name": "alpha"}},
    {"next_thought": "add", "next_tool_name": "notes.add", "next_tool_args": {"a": 20, "b": 22}},
    {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
    {"reasoning": "the notes say so", "reply": {"text": "Alpha is the first letter; 42"}},
]


async def record(recipe: Path, store: Path) -> str:
    loaded = load_recipe(recipe)
    built = loaded.build(model="scripted/model", traces=store)
    [engine] = built.agents[0].engines
    assert isinstance(engine, DSPyEngine)
    engine.lm = DummyLM(ANSWERS, adapter=dspy.JSONAdapter())
    Question = loaded.resolved.types["Question"]
    async with built.traced_run("record") as scope:
        await built.publish(Question(text="what is alpha?"))
        summary = await built.run_until_idle()
    await built.shutdown()
    assert summary.ok, summary.failures
    return scope.trace_id


def test_a_recorded_run_replays_without_its_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    recipe = write_recipe(tmp_path)
    store = tmp_path / "traces.duckdb"
    run_id = asyncio.run(record(recipe, store))
    (tmp_path / "server.pid").unlink()
    spans = flock("trace", "export", run_id, "--traces", store, "--format", "otlp")
    assert spans.exit_code == 0, spans.output
    for name in ("execute_tool notes.read_note", "execute_tool notes.add"):
        assert f'"{name}"' in spans.stdout
    assert "gen_ai.tool.call.result" in spans.stdout and "Alpha is the first letter." in spans.stdout
    exported = tmp_path / "recordings" / "notes.jsonl"
    exported.parent.mkdir()
    result = flock("trace", "export", run_id, "--format", "recording", "-o", exported, "--traces", store)
    assert result.exit_code == 0, result.output
    [line] = [json.loads(x) for x in exported.read_text().splitlines()]
    assert [c["tool"] for c in line["tool_calls"]] == ["notes.read_note", "notes.add"]
    assert [c["result"] for c in line["tool_calls"]] == ["Alpha is the first letter.", "42"]
    assert sorted(t["name"] for t in line["tools"]) == ["add", "read_note"]
    # the server is gone: replay must not start it
    gone = recipe.read_text().replace(f"command: {sys.executable}", "command: /nonexistent/server")
    offline = tmp_path / "offline.yaml"
    offline.write_text(gone + "recording: recordings/notes.jsonl\n")
    inputs = tmp_path / "q.json"
    inputs.write_text(json.dumps({"text": "what is alpha?"}))
    for args in (
        ("run", offline, "-i", f"Question={inputs}", "--board", ":memory:", "--json"),
        (
            "run",
            recipe,
            "-i",
            f"Question={inputs}",
            "--board",
            ":memory:",
            "--json",
            "--replay-from",
            exported,
        ),
    ):
        result = flock(*args)
        assert result.exit_code == 0, result.output
        replies = [a["payload"] for a in json.loads(result.stdout)["artifacts"] if a["type"] == "Reply"]
        assert replies == [{"text": "Alpha is the first letter; 42"}]
    assert not (tmp_path / "server.pid").exists()


def test_ctrl_c_of_flock_run_leaves_no_server_process(tmp_path: Path) -> None:
    # `flock run` in its own process, on a model served over real HTTP on 127.0.0.1 whose answer
    # calls the tool that never answers; Ctrl-C (SIGINT) twice while the call hangs.
    call_hang = json.dumps({"next_thought": "wait", "next_tool_name": "notes.hang", "next_tool_args": {}})
    with openai_server(lambda body: call_hang) as model:
        recipe = write_recipe(tmp_path, tools="notes.hang")
        text = recipe.read_text().replace("timeout: 5", "timeout: 600")
        model_key = (
            f"model: {{name: openai/loopback, api_base: '{model.api_base}', api_key_env: FLOCK_TEST_KEY}}"
        )
        recipe.write_text(text + model_key + "\n")
        inputs = tmp_path / "q.json"
        inputs.write_text(json.dumps({"text": "hang"}))
        env = {**os.environ, "FLOCK_TEST_KEY": "not-a-secret"}
        env.pop("FLOCK_BLOCK_MODEL_CALLS", None)
        command = [sys.executable, "-m", "flock_cli", "run", str(recipe), "-i", f"Question={inputs}",
                   "--board", ":memory:"]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            pidfile = tmp_path / "server.pid"
            deadline = time.monotonic() + 60
            while not (pidfile.exists() and model.requests) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
            server_pid = int(pidfile.read_text())
            time.sleep(1.0)  # the hanging call is under way
            assert _alive(server_pid)
            proc.send_signal(signal.SIGINT)  # stop taking work: the run in flight still hangs
            time.sleep(1.0)
            assert proc.poll() is None and _alive(server_pid)
            proc.send_signal(signal.SIGINT)  # the second Ctrl-C aborts it
            _, stderr = proc.communicate(timeout=30)
            assert proc.returncode != 0 and "stopping" in stderr
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"


def test_max_iters_of_the_tool_loop_is_a_recipe_option(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, dspy="{max_iters: 7}", model="openai/not-called")
    text = recipe.read_text().replace("    engine: dspy\n", "    engine: {kind: dspy, max_iters: 3}\n")
    recipe.write_text(text)
    [engine] = next(a for a in load_recipe(recipe).build().agents if a.name == "reader").engines
    assert engine.max_iters == 3  # type: ignore[attr-defined]
    recipe.write_text(text.replace("{kind: dspy, max_iters: 3}", "dspy"))
    [engine] = next(a for a in load_recipe(recipe).build().agents if a.name == "reader").engines
    assert engine.max_iters == 7  # type: ignore[attr-defined]  (the recipe's dspy: default)
