"""Real ``flock serve`` services for the tests: uvicorn on 127.0.0.1 (a free port), in a thread of
the test process or as a ``flock serve`` subprocess, and token files with known tokens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from flock_cli.service.tokens import hash_token

ROOT = Path(__file__).resolve().parent.parent
FLOCK = [sys.executable, "-m", "flock_cli"]

# Tokens of the tests' token files: name -> (token, entry fields).
TOKENS: dict[str, tuple[str, dict[str, Any]]] = {
    "acme-app": ("tok-acme", {"tenant": "acme", "publish": ["SupportRequest"]}),
    "globex-app": ("tok-globex", {"tenant": "globex", "publish": ["SupportRequest"]}),
    "auditor": ("tok-auditor", {"labels": ["compliance"], "publish": []}),
    "ops": ("tok-ops", {"publish": "*", "operator": True}),
}


def token_file(folder: Path, tokens: dict[str, tuple[str, dict[str, Any]]] = TOKENS) -> Path:
    """A token file holding the hashes of ``tokens``."""
    entries = [
        {"name": name, "sha256": hash_token(secret), **fields} for name, (secret, fields) in tokens.items()
    ]
    path = folder / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    return path


def auth(name: str) -> dict[str, str]:
    """The Authorization header of the test token ``name``."""
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@contextlib.contextmanager
def in_thread(service: Any) -> Iterator[str]:
    """Run ``service`` (a ``BlackboardHTTPService``) in a thread; yields its base URL and stops it
    gracefully afterwards (failing the test if it did not stop or raised)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="flock-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not service.wait_started(0.02):
        if errors or not thread.is_alive():
            raise RuntimeError(f"the service did not start: {errors}")
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not start within 20 s")
    try:
        yield f"http://127.0.0.1:{service.port}"
    finally:
        service.request_stop()
        thread.join(40)
    assert not thread.is_alive(), "the service did not stop within 40 s"
    if errors:
        raise errors[0]


def free_port() -> int:
    """A TCP port nobody listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """A ``flock serve`` subprocess; its standard error is kept in a file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        self._log = self.log.open("w")
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [*FLOCK, "serve", *args, "--port", str(self.port)],
            cwd=cwd,
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until /health/ready answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flock serve exited {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"flock serve not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        """What the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text()

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


_LINES: dict[int, Iterator[str]] = {}


def read_events(response: httpx.Response, until: Any, limit: float = 30) -> list[dict[str, Any]]:
    """Server-sent events from ``response`` (a streaming response) until ``until(events)`` is true;
    call it again on the same response for the events after those."""
    lines = _LINES.get(id(response))
    if lines is None:
        lines = _LINES[id(response)] = response.iter_lines()
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + limit
    for line in lines:
        if time.monotonic() > deadline:
            raise TimeoutError(f"events so far: {[e.get('event') for e in events]}")
        if not line:
            if "data" in current:
                current["data"] = json.loads(current["data"])
                events.append(current)
                if until(events):
                    return events
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    return events
