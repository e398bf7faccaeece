"""The garbage-collection policy a process gets when its first flock starts working.

Each case runs in a fresh interpreter: the policy is applied once per process, so the test
process itself (which has run flocks long before) cannot show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json
    from pydantic import BaseModel
    from flock_cli import Flock, FunctionEngine, flock_type

    @flock_type
    class Ping(BaseModel):
        n: int

    @flock_type
    class Pong(BaseModel):
        n: int

    before = gc.get_threshold()
    flock = Flock(traces=False)
    flock.agent("echo").consumes(Ping).publishes(Pong).with_engines(
        FunctionEngine(lambda i: Pong(n=i.artifacts[0].payload["n"]))
    )

    async def main():
        await flock.publish(Ping(n=1))
        return await flock.run_until_idle()

    summary = asyncio.run(main())
    print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                      "runs": summary.agent_runs}))
    """
)


def run_script(gc_env: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOCK_GC"}
    if gc_env is not None:
        env["FLOCK_GC"] = gc_env
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_flock_that_starts_working_freezes_the_start_up_heap_and_raises_the_thresholds() -> None:
    done = run_script(None)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"] == 1
    assert result["before"] == [700, 10, 10]
    assert result["after"] == [50_000, 100, 10]
    assert result["frozen"] > 10_000  # the imported modules and the flock's declarations


def test_flock_gc_default_leaves_pythons_collector_alone() -> None:
    done = run_script("default")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"] == 1
    assert result["after"] == [700, 10, 10]
    assert result["frozen"] == 0


def test_an_unknown_flock_gc_value_is_a_clear_error() -> None:
    done = run_script("sometimes")
    assert done.returncode != 0
    assert "FLOCK_GC must be 'tuned' or 'default', got 'sometimes'" in done.stderr
