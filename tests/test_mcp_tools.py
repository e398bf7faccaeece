"""MCP servers as tool providers: real servers (tests/mcp_servers.py, written with the SDK) over
stdio and streamable HTTP on 127.0.0.1, driven by an agent whose model is DSPy's DummyLM calling
the tools through ReAct."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import httpx
import pytest
from dspy.utils import DummyLM
from pydantic import BaseModel

from flock_cli import DSPyEngine, Flock, flock_type
from flock_cli.errors import InvalidDeclarationError
from flock_cli.mcp_tools import McpServerError, McpToolNotFoundError

SERVER = str(Path(__file__).with_name("mcp_servers.py"))


@flock_type(name="McpQuestion")
class Question(BaseModel):
    text: str


@flock_type(name="McpAnswer")
class Answer(BaseModel):
    text: str


def react(*steps: tuple[str, dict[str, Any]], answer: str = "done") -> DummyLM:
    """A model that calls each (tool, arguments) in turn, then finishes with ``answer``."""
    script: list[dict[str, Any]] = [
        {"next_thought": f"call {tool}", "next_tool_name": tool, "next_tool_args": args}
        for tool, args in steps
    ]
    script.append({"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}})
    script.append({"reasoning": "from the tools", "mcp_answer": {"text": answer}})
    return DummyLM(script, adapter=dspy.JSONAdapter())


def observations(lm: DummyLM) -> list[str]:
    """The tool observations the model was shown in its last call."""
    text = "\n".join(m["content"] for m in lm.history[-1]["messages"])
    found = []
    for part in text.split("[[ ## observation_")[1:]:
        found.append(part.split("\n", 1)[1].split("\n\n[[", 1)[0].split("\n[[", 1)[0].strip())
    return [o for o in found if not o.startswith("Completed.")]  # the last is ReAct's own "finish"


def stdio_flock(**options: Any) -> Flock:
    flock = Flock()
    flock.mcp_server("t", command=sys.executable, args=[SERVER, "stdio"], **options)
    return flock


def asker(flock: Flock, lm: DummyLM, tools: list[Any]) -> None:
    flock.agent("asker").consumes(Question).publishes(Answer).with_tools(tools).with_engines(
        DSPyEngine(lm=lm, max_iters=6)
    )


async def answers(flock: Flock) -> list[str]:
    return [a.payload["text"] for a in await flock.store.list() if a.type == "McpAnswer"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP on 127.0.0.1, requiring a bearer token."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port), "sekrit-token"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_an_agent_calls_stdio_tools_mixed_with_python_tools() -> None:
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    flock = stdio_flock()
    lm = react(("t.read_note", {"name": "alpha"}), ("t.add", {"a": 2, "b": 3}), ("shout", {"text": "hi"}))
    asker(flock, lm, ["t.read_note", "t.add", shout])
    await flock.publish(Question(text="?"))
    summary = await flock.run_until_idle()
    await flock.shutdown()
    assert summary.ok, summary.failures
    assert observations(lm) == ["Alpha is the first letter.", "5", "HI"]
    assert await answers(flock) == ["done"]


async def test_a_glob_offers_every_matching_tool_and_tool_errors_reach_the_model() -> None:
    flock = stdio_flock(timeout=1.5)
    lm = react(("t.read_note", {"name": "gamma"}), ("t.hang", {}), ("t.add", {"a": 1, "b": 1}))
    asker(flock, lm, ["t.*"])
    await flock.publish(Question(text="?"))
    started = time.monotonic()
    summary = await flock.run_until_idle()
    await flock.shutdown()
    assert summary.ok, summary.failures
    assert time.monotonic() - started < 15
    assert observations(lm) == [
        "Error: Error executing tool read_note: no note called 'gamma'",
        "Error: the tool t.hang did not answer within 1.5s",
        "2",
    ]
    prompt = "\n".join(m["content"] for m in lm.history[0]["messages"])
    for tool in ("t.read_note", "t.add", "t.env_value", "t.crash", "t.hang"):
        assert tool in prompt


async def test_a_server_that_crashes_mid_call_is_restarted_within_its_bound(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    flock = Flock(traces=tmp_path / "traces.duckdb")
    flock.mcp_server("t", command=sys.executable, args=[SERVER, "stdio"], max_restarts=1)
    lm = react(
        ("t.crash", {}),
        ("t.add", {"a": 1, "b": 2}),
        ("t.crash", {}),
        ("t.add", {"a": 3, "b": 4}),
        answer="ok",
    )
    asker(flock, lm, ["t.*"])
    async with flock.traced_run("crash") as scope:
        await flock.publish(Question(text="?"))
        with caplog.at_level(logging.WARNING, logger="flock_cli.mcp_tools"):
            summary = await flock.run_until_idle()
    await flock.shutdown()
    from flock_cli.tracing.reader import TraceReader

    [restart] = TraceReader(tmp_path / "traces.duckdb").events(scope.trace_id, ("mcp.server_restart",))
    assert restart.agent == "asker"
    assert restart.attributes == {
        "server": "t",
        "restart": 1,
        "reason": "the connection was lost during the call (Connection closed)",
    }
    assert summary.ok, summary.failures
    seen = observations(lm)
    assert seen[0].startswith("Error: MCP server 't' stopped answering")
    assert seen[1] == "3"  # restarted
    assert seen[2].startswith("Error: MCP server 't' stopped answering")
    assert seen[3].startswith("Error: MCP server 't' (") and "max_restarts=1" in seen[3]
    assert [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()] == [
        "flock: MCP server 't' died (the connection was lost during the call (Connection closed));"
        " restarting it (1 of 1)"
    ]


async def test_servers_start_once_per_flock_are_shared_and_stop_at_shutdown(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    flock = stdio_flock(env={"FLOCK_TEST_PIDFILE": str(pidfile)})
    first, second = react(("t.add", {"a": 1, "b": 1})), react(("t.add", {"a": 2, "b": 2}))
    asker(flock, first, ["t.add"])
    flock.agent("second").consumes(Question).publishes(Answer).with_tools(["t.add"]).with_engines(
        DSPyEngine(lm=second)
    )
    await flock.publish(Question(text="?"))
    assert (await flock.run_until_idle()).ok
    pid = int(pidfile.read_text())
    pidfile.unlink()
    assert observations(first) == ["2"] and observations(second) == ["4"]
    assert not pidfile.exists()  # one process served both agents
    assert os.path.exists(f"/proc/{pid}")
    await flock.shutdown()
    assert not _alive(pid)


async def test_env_and_cwd_reach_a_stdio_server_and_env_references_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_TEST_SECRET", "hunter2")
    flock = stdio_flock(env={"GIVEN": "${FLOCK_TEST_SECRET}!"}, cwd=str(tmp_path))
    lm = react(("t.env_value", {"name": "GIVEN"}), ("t.working_dir", {}))
    asker(flock, lm, ["t.env_value", "t.working_dir"])
    await flock.publish(Question(text="?"))
    assert (await flock.run_until_idle()).ok
    await flock.shutdown()
    assert observations(lm) == ["hunter2!", str(tmp_path)]


async def test_a_missing_environment_variable_fails_the_run_naming_it_not_a_value() -> None:
    flock = stdio_flock(env={"GIVEN": "${FLOCK_TEST_UNSET_VARIABLE}"})
    asker(flock, react(), ["t.add"])
    await flock.publish(Question(text="?"))
    [failure] = (await flock.run_until_idle()).failures
    await flock.shutdown()
    assert failure.error_type == "McpConfigError"  # a user's mistake, not a runtime failure
    assert "env.GIVEN refers to environment variable FLOCK_TEST_UNSET_VARIABLE, which is not set" in str(
        failure.error
    )


async def test_streamable_http_with_headers_from_the_environment(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_TEST_TOKEN", "sekrit-token")
    flock = Flock()
    flock.mcp_server("remote", url=http_server, headers={"Authorization": "Bearer ${FLOCK_TEST_TOKEN}"})
    lm = react(("remote.read_note", {"name": "beta"}))
    asker(flock, lm, ["remote.read_note"])
    await flock.publish(Question(text="?"))
    summary = await flock.run_until_idle()
    await flock.shutdown()
    assert summary.ok, summary.failures
    assert observations(lm) == ["Beta comes second."]


async def test_a_wrong_header_is_a_startup_failure_without_the_secret(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_TEST_TOKEN", "wrong-token")
    flock = Flock()
    flock.mcp_server(
        "remote", url=http_server, headers={"Authorization": "Bearer ${FLOCK_TEST_TOKEN}"}, startup_timeout=10
    )
    with pytest.raises(McpServerError) as caught:
        await flock.mcp_servers.tools_for(["remote.*"])
    await flock.mcp_servers.aclose()
    assert "could not start" in str(caught.value) and "wrong-token" not in str(caught.value)


async def test_startup_timeout_is_enforced(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    flock = Flock()
    flock.mcp_server("slow", command=sys.executable, args=[str(silent)], startup_timeout=1)
    started = time.monotonic()
    with pytest.raises(McpServerError, match=r"did not start within 1s \(startup_timeout\)"):
        await flock.mcp_servers.tools_for(["slow.*"])
    assert time.monotonic() - started < 10


async def test_unknown_tools_and_servers_are_clear_errors() -> None:
    flock = stdio_flock()
    servers = flock.mcp_servers
    with pytest.raises(
        McpToolNotFoundError, match=r"offers no tool 'red_note'.*Did you mean 't.read_note'\?"
    ):
        await servers.tools_for(["t.red_note"])
    with pytest.raises(InvalidDeclarationError, match="names MCP server 'nope', which is not declared"):
        await servers.tools_for(["nope.read_note"])
    await servers.aclose()
    with pytest.raises(InvalidDeclarationError, match="exactly one of 'command' and 'url'"):
        Flock().mcp_server("both", command="x", url="http://127.0.0.1:1/mcp")
    with pytest.raises(InvalidDeclarationError, match="timeout"):
        Flock().mcp_server("neg", command="x", timeout=0)
    with pytest.raises(InvalidDeclarationError, match=r"server\.tool"):
        Flock().agent("a").with_tools(["nodot"])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited


async def test_a_secret_in_a_url_is_not_repeated_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOCK_TEST_HOST_TOKEN", "tok-123456")
    flock = Flock()
    port = free_port()  # nothing listens there
    flock.mcp_server(
        "remote", url=f"http://127.0.0.1:{port}/mcp?key=${{FLOCK_TEST_HOST_TOKEN}}", startup_timeout=5
    )
    with pytest.raises(McpServerError) as caught:
        await flock.mcp_servers.tools_for(["remote.*"])
    assert "tok-123456" not in str(caught.value)
    assert "${FLOCK_TEST_HOST_TOKEN}" in str(caught.value)


def test_the_synchronous_run_starts_servers_per_call_and_leaves_none_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    flock = stdio_flock(env={"FLOCK_TEST_PIDFILE": str(pidfile)})
    lms = [react(("t.add", {"a": 1, "b": 1})), react(("t.add", {"a": 2, "b": 2}))]
    flock.agent("asker").consumes(Question).publishes(Answer).with_tools(["t.add"]).with_engines(
        DSPyEngine(lm=lms[0])
    )
    pids = []
    for lm in lms:
        [engine] = flock.get_agent("asker").engines
        assert isinstance(engine, DSPyEngine)
        engine.lm = lm
        [answer] = flock.run("asker", Question(text="?"))
        assert answer.payload == {"text": "done"}
        pids.append(int(pidfile.read_text()))
        assert not _alive(pids[-1])  # its event loop ended, and the server with it
    assert pids[0] != pids[1]
    assert observations(lms[0]) == ["2"] and observations(lms[1]) == ["4"]


async def test_a_server_that_cannot_be_started_again_stays_down_after_its_restarts(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Failed restarts count too: the bound holds, and the server is not started on every call."""
    flag = tmp_path / "started"
    flock = Flock()
    flock.mcp_server("t", command=sys.executable, args=[SERVER, "stdio-once", str(flag)], max_restarts=2)
    steps = [("t.crash", {})] + [("t.add", {"a": 1, "b": 1})] * 4  # with finish: the 6 steps of max_iters
    lm = react(*steps, answer="ok")
    asker(flock, lm, ["t.*"])
    await flock.publish(Question(text="?"))
    with caplog.at_level(logging.WARNING, logger="flock_cli.mcp_tools"):
        summary = await flock.run_until_idle()
    await flock.shutdown()
    assert summary.ok, summary.failures
    seen = observations(lm)
    assert seen[0].startswith("Error: MCP server 't' stopped answering")
    assert all(o.startswith("Error: MCP server") for o in seen[1:]), seen
    assert "max_restarts=2" in seen[-1] and "max_restarts=2" in seen[-2]
    restarts = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert [m.rsplit("(", 1)[1] for m in restarts] == ["1 of 2)", "2 of 2)"]


async def test_an_answer_the_client_refuses_fails_that_call_only() -> None:
    flock = Flock()
    flock.mcp_server("t", command=sys.executable, args=[SERVER, "stdio-bad-output"], max_restarts=0)
    lm = react(("t.count", {}), ("t.add", {}), ("t.count", {}), ("t.add", {}), answer="ok")
    asker(flock, lm, ["t.*"])
    await flock.publish(Question(text="?"))
    summary = await flock.run_until_idle()
    await flock.shutdown()
    assert summary.ok, summary.failures
    seen = observations(lm)
    assert seen[0].startswith("Error: the tool's answer was not usable") and seen[2] == seen[0]
    assert seen[1] == seen[3] == "3"  # the same server, never restarted (max_restarts=0)


def test_a_server_printing_on_stdout_gets_one_line_not_a_traceback(tmp_path: Path) -> None:
    recipe = tmp_path / "banner.yaml"
    recipe.write_text(
        f"mcp_servers:\n  t: {{command: {sys.executable}, args: [{SERVER}, stdio-banner]}}\n"
        "types: {Q: {fields: {text: str}}, A: {fields: {text: str}}}\n"
        "agents: {a: {consumes: Q, publishes: A, engine: dspy, tools: [t.add]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "check", "--connect", str(recipe)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "an MCP server wrote a line on stdout that is not an MCP message (a server's own output belongs"
        " on stderr): 'Test server v1 starting...'"
    ) in done.stderr
