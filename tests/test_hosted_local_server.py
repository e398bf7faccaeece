"""A hosted-style model for real: llama-cpp-python's OpenAI-compatible server, serving the local
model on 127.0.0.1, reached through LiteLLM (``openai/qwen`` with an ``api_base``): streamed over
server-sent events into the flock, usage counted, and paced by ``requests_per_minute``.

Opt-in (marker ``local_llm``): it needs the ``[local]`` extra and FLOCK_TEST_LOCAL_MODEL=1. The
suite blocks model calls (``FLOCK_BLOCK_MODEL_CALLS=1``); this test reaches only the server it
starts, so it turns the block off for itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flock_cli import DSPyEngine, Flock, Model, RateLimit, RetryPolicy
from flock_cli.tracing.reader import TraceReader
from tests.models import Idea, Tagline

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.skipif(
        os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
    ),
    # LiteLLM's streaming reads a pydantic attribute pydantic deprecates (inside the library)
    pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """llama-cpp-python's server on the embedded model; its base URL. Requests are queued, not
    interrupted by the next one (``--interrupt_requests False``), as a hosted service does."""
    from flock_cli.engines.local import local_model_path

    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(local_model_path()),
               "--model_alias", "qwen", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
               "--interrupt_requests", "False"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "the llama.cpp server exited"
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the llama.cpp server did not start in 2 minutes"
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def test_the_local_server_streams_counts_usage_and_is_paced(
    llama_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FLOCK_BLOCK_MODEL_CALLS")
    monkeypatch.setenv("FLOCK_TEST_LLAMA_KEY", "sk-local")  # the server takes any key
    model = Model(
        "openai/qwen",
        api_base=llama_server,
        api_key_env="FLOCK_TEST_LLAMA_KEY",
        rate_limit=RateLimit(requests_per_minute=60),  # one request a second, over both agents
    )
    path = tmp_path / "traces.duckdb"
    flock = Flock(model, traces=path)
    for name in ("writer", "poet"):
        flock.agent(name).consumes(Idea).publishes(Tagline).with_retry_policy(
            RetryPolicy(max_attempts=1)
        ).with_engines(DSPyEngine(retries=0, max_tokens=80, temperature=0))  # one call a run
    chunks: list[Any] = []
    flock.on_stream(chunks.append)
    async with flock.traced_run("local server"):
        await flock.publish(Idea(topic="dogs"))
        started = time.monotonic()
        summary = await flock.run_until_idle()
        took = time.monotonic() - started
    await flock.shutdown()
    assert summary.agent_runs == 2  # a 0.5B model without a schema grammar may not validate
    by_run: dict[str, list[str]] = {}
    for chunk in chunks:
        by_run.setdefault(chunk.run, []).append(chunk.text)
    assert len(by_run) == 2 and all(len([t for t in texts if t]) > 1 for texts in by_run.values())
    usage = flock.usage.total
    assert usage.calls == 2 and usage.input_tokens > 100 and usage.output_tokens > 0
    reader = TraceReader(path)
    waits = reader.events(reader.runs(limit=1)[0].run_id, ("model.rate_limit_wait",))
    assert waits and {w.attributes["reason"] for w in waits} == {"requests"}  # the second waited its turn
    assert took >= 1.0
