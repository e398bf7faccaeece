"""`flock mcp`'s hold on stdin and stdout for the whole session, not only while the SDK's
transport runs: a child process an agent starts cannot read the client's messages, a run that
finishes after the client left cannot print into the protocol stream, and a stdin the event loop
cannot watch (/dev/null) ends the session instead of hanging it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the [mcp] extra is not installed")

FLOCK = [sys.executable, "-m", "flock_cli"]

RECIPE = """\
name: stdio
types:
  Question: {fields: {text: str}}
  Answer: {fields: {text: str}}
agents:
  answerer:
    consumes: Question
    publishes: Answer
    engine: {kind: function, function: "stdio_lib:%s"}
"""

LIB = """\
import asyncio
import subprocess


def child_reads_stdin(inputs):
    # subprocess.run hands the child this process's stdin unless told otherwise
    read = subprocess.run(["cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    return {"text": f"rc={read.returncode} read={read.stdout!r} err={read.stderr!r}"}


async def prints_late(inputs):
    await asyncio.sleep(1.5)  # still running when the client closes stdin
    print("printed after the client left", flush=True)
    return {"text": "late"}
"""

HANDSHAKE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


def _start(tmp_path: Path, function: str) -> subprocess.Popen[str]:
    (tmp_path / "stdio.yaml").write_text(RECIPE % function)
    (tmp_path / "stdio_lib.py").write_text(LIB)
    return subprocess.Popen(
        [*FLOCK, "mcp", "stdio.yaml", "--board", ":memory:", "--no-traces"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _send(process: subprocess.Popen[str], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()


def _answer(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the server closed stdout"
    return dict(json.loads(line))


def _answer_within(process: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    """The next answer, failing the test (not hanging it) when none comes in time. Read on a
    thread: ``select`` on the pipe would miss a line the previous read already buffered."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(_read_line(process)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert lines, f"no answer within {seconds} s"
    assert lines[0], "the server closed stdout"
    return dict(json.loads(lines[0]))


def _read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline()


def _call(process: subprocess.Popen[str], id_: int, tool: str, arguments: dict[str, Any]) -> None:
    _send(
        process,
        {
            "jsonrpc": "2.0",
            "id": id_,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        },
    )


def _open_session(process: subprocess.Popen[str]) -> None:
    _send(process, HANDSHAKE)
    assert _answer(process)["id"] == 0
    _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=30)  # closes stdin: the client ends the session
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_child_process_of_an_agent_reads_end_of_file_not_the_clients_messages(tmp_path: Path) -> None:
    process = _start(tmp_path, "child_reads_stdin")
    _open_session(process)
    _call(process, 1, "publish_Question", {"text": "hi"})
    correlation = _answer(process)["result"]["structuredContent"]["correlation_id"]
    # the next request is on the pipe while the child runs: it must reach the server, not `cat`
    _call(process, 2, "wait_for_results", {"correlation_id": correlation, "timeout": 20})
    _send(process, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    waited = _answer(process)
    assert waited["id"] == 2 and waited["result"]["structuredContent"]["settled"]
    answers = [a for a in waited["result"]["structuredContent"]["artifacts"] if a["type"] == "Answer"]
    assert answers[0]["payload"] == {"text": "rc=0 read=b'' err=b''"}
    assert _answer(process)["id"] == 3
    out, err = _stop(process)
    assert process.returncode == 0, err
    assert out == ""


def test_a_run_finishing_after_the_client_left_prints_to_stderr(tmp_path: Path) -> None:
    process = _start(tmp_path, "prints_late")
    _open_session(process)
    _call(process, 1, "publish_Question", {"text": "hi"})
    assert "result" in _answer(process)
    out, err = _stop(process)  # the run is in flight: it finishes during the stop
    assert process.returncode == 0, err
    assert out == ""
    assert "printed after the client left" in err
    assert "flock mcp stopped: 1 runs, 0 failed" in err


def test_stdin_from_dev_null_ends_the_session_at_once(tmp_path: Path) -> None:
    (tmp_path / "stdio.yaml").write_text(RECIPE % "prints_late")
    (tmp_path / "stdio_lib.py").write_text(LIB)
    with open("/dev/null") as null:
        done = subprocess.run(
            [*FLOCK, "mcp", "stdio.yaml", "--board", ":memory:", "--no-traces"],
            cwd=tmp_path,
            stdin=null,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr and "flock mcp stopped: 0 runs" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_the_moment_the_board_is_opened_stops_the_server_with_its_summary(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # The board file appears before the flock is built and the server takes the signals: a
    # SIGTERM or Ctrl-C then is counted and acted on once it serves, not a silent exit.
    (tmp_path / "stdio.yaml").write_text(RECIPE % "prints_late")
    (tmp_path / "stdio_lib.py").write_text(LIB)
    process = subprocess.Popen(
        [*FLOCK, "mcp", "stdio.yaml", "--board", "b.db", "--no-traces"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,  # left open: only the signal stops it
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "b.db").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == ""  # nothing but protocol messages on stdout
    assert "Traceback" not in err and "flock mcp stopped: 0 runs, 0 failed" in err


def test_a_request_the_sdk_cannot_read_is_answered_not_dropped(tmp_path: Path) -> None:
    # A lone surrogate, or nesting deeper than the SDK's JSON parser allows: the SDK could not
    # read the request, so it had no id to answer and the client waited forever.
    process = _start(tmp_path, "prints_late")
    try:
        _open_session(process)
        assert process.stdin is not None

        def call(id_: Any, text: str) -> str:  # text goes in as written: JSON json.dumps would not make
            request = {"jsonrpc": "2.0", "id": id_, "method": "tools/call"}
            params = {"name": "publish_Question", "arguments": {"text": "TEXT"}}
            return json.dumps({**request, "params": params}).replace('"TEXT"', text) + "\n"

        process.stdin.write(call(7, '"\\ud800"'))
        process.stdin.write(call("deep", "[" * 400 + "]" * 400))
        process.stdin.write(call(9, "[" * 5000 + "]" * 5000))  # too deep for Python's parser too
        # ... its id last, after an "id" of its params: the request's own is answered
        deep = {"jsonrpc": "2.0", "method": "tools/call", "params": {"id": 99, "v": "DEEP"}, "id": 10}
        process.stdin.write(json.dumps(deep).replace('"DEEP"', '{"id": ' * 5000 + "1" + "}" * 5000) + "\n")
        process.stdin.flush()
        first, second = _answer_within(process, 30), _answer_within(process, 30)
        third, fourth = _answer_within(process, 30), _answer_within(process, 30)
        assert first["id"] == 7 and first["error"]["code"] == -32602
        assert (
            "params.arguments.text" in first["error"]["message"] and "surrogate" in first["error"]["message"]
        )
        assert second["id"] == "deep" and "nested more than" in second["error"]["message"]
        assert third["id"] == 9 and third["error"] == {
            "code": -32600,
            "message": "unreadable request: nested too deep to read",
        }
        assert fourth["id"] == 10 and fourth["error"]["code"] == -32600
        _send(process, {"jsonrpc": "2.0", "id": 8, "method": "tools/list"})
        assert "tools" in _answer(process)["result"]  # still serving
    finally:
        _, err = _stop(process)
    assert "Traceback" not in err and "flock mcp stopped: 0 runs" in err
