"""`flock serve` as users run it: a real subprocess, SIGTERM, and the CLI as its client
(`flock publish --url`, `flock board list --url`, `flock token new`)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app
from tests.serve_helpers import FLOCK, ROOT, ServeProcess, auth, read_events, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

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


def flock(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOCK, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sigterm_drains_the_run_in_flight_and_ends_the_streams(tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW)
    tokens = token_file(tmp_path, {"ops": ("tok-ops", {"publish": "*", "operator": True})})
    server = ServeProcess(["slow.yaml", "--tokens", str(tokens), "--board", "b.db", "--no-traces"], tmp_path)
    try:
        server.wait_ready()
        headers = {"Authorization": "Bearer tok-ops"}
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream("GET", "/v1/events", headers=headers) as stream,
        ):
            assert (
                client.post(
                    "/v1/types/Job/artifacts", json={"payload": {"n": 1}}, headers=headers
                ).status_code
                == 201
            )
            read_events(stream, lambda e: e[-1]["event"] == "run.started")
            server.process.terminate()  # SIGTERM while the 3 s run is going
            rest = read_events(stream, lambda e: e[-1]["event"] == "stream.closed")
        assert rest[-1]["event"] == "stream.closed"
        assert server.process.wait(40) == 0
    finally:
        server.kill()
    output = server.output()
    assert "stopped: 1 runs, 0 failed, 0 dead letters" in output, output
    assert "Traceback" not in output
    listed = flock("board", "list", "--board", "b.db", "--json", cwd=tmp_path)
    assert {a["type"] for a in json.loads(listed.stdout)["artifacts"]} == {"Job", "Done"}  # the run finished


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_the_moment_the_board_is_opened_stops_the_service_with_its_summary(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # The board file appears before the flock is built and the server takes the signals: a
    # SIGTERM (systemd, docker stop) or Ctrl-C then is counted and acted on once the service
    # starts, not a silent exit (130, or killed by the signal with nothing said).
    (tmp_path / "slow.yaml").write_text(SLOW)
    server = ServeProcess(["slow.yaml", "--board", "b.db", "--no-traces"], tmp_path)
    try:
        wait_until(lambda: (tmp_path / "b.db").exists() or server.process.poll() is not None)
        server.process.send_signal(sig)
        assert server.process.wait(40) == 0, server.output()
    finally:
        server.kill()
    output = server.output()
    assert "flock serve stopped: 0 runs, 0 failed, 0 dead letters" in output, output
    assert "Traceback" not in output


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition`` every millisecond (the moment it turns true is what a test aims at)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        time.sleep(0.001)


def test_the_cli_as_a_client_of_the_service(tmp_path: Path) -> None:
    made = flock("token", "new", "acme-app", "--tenant", "acme", "--publish", "SupportRequest", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("flk_") and token not in (tmp_path / "tokens.yaml").read_text()
    assert stat.S_IMODE((tmp_path / "tokens.yaml").stat().st_mode) == 0o600
    recipe = str(ROOT / "recipes" / "multi_tenant.yaml")
    server = ServeProcess(
        [recipe, "--tokens", "tokens.yaml", "--board", "b.db", "--engine", "test"], tmp_path
    )
    try:
        server.wait_ready()
        payload = tmp_path / "request.json"
        payload.write_text(json.dumps({"customer": "acme", "subject": "Data export", "body": "Please."}))
        env = {"FLOCK_TOKEN": token}
        sent = flock(
            "publish", "SupportRequest", str(payload), "--url", server.url, "--json", cwd=tmp_path, env=env
        )
        assert sent.returncode == 0, sent.stderr
        artifact = json.loads(sent.stdout)[0]
        assert artifact["produced_by"] == "acme-app"
        listed = flock(
            "board", "list", "--url", server.url, "--json", "--type", "SupportRequest", cwd=tmp_path, env=env
        )
        assert listed.returncode == 0, listed.stderr
        body = json.loads(listed.stdout)
        assert body["viewer"]["name"] == "acme-app" and [a["id"] for a in body["artifacts"]] == [
            artifact["id"]
        ]

        payload.write_text(json.dumps({"customer": "acme", "subject": "x"}))
        bad = flock("publish", "SupportRequest", str(payload), "--url", server.url, cwd=tmp_path, env=env)
        assert (
            bad.returncode == 2 and "422" in bad.stderr and "subject" in bad.stderr and "body" in bad.stderr
        )
        assert "Traceback" not in bad.stderr
        anonymous = flock("publish", "SupportRequest", str(payload), "--url", server.url, cwd=tmp_path)
        assert anonymous.returncode == 2 and "FLOCK_TOKEN" in anonymous.stderr
        wrong = flock("board", "list", "--url", server.url, cwd=tmp_path, env={"FLOCK_TOKEN": "nope"})
        assert wrong.returncode == 2 and "401" in wrong.stderr
    finally:
        assert server.terminate() == 0
    down = flock("board", "list", "--url", server.url, cwd=tmp_path, env={"FLOCK_TOKEN": token})
    assert down.returncode == 2 and "cannot reach the service" in down.stderr


def test_refusals_are_one_line_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "broken.yaml").write_text("tokens:\n  - name: [x\n")
    token = runner.invoke(app, ["token", "new", "z", "-f", str(tmp_path / "broken.yaml")])
    assert token.exit_code == 2 and "broken.yaml:3:1: not valid YAML" in token.output
    assert runner.invoke(app, ["token", "new", "z", "-f", str(tmp_path / "t.yaml")]).exit_code == 0
    again = runner.invoke(app, ["token", "new", "z", "-f", str(tmp_path / "t.yaml")])
    assert again.exit_code == 2 and "has a token named 'z' already" in again.output
    bad_name = runner.invoke(app, ["token", "new", "bad name!", "-f", str(tmp_path / "t.yaml")])
    assert (
        bad_name.exit_code == 2 and "token 'bad name!': name: a name starts with a letter" in bad_name.output
    )
    recipe = str(ROOT / "recipes" / "multi_tenant.yaml")
    exposed = runner.invoke(
        app, ["serve", recipe, "--host", "0.0.0.0", "--engine", "test", "--board", str(tmp_path / "b.db")]
    )
    assert exposed.exit_code == 2 and "refusing to serve on 0.0.0.0 without tokens" in exposed.output
    broken = tmp_path / "tokens.yaml"
    broken.write_text("tokens:\n  - name: acme\n    sha256: abc\n")
    result = runner.invoke(app, ["serve", recipe, "--tokens", str(broken), "--board", str(tmp_path / "b.db")])
    assert result.exit_code == 2
    assert f"{broken}:2:5: tokens[0]: sha256:" in result.output and "Traceback" not in result.output
    agent_named = token_file(tmp_path, {"acme_support": ("t", {})})
    result = runner.invoke(
        app, ["serve", recipe, "--tokens", str(agent_named), "--board", str(tmp_path / "b.db")]
    )
    assert result.exit_code == 2 and "has the name of an agent" in result.output


def test_client_mistakes_and_strange_servers_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()

    def flock_cli(*args: str) -> Any:
        done = runner.invoke(app, list(args))
        assert isinstance(done.exception, SystemExit), done.exception  # no traceback
        return done

    for where in (tmp_path, tmp_path / "missing" / "t.yaml"):  # a folder; a file in no folder
        token = flock_cli("token", "new", "z", "-f", str(where))
        assert token.exit_code == 2 and str(where) in token.output and len(token.output.splitlines()) == 1
    (tmp_path / "nan.json").write_text('{"x": NaN}')
    nan = flock_cli(
        "publish", "Num", str(tmp_path / "nan.json"), "--url", "http://127.0.0.1:9", "--token", "t"
    )
    assert nan.exit_code == 2 and "Invalid payload for type 'Num': x: NaN and infinity" in nan.output
    (tmp_path / "ok.json").write_text('{"x": 1}')
    for args in (["board", "list"], ["publish", "Num", str(tmp_path / "ok.json")]):
        bad_url = flock_cli(*args, "--url", "http://[::1", "--token", "t")
        assert bad_url.exit_code == 2 and "is not a valid URL" in bad_url.output
    # A server that is not flock serve: HTML errors, JSON of another shape, no JSON at all.
    answers = {"/v1/whoami": (200, "application/json", b'{"hello": "world"}'),
               "/v1/types/Num/artifacts": (200, "text/plain", b"fine, thanks")}  # fmt: skip

    class NotTheService(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, kind, body = answers.get(self.path, (404, "text/html", b"<html>\n<h1>Nope</h1>\n</html>"))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = answer

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotTheService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        listed = flock_cli("board", "list", "--url", url, "--token", "t")
        assert listed.exit_code == 1 and f"GET {url}/v1/whoami: unexpected answer" in listed.output
        secret = url.replace("http://", "http://me:s3cret@")  # a password in the URL is never shown
        listed = flock_cli("board", "list", "--url", secret, "--token", "t")
        assert "s3cret" not in listed.output and "http://me:***@" in listed.output, listed.output
        published = flock_cli("publish", "Num", str(tmp_path / "ok.json"), "--url", url, "--token", "t")
        assert published.exit_code == 1 and "the answer is not JSON" in published.output
        answers.pop("/v1/whoami")
        html = flock_cli("board", "list", "--url", url, "--token", "t")
        assert html.exit_code == 2 and "404 <html> <h1>Nope</h1> </html>" in html.output
    finally:
        server.shutdown()
        server.server_close()


def test_api_only_replica_and_orchestrator_share_a_sqlite_board(tmp_path: Path) -> None:
    """An API-only `flock serve --no-orchestrator` publishes; a `flock run --watch` on the same
    board runs the agents; the replica's event stream shows what the orchestrator published."""
    tokens = token_file(tmp_path)
    recipe = str(ROOT / "recipes" / "multi_tenant.yaml")
    api = ServeProcess([recipe, "--tokens", str(tokens), "--board", "b.db", "--no-orchestrator"], tmp_path)
    worker_log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [*FLOCK, "run", recipe, "--board", "b.db", "--watch", "--engine", "test", "--quiet", "--no-traces"],
        cwd=tmp_path,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        api.wait_ready()
        events: list[dict[str, Any]] = []
        with (
            httpx.Client(base_url=api.url, timeout=30) as client,
            client.stream("GET", "/v1/events", headers=auth("acme-app")) as stream,
        ):
            body = {"payload": {"customer": "acme", "subject": "Export", "body": "Please."}}
            timer = threading.Timer(
                0.5,
                lambda: client.post(
                    "/v1/types/SupportRequest/artifacts", json=body, headers=auth("acme-app")
                ),
            )
            timer.start()
            events = read_events(
                stream,
                lambda e: any(x["data"].get("artifact", {}).get("type") == "Case" for x in e),
                limit=60,
            )
            timer.join()
        case = next(e for e in events if e["data"].get("artifact", {}).get("type") == "Case")
        assert case["data"]["artifact"]["produced_by"] == "acme_support"
    finally:
        worker.terminate()
        worker.wait(30)
        worker_log.close()
        assert api.terminate() == 0


def test_recipe_settings_configure_the_service(tmp_path: Path) -> None:
    """settings.serve: the port, the token file (relative to the recipe), the limits; and
    tokens_env, a variable holding the token file's text."""
    from tests.serve_helpers import TOKENS, free_port

    port = free_port()
    folder = tmp_path / "flows"
    folder.mkdir()
    token_file(folder, {"ops": TOKENS["ops"]})  # flows/tokens.json, beside the recipe
    serve = (
        f"  serve: {{port: {port}, tokens: tokens.json, max_body_bytes: 2048,"
        " rate_limit: {requests_per_second: 0.5, burst: 2}, max_pending: 5, shutdown_timeout: 5s}\n"
    )
    (folder / "slow.yaml").write_text(SLOW.replace("agents:\n", f"settings:\n{serve}agents:\n"))
    process = subprocess.Popen(
        [*FLOCK, "serve", "flows/slow.yaml", "--board", "b.db", "--no-traces"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        ops = {"Authorization": f"Bearer {TOKENS['ops'][0]}"}
        big = {"payload": {"n": 1}, "tags": ["x" * 100] * 30}
        assert httpx.post(f"{url}/v1/types/Job/artifacts", json=big, headers=ops).status_code == 413
        statuses = [httpx.get(f"{url}/v1/whoami", headers=ops).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    finally:
        process.terminate()
        assert process.wait(30) == 0

    text = (folder / "tokens.json").read_text()
    (folder / "slow.yaml").write_text(
        SLOW.replace("agents:\n", f"settings:\n  serve: {{port: {port}, tokens_env: MY_TOKENS}}\nagents:\n")
    )
    missing = flock("serve", "flows/slow.yaml", "--board", "b.db", cwd=tmp_path)
    assert missing.returncode == 2 and "$MY_TOKENS" in missing.stderr
    server = subprocess.Popen(
        [*FLOCK, "serve", "flows/slow.yaml", "--board", "b.db", "--no-traces"],
        cwd=tmp_path,
        env={**os.environ, "MY_TOKENS": text},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/whoami", headers=ops, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "tokens: 1 from $MY_TOKENS" in err
