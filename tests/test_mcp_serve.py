"""`flock mcp RECIPE` as an MCP client drives it: a real subprocess on stdin/stdout, spoken to
through the official SDK's client and, as a desktop client opens a connection, in raw JSON-RPC."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app

pytest.importorskip("mcp", reason="the [mcp] extra is not installed")

from jsonschema import Draft202012Validator  # the SDK brings jsonschema
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parent.parent
FLOCK = [sys.executable, "-m", "flock_cli"]
CODE_REVIEW = str(ROOT / "recipes" / "code_review.yaml")

SLOW = """\
name: slow
types:
  Job: {fields: {n: int}}
  Done: {fields: {n: int}}
agents:
  worker:
    consumes: Job
    publishes: Done
    engine: {kind: test, latency: 3s}
"""

NOISY = """\
name: noisy
types:
  Question: {fields: {text: {type: str, min_length: 1}}}
  Answer: {fields: {text: str}}
agents:
  answerer:
    consumes: Question
    publishes: Answer
    engine: {kind: function, function: "noisy_lib:answer"}
  failer:
    consumes: Question
    publishes: Answer
    engine: {kind: function, function: "noisy_lib:fail"}
"""

NOISY_LIB = """\
import sys


def answer(inputs):
    print("a stray print on stdout")  # a library's notice: must not reach the protocol stream
    sys.stdout.flush()
    return {"text": inputs.artifacts[0].payload["text"].upper()}


def fail(inputs):
    raise RuntimeError("this agent always fails")
"""

SECRET = """\
name: secret
types:
  Case: {fields: {text: str}}
  Note: {fields: {text: str}}
  Memo: {fields: {text: str}}
agents:
  tenant_writer:
    tenant: acme
    consumes: Case
    engine: {kind: test}
    publishes:
      - type: Note
        visibility: {kind: tenant, tenant: acme}
  labelled_writer:
    consumes: Case
    engine: {kind: test}
    publishes:
      - type: Memo
        visibility: {kind: labelled, labels: [compliance]}
"""


def _params(args: list[str], cwd: Path) -> StdioServerParameters:
    # the SDK passes only a few variables by default: the suite's (no model calls, no traces) too
    return StdioServerParameters(
        command=sys.executable, args=["-m", "flock_cli", *args], env=dict(os.environ), cwd=cwd
    )


@asynccontextmanager
async def connected(args: list[str], cwd: Path) -> AsyncIterator[Client]:
    with (cwd / "server-stderr.txt").open("w") as errlog:
        async with Client(stdio_client(_params(args, cwd), errlog=errlog)) as client:
            yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return dict(result.structured_content)


async def test_a_client_publishes_waits_for_the_results_and_queries_the_board(tmp_path: Path) -> None:
    args = ["mcp", CODE_REVIEW, "--engine", "test", "--board", str(tmp_path / "b.db"), "--no-traces"]
    async with connected(args, tmp_path) as client:
        assert client.protocol_version == "2026-07-28"  # the SDK's client opens the modern era
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"publish_CodeSubmission", "wait_for_results", "query_board", "describe_flock"}
        schema = tools["publish_CodeSubmission"].input_schema
        validator = Draft202012Validator(schema)
        good = {"code": "print(1)", "language": "python"}
        assert validator.is_valid(good)
        assert not validator.is_valid({"code": "print(1)", "language": "cobol"})
        assert not validator.is_valid({"language": "python"})
        assert not validator.is_valid({**good, "extra": 1})

        published = await call(client, "publish_CodeSubmission", good)
        assert published["type"] == "CodeSubmission"
        done = await call(
            client, "wait_for_results", {"correlation_id": published["correlation_id"], "timeout": 30}
        )
        assert done["settled"] and not done["timed_out"] and done["failed"] == []
        assert done["runs_open"] == 0 and done["hidden"] == 0
        assert sorted(a["type"] for a in done["artifacts"]) == [
            "BugAnalysis",
            "CodeReview",
            "CodeSubmission",
            "SecurityAnalysis",
        ]
        assert {a["correlation_id"] for a in done["artifacts"]} == {published["correlation_id"]}
        first = done["artifacts"][0]
        assert first["id"] == published["artifact_id"] and first["produced_by"] == "mcp"
        assert first["payload"] == {**good, "author": None}

        other = await call(client, "publish_CodeSubmission", {"code": "x = 2", "language": "go"})
        await call(client, "wait_for_results", {"correlation_id": other["correlation_id"]})
        reviews = await call(client, "query_board", {"type": "CodeReview"})
        assert reviews["total"] == 2 and len(reviews["items"]) == 2
        assert reviews["items"][0]["correlation_id"] == other["correlation_id"]  # newest first
        one = await call(client, "query_board", {"correlation_id": published["correlation_id"], "limit": 1})
        assert one["total"] == 4 and [a["type"] for a in one["items"]] == ["CodeReview"]

        described = await call(client, "describe_flock", {})
        assert described["recipe"] == "code-review" and described["client"]["name"] == "mcp"
        agents = {a["name"]: a for a in described["agents"]}
        assert agents["lead_reviewer"]["consumes"] == ["BugAnalysis", "SecurityAnalysis"]
        kinds = {t["name"]: t["publish_tool"] for t in described["types"]}
        assert kinds["CodeSubmission"] == "publish_CodeSubmission" and kinds["CodeReview"] is None


async def test_bad_calls_are_tool_errors_naming_the_type_and_field(tmp_path: Path) -> None:
    args = ["mcp", CODE_REVIEW, "--engine", "test", "--board", ":memory:", "--no-traces"]
    async with connected(args, tmp_path) as client:
        bad = await client.call_tool("publish_CodeSubmission", {"code": "x", "language": "cobol"})
        assert bad.is_error
        text = bad.content[0].text  # type: ignore[union-attr]
        assert "CodeSubmission" in text and "language" in text and "python" in text
        unknown = await client.call_tool("query_board", {"type": "CodeRevew"})
        assert unknown.is_error and "Did you mean 'CodeReview'?" in unknown.content[0].text  # type: ignore[union-attr]
        nobody = await client.call_tool(
            "wait_for_results", {"correlation_id": "00000000-0000-0000-0000-000000000001", "timeout": 0}
        )
        assert nobody.is_error and "no workflow" in nobody.content[0].text  # type: ignore[union-attr]
        too_long = await client.call_tool(
            "wait_for_results", {"correlation_id": "00000000-0000-0000-0000-000000000001", "timeout": 9999}
        )
        assert too_long.is_error and "timeout" in too_long.content[0].text  # type: ignore[union-attr]
        missing = await client.call_tool("publish_Nothing", {})
        assert missing.is_error and "publish_CodeSubmission" in missing.content[0].text  # type: ignore[union-attr]
        # the server lives on after every refusal
        ok = await call(client, "publish_CodeSubmission", {"code": "x", "language": "python"})
        assert ok["artifact_id"]


async def test_wait_reports_failures_and_a_timeout_while_runs_go_on(tmp_path: Path) -> None:
    (tmp_path / "noisy.yaml").write_text(NOISY)
    (tmp_path / "noisy_lib.py").write_text(NOISY_LIB)
    async with connected(["mcp", "noisy.yaml", "--board", ":memory:", "--no-traces"], tmp_path) as client:
        published = await call(client, "publish_Question", {"text": "why?"})
        done = await call(client, "wait_for_results", {"correlation_id": published["correlation_id"]})
        assert done["settled"]
        assert [a["payload"] for a in done["artifacts"] if a["type"] == "Answer"] == [{"text": "WHY?"}]
        assert [(f["agent"], f["error_type"]) for f in done["failed"]] == [("failer", "RuntimeError")]
        assert "always fails" in done["failed"][0]["error"]
    assert "a stray print on stdout" in (tmp_path / "server-stderr.txt").read_text()

    (tmp_path / "slow.yaml").write_text(SLOW)
    async with connected(["mcp", "slow.yaml", "--board", ":memory:", "--no-traces"], tmp_path) as client:
        job = await call(client, "publish_Job", {"n": 1})
        early = await call(
            client, "wait_for_results", {"correlation_id": job["correlation_id"], "timeout": 0.5}
        )
        assert early["timed_out"] and not early["settled"] and early["runs_open"] == 1
        assert [a["type"] for a in early["artifacts"]] == ["Job"]
        late = await call(
            client, "wait_for_results", {"correlation_id": job["correlation_id"], "timeout": 30}
        )
        assert late["settled"] and [a["type"] for a in late["artifacts"]] == ["Job", "Done"]


@pytest.mark.parametrize(
    ("options", "seen", "hidden"),
    [
        ([], ["Case"], 2),
        # the Case is acme's then: only the acme agent sees it, so no Memo is written at all
        (["--tenant", "acme"], ["Case", "Note"], 0),
        (["--label", "compliance"], ["Case", "Memo"], 1),
    ],
)
async def test_the_client_sees_what_its_identity_may_see(
    tmp_path: Path, options: list[str], seen: list[str], hidden: int
) -> None:
    (tmp_path / "secret.yaml").write_text(SECRET)
    args = ["mcp", "secret.yaml", "--board", ":memory:", "--no-traces", *options]
    async with connected(args, tmp_path) as client:
        case = await call(client, "publish_Case", {"text": "t"})
        done = await call(client, "wait_for_results", {"correlation_id": case["correlation_id"]})
        assert done["settled"] and sorted(a["type"] for a in done["artifacts"]) == sorted(seen)
        assert done["hidden"] == hidden
        board = await call(client, "query_board", {})
        assert sorted(a["type"] for a in board["items"]) == sorted(seen)
        expected = {"kind": "Tenant", "tenant_id": "acme"} if "--tenant" in options else {"kind": "Public"}
        assert done["artifacts"][0]["visibility"] == expected  # a tenant's client publishes into its tenant


def _rpc(process: subprocess.Popen[str], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()


def _answer(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the server closed stdout"
    return dict(json.loads(line))


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FLOCK, *args],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _handshake(process: subprocess.Popen[str]) -> dict[str, Any]:
    """What a desktop client sends first today: initialize at 2025-06-18, then initialized."""
    _rpc(
        process,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "claude-ai", "version": "0.1.0"},
            },
        },
    )
    answer = _answer(process)
    _rpc(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return answer


def test_a_desktop_client_handshake_in_raw_json_rpc_and_nothing_else_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "noisy.yaml").write_text(NOISY)
    (tmp_path / "noisy_lib.py").write_text(NOISY_LIB)
    process = _start(["mcp", "noisy.yaml", "--board", ":memory:", "--no-traces"], tmp_path)
    try:
        init = _handshake(process)
        assert init["id"] == 0 and init["result"]["protocolVersion"] == "2025-06-18"
        assert init["result"]["serverInfo"]["name"] == "flock-noisy"
        assert "tools" in init["result"]["capabilities"]
        _rpc(process, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        listed = _answer(process)
        assert listed["id"] == 1
        names = [tool["name"] for tool in listed["result"]["tools"]]
        assert names == ["publish_Question", "wait_for_results", "query_board", "describe_flock"]
        assert listed["result"]["tools"][0]["inputSchema"]["required"] == ["text"]
        _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "publish_Question", "arguments": {"text": "hi"}},
            },
        )
        correlation = json.loads(_answer(process)["result"]["content"][0]["text"])["correlation_id"]
        _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "wait_for_results", "arguments": {"correlation_id": correlation}},
            },
        )
        assert _answer(process)["result"]["structuredContent"]["settled"] is True
        out, err = process.communicate(timeout=30)  # closes stdin: how a client ends the session
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == ""  # every message was read above: not one byte more
    assert "a stray print on stdout" in err  # the agent's print went to stderr
    assert "flock mcp stopped: 2 runs, 1 failed" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_server_cleanly_letting_the_run_in_flight_finish(tmp_path: Path, sig: int) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW)
    process = _start(["mcp", "slow.yaml", "--board", "b.db", "--no-traces"], tmp_path)
    try:
        _handshake(process)
        _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "publish_Job", "arguments": {"n": 1}},
            },
        )
        assert "result" in _answer(process)
        process.send_signal(sig)  # the client still holds stdin open
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == ""
    assert "flock mcp stopped: 1 runs, 0 failed" in err  # the 3 s run finished before the exit
    board = subprocess.run(
        [*FLOCK, "board", "list", "--board", "b.db", "--type", "Done", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(board.stdout)["total"] == 1, board.stderr


def test_misuse_exits_2_with_one_message(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["mcp", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml" in missing.output and "Traceback" not in missing.output
    (tmp_path / "bad.yaml").write_text("types:\n  A: {fields: {x: int}}\nagents:\n  a:\n    consumes: B\n")
    bad = runner.invoke(app, ["mcp", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and re.search(r"bad\.yaml:5:\d+", bad.output), bad.output
    (tmp_path / "mcp.yaml").write_text(SLOW.replace("worker:", "mcp:"))
    named = runner.invoke(app, ["mcp", str(tmp_path / "mcp.yaml")])
    assert named.exit_code == 2 and "agent named 'mcp'" in named.output


def test_without_the_extra_the_command_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mcp", "mcp.server"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import mcp` meets when it is not installed
    result = CliRunner().invoke(app, ["mcp", CODE_REVIEW, "--engine", "test"])
    assert result.exit_code == 2
    assert 'pip install "flock-flow[mcp]"' in result.output and "Traceback" not in result.output


def test_the_cli_starts_without_importing_the_sdk() -> None:
    code = (
        "import sys, flock_cli.cli.app;"
        " print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == "[]"


def _desktop_config() -> dict[str, Any]:
    text = (ROOT / "docs" / "mcp.md").read_text(encoding="utf-8")
    section = text[text.index("## Drive a flock from an MCP client") :]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, "docs/mcp.md: no JSON block in the section"
    return dict(json.loads(block.group(1)))


async def test_the_claude_desktop_config_in_the_docs_starts_a_working_server(tmp_path: Path) -> None:
    servers = _desktop_config()["mcpServers"]
    (entry,) = servers.values()
    home = "/home/you/flock-flow"
    assert entry["command"] == f"{home}/.venv/bin/flock"
    args = [arg.replace(home, str(ROOT)) for arg in entry["args"]]
    assert args[0] == "mcp" and Path(args[1]).is_file()
    board = args.index("--board") + 1
    args[board] = str(tmp_path / "board.db")  # the documented one is in the checkout
    async with connected(args, tmp_path) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "publish_CodeSubmission" in tools and "wait_for_results" in tools
        described = await call(client, "describe_flock", {})
        assert described["recipe"] == "code-review"
        # no model here: the recipe's recording answers for the submission it was made with
        payload = json.loads((ROOT / "recipes" / "inputs" / "code_submission.json").read_text())
        published = await call(client, "publish_CodeSubmission", payload)
        done = await call(client, "wait_for_results", {"correlation_id": published["correlation_id"]})
        assert done["settled"] and [a["type"] for a in done["artifacts"]][-1] == "CodeReview"
    assert (tmp_path / "board.db").is_file()


async def test_replay_from_a_recording_and_traces_where_asked(tmp_path: Path) -> None:
    recipe = (ROOT / "recipes" / "code_review.yaml").read_text(encoding="utf-8")
    assert "\nrecording: recordings/code_review.jsonl\n" in recipe
    (tmp_path / "review.yaml").write_text(recipe.replace("\nrecording: recordings/code_review.jsonl\n", "\n"))
    refused = CliRunner().invoke(app, ["mcp", str(tmp_path / "review.yaml"), "--board", ":memory:"])
    assert refused.exit_code == 2  # dspy agents with no model and nothing to replay
    recording = str(ROOT / "recipes" / "recordings" / "code_review.jsonl")
    traces = tmp_path / "t.duckdb"
    args = ["mcp", "review.yaml", "--board", ":memory:", "--replay-from", recording, "--traces", str(traces)]
    async with connected(args, tmp_path) as client:
        payload = json.loads((ROOT / "recipes" / "inputs" / "code_submission.json").read_text())
        published = await call(client, "publish_CodeSubmission", payload)
        done = await call(client, "wait_for_results", {"correlation_id": published["correlation_id"]})
        assert done["settled"] and done["failed"] == []
        (review,) = [a["payload"] for a in done["artifacts"] if a["type"] == "CodeReview"]
        assert review["verdict"] in {"approve", "request_changes", "reject"}
    assert traces.is_file()


def test_a_second_signal_aborts_the_run_in_flight_and_hands_it_back(tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW.replace("latency: 3s", "latency: 60s"))
    process = _start(["mcp", "slow.yaml", "--board", "b.db", "--no-traces"], tmp_path)
    try:
        _handshake(process)
        _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "publish_Job", "arguments": {"n": 1}},
            },
        )
        assert "result" in _answer(process)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        for line in process.stderr:
            if "stopping" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert out == ""
    assert "1 handed back to the board" in err


async def test_work_another_process_publishes_to_the_board_runs_here_too(tmp_path: Path) -> None:
    import anyio

    (tmp_path / "fast.yaml").write_text(SLOW.replace("latency: 3s", "latency: 0s"))
    async with connected(["mcp", "fast.yaml", "--board", "b.db", "--no-traces"], tmp_path) as client:
        published = subprocess.run(
            [*FLOCK, "publish", "Job", "-", "--recipe", "fast.yaml", "--board", "b.db"],
            input='{"n": 7}',
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        with anyio.fail_after(30):
            while not (done := await call(client, "query_board", {"type": "Done"}))["total"]:
                await anyio.sleep(0.2)
        assert done["total"] == 1 and done["items"][0]["produced_by"] == "worker"
        job = (await call(client, "query_board", {"type": "Job"}))["items"][0]
        assert job["payload"] == {"n": 7} and job["produced_by"] != "mcp"
        settled = await call(client, "wait_for_results", {"correlation_id": job["correlation_id"]})
        assert settled["settled"] and [a["type"] for a in settled["artifacts"]] == ["Job", "Done"]


def test_a_model_the_test_engine_makes_useless_is_noted_on_stderr(tmp_path: Path) -> None:
    done = subprocess.run(
        [*FLOCK, "mcp", str(ROOT / "recipes" / "notes_qa.yaml"), "--engine", "test", "--model", "x",
         "--no-traces", "--board", ":memory:"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note: --model has no effect on this run: --engine test replaces the dspy engines" in done.stderr
    assert done.stdout == ""  # stdin closed at once: not one protocol message was asked for
